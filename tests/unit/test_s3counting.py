"""The benchmarks' S3 request counter (tests/perf/s3counting.py), without a broker or server."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from werkzeug.test import Client

from tests.perf.s3counting import COUNTS_PATH, CountingMiddleware, request_kind


def _ok(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def test_request_kinds() -> None:
    def kind(method: str, path: str, query: str = "") -> str:
        return request_kind({"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query})

    assert kind("PUT", "/bucket/jobs/a/record.json") == "PUT object"
    assert kind("HEAD", "/bucket/x") == "HEAD object"
    assert kind("PUT", "/bucket") == "PUT bucket"
    assert kind("GET", "/bucket/", "list-type=2&prefix=jobs/&max-keys=10") == "GET bucket?list-type"
    assert kind("POST", "/bucket/big", "uploads") == "POST object?uploads"
    assert kind("PUT", "/bucket/big", "partNumber=1&uploadId=u") == "PUT object?partNumber,uploadId"


def test_counts_requests_and_answers_them() -> None:
    client = Client(CountingMiddleware(_ok))
    assert client.put("/b/k1").status_code == 200
    client.put("/b/k2")
    client.get("/b/k1")
    client.get("/b", query_string="list-type=2&prefix=p")
    response = client.get(COUNTS_PATH)
    assert response.status_code == 200
    counts = json.loads(response.get_data())
    assert counts == {"PUT object": 2, "GET object": 1, "GET bucket?list-type": 1}
    # Reading the counts is not counted.
    assert json.loads(client.get(COUNTS_PATH).get_data()) == counts
