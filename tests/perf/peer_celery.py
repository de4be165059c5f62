"""The peer of pdfrelay a Python user would build (issue 20 "Measure"), for bench_peer.py.

- `python -m tests.perf.peer_celery ingress`: a small aiohttp app. `POST /jobs` (multipart field
  `file`, optional `webhook_url`) stores the upload in S3 (`uploads/<id>.pdf`, boto3 in a
  thread), enqueues the Celery task with publisher confirms, and answers `202 {"job_id": …}`.
- `python -m tests.perf.peer_celery worker`: a Celery 5 worker, prefork, `--concurrency 2`,
  `acks_late`, prefetch 1, no result backend. The task downloads the PDF from S3, runs
  `page.get_text()` on every page (as the bare loop), stores the text as
  `results/<id>.<pages>.txt` and, when asked, POSTs a small JSON webhook.

Completion is detected by the benchmark polling `ListObjectsV2(prefix="results/")` on the peer's
S3 server every `POLL_S` (one request per poll for all jobs, the page count in the key): cheap
and with no result backend to pay for; a done job is seen at most `POLL_S` late.

Configuration by environment (set by the benchmark): PEER_AMQP_URL, PEER_S3_ENDPOINT,
PEER_BUCKET, PEER_PORT.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request
import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any

import boto3  # type: ignore[import-untyped]
from aiohttp import BodyPartReader, web
from celery import Celery  # type: ignore[import-untyped]

POLL_S = 0.1
QUEUE = "celery"

_s3: Any = None


def s3_client() -> Any:
    """One boto3 client per process (created on first use, after a fork)."""
    global _s3
    if _s3 is None:
        _s3 = boto3.client(
            "s3",
            endpoint_url=os.environ["PEER_S3_ENDPOINT"],
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            region_name="us-east-1",
        )
    return _s3


def make_app() -> Celery:
    app = Celery("peer", broker=os.environ["PEER_AMQP_URL"].replace("amqp://", "pyamqp://", 1))
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


app = make_app() if "PEER_AMQP_URL" in os.environ else Celery("peer")


@app.task(name="peer.extract_text")  # type: ignore[untyped-decorator]
def extract_text(job_id: str, key: str, webhook_url: str | None = None) -> None:
    import pymupdf

    bucket = os.environ["PEER_BUCKET"]
    data = s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    with pymupdf.open(stream=data, filetype="pdf") as doc:
        text = "".join(page.get_text() for page in doc)
        pages = doc.page_count
    s3_client().put_object(
        Bucket=bucket, Key=f"results/{job_id}.{pages}.txt", Body=text.encode("utf-8")
    )
    if webhook_url:
        body = json.dumps({"job_id": job_id, "status": "completed", "pages": pages}).encode()
        request = urllib.request.Request(
            webhook_url, body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()


async def _submit(request: web.Request) -> web.Response:
    job_id = uuid.uuid4().hex
    data = b""
    webhook_url: str | None = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "file":
            data = bytes(await part.read())
        elif part.name == "webhook_url":
            webhook_url = await part.text()
    if not data.startswith(b"%PDF-"):
        return web.json_response({"error": "not a PDF"}, status=400)
    key = f"uploads/{job_id}.pdf"
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(
        None,
        partial(s3_client().put_object, Bucket=os.environ["PEER_BUCKET"], Key=key, Body=data),
    )
    await loop.run_in_executor(None, partial(extract_text.delay, job_id, key, webhook_url))
    return web.json_response({"job_id": job_id}, status=202)


async def _ready(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def run_ingress() -> None:
    s3_client().create_bucket(Bucket=os.environ["PEER_BUCKET"])
    web_app = web.Application(client_max_size=64 * 1024 * 1024)
    web_app.add_routes([web.post("/jobs", _submit), web.get("/readyz", _ready)])
    web.run_app(web_app, host="127.0.0.1", port=int(os.environ["PEER_PORT"]), print=None)


def run_worker() -> None:
    app.worker_main(["worker", "--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING"])


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["ingress"]:
        run_ingress()
    elif args == ["worker"]:
        run_worker()
    else:
        raise SystemExit("usage: python -m tests.perf.peer_celery ingress|worker")


if __name__ == "__main__":
    main()
