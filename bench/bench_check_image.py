"""The upload's type check: Pillow's ``Image.open(fp, formats=...)`` against the magic-byte
sniffing it replaced (serving/uploads.py until 2026-12-05), side by side in one run.

Both read the header only. For each input, the two run alternately (200 calls a round,
7 rounds, median), and must answer the same status. Results: bench/results/check_image.json.

Usage: python bench/bench_check_image.py
"""

from __future__ import annotations

import io
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from fastapi import HTTPException
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from serving.settings import Settings  # noqa: E402
from serving.uploads import check_image  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "check_image.json"
SETTINGS = Settings(max_image_pixels=25_000_000)


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def sniffed(data: bytes, settings: Settings) -> bytes:
    """The check as it was: magic bytes, then Image.open for the size."""
    if not data:
        raise HTTPException(422, "the image is empty")
    if _sniff(data) is None:
        raise HTTPException(415, "unsupported image type")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise HTTPException(413, "image too large") from None
    except Exception:
        raise HTTPException(422, "corrupt image") from None
    if width * height > settings.max_image_pixels:
        raise HTTPException(413, "pixels")
    return data


def _status(check, data: bytes) -> int:
    try:
        check(data, SETTINGS)
    except HTTPException as exc:
        return exc.status_code
    return 200


def _encoded(rng: np.random.Generator, fmt: str, side: int, **options) -> bytes:
    out = io.BytesIO()
    pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out, fmt, **options)
    return out.getvalue()


def main() -> int:
    rng = np.random.default_rng(0)
    inputs = {
        "jpeg_8MB": _encoded(rng, "JPEG", 2600, quality=95),
        "png_10MB": _encoded(rng, "PNG", 1850),
        "jpeg_56KB": _encoded(rng, "JPEG", 300),
        "webp_63KB": _encoded(rng, "WEBP", 300),
        "gif_10MB_refused": b"GIF89a" + bytes(10_000_000),
        "random_10MB_refused": rng.integers(0, 255, 10_000_000, dtype=np.uint8).tobytes(),
    }
    results = {}
    for name, data in inputs.items():
        status = _status(check_image, data)
        assert status == _status(sniffed, data), name
        times: dict[str, list[float]] = {"sniffed_us": [], "pillow_us": []}
        for _ in range(7):
            for key, check in (("sniffed_us", sniffed), ("pillow_us", check_image)):
                start = time.perf_counter()
                for _ in range(200):
                    _status(check, data)
                times[key].append((time.perf_counter() - start) / 200 * 1e6)
        results[name] = {
            "bytes": len(data),
            "status": status,
            **{key: round(statistics.median(values), 1) for key, values in times.items()},
        }
        print(name, results[name])
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
        platform.processor(),
    )
    load = Path("/proc/loadavg").read_text().split()[:3]
    RESULTS.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "cpu": cpu,
                "load_average": load,
                "note": "shared machine; medians of 7 alternating rounds of 200 calls",
                "pillow": Image.__version__,
                "command": "python bench/bench_check_image.py",
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
