"""The S3 server's request counter (infra/s3server.py `--count`), without a broker or server."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from werkzeug.test import Client

from infra.s3server import COUNTS_PATH, CountingApp, request_kind


def _ok(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def test_request_kinds() -> None:
    assert request_kind("PUT", "/bucket/jobs/a/record.json", "") == "PUT object"
    assert request_kind("HEAD", "/bucket/x", "") == "HEAD object"
    assert request_kind("PUT", "/bucket", "") == "PUT bucket"
    listing = request_kind("GET", "/bucket/", "list-type=2&prefix=jobs/&max-keys=10")
    assert listing == "GET bucket?list-type"
    assert request_kind("POST", "/bucket/big", "uploads") == "POST object?uploads"
    parts = request_kind("PUT", "/bucket/big", "partNumber=1&uploadId=u")
    assert parts == "PUT object?partNumber,uploadId"


def test_counts_requests_and_answers_them() -> None:
    client = Client(CountingApp(_ok))
    assert client.put("/b/k1").status_code == 200
    client.put("/b/k2")
    client.get("/b/k1")
    client.get("/b", query_string="list-type=2&prefix=p")
    response = client.get(COUNTS_PATH)
    assert response.status_code == 200
    counts = json.loads(response.get_data())
    assert counts["total"] == 4
    assert counts["by_kind"] == {"PUT object": 2, "GET object": 1, "GET bucket?list-type": 1}
    assert counts["requests"][0] == "PUT /b/k1"
    # Reading the counts is not counted; DELETE sets them back to zero.
    assert json.loads(client.get(COUNTS_PATH).get_data()) == counts
    assert json.loads(client.delete(COUNTS_PATH).get_data())["total"] == 0
