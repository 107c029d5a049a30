"""``marketplace serve`` (or ``python -m serving``): uvicorn on 127.0.0.1:8000 (``--port``...)."""

from __future__ import annotations

import argparse

import uvicorn

from serving.observability import log_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the production marketplace model.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=log_config(args.log_level),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
