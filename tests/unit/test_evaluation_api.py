"""Scoring through a running API logs failures only (no line per request)."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from marketplace.mlops.evaluation import Query, api_predictor


class _Predict(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        body = json.dumps({"query": "text", "top_k": [{"category": "b", "probability": 1.0}]})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def test_api_scoring_does_not_log_each_request(caplog: pytest.LogCaptureFixture) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Predict)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        predict = api_predictor(f"http://127.0.0.1:{server.server_port}", ["a", "b"])
        queries = [Query(f"p{i}", "text", "b", None, "sofa", 10.0) for i in range(5)]
        with caplog.at_level(logging.INFO):
            scores = predict(queries)
    finally:
        server.shutdown()
        server.server_close()
    assert scores[:, 1].tolist() == [1.0] * 5
    # Only this thread's records: Ray Data leaves a usage thread behind after an earlier
    # Ray test in the same process, and it logs failed Prometheus queries at DEBUG.
    mine = [r for r in caplog.records if r.thread == threading.get_ident()]
    assert not [r.getMessage() for r in mine if r.levelno < logging.WARNING]
