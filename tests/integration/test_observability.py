"""Operations on the real broker and S3 server: metrics, traces, logs, OpenAPI and docs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from handlers import ops
from handlers.http.routes import ROUTES
from shared.api.models import ErrorBody, JobView
from shared.api.openapi import app_routes, route_key
from shared.obs.logs import job_context, make_handler, settings_secrets
from shared.obs.tracing import trace_id_of
from shared.settings import Settings
from shared.webhooks.signing import generate_secret
from tests.conftest import Stack, _free_port, running_stack, wait_for_output
from tests.factories import make_pdf
from tests.helpers import upload, wait_done

pytestmark = pytest.mark.integration

PDFRELAY = str(Path(sys.executable).with_name("pdfrelay"))
TOKEN = "tok-" + secrets.token_urlsafe(18)
API_KEY = "key-" + secrets.token_urlsafe(18)
AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def drain(stack: Stack) -> None:
    """Stop the stack's consumers and let in-flight messages finish (burst mode): every counter
    of the jobs so far is final afterwards."""
    stack.stop.set()
    await asyncio.gather(*stack.tasks)
    stack.tasks.clear()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Exposition text → {(sample name, labels): value}."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


# --- metrics -----------------------------------------------------------------------------------


async def test_metrics_after_jobs(stack: Stack) -> None:
    ns = stack.ctx.settings.namespace
    good = await upload(stack, make_pdf(["one", "two", "three"]))
    bad = await upload(stack, b"%PDF-1.4\n" + b"this is no pdf at all " * 64)
    assert (await wait_done(stack, good["job_id"]))["status"] == "completed"
    failed = await wait_done(stack, bad["job_id"])
    assert failed["status"] == "failed"
    await drain(stack)

    resp = await stack.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    found = samples(await resp.text())

    assert value(found, "pdfrelay_jobs_total", state="accepted", door="http") == 2
    assert value(found, "pdfrelay_jobs_total", state="completed", door="http") == 1
    assert value(found, "pdfrelay_jobs_total", state="failed", door="http") == 1
    assert value(found, "pdfrelay_job_failures_total", code=failed["error"]["code"]) == 1
    assert value(found, "pdfrelay_extraction_seconds_count") == 2
    assert value(found, "pdfrelay_extraction_seconds_sum") > 0
    assert value(found, "pdfrelay_job_pages_count") == 1
    assert value(found, "pdfrelay_job_pages_sum") == 3
    assert value(found, "pdfrelay_job_pages_bucket", le="5.0") == 1
    assert value(found, "pdfrelay_messages_total", queue=f"{ns}.extract", outcome="ack") == 2
    assert value(found, "pdfrelay_worker_processes_started_total") == 2
    assert ("pdfrelay_worker_restarts_total", frozenset()) in found
    assert value(found, "pdfrelay_worker_restarts_total") == 0
    assert ("pdfrelay_cache_hits_total", frozenset()) in found
    # Queue depths, read passively on scrape: every queue of the topology, drained now.
    for queue in (f"{ns}.extract", f"{ns}.webhooks", f"{ns}.webhooks.dead", f"{ns}.extract.dead"):
        assert (("pdfrelay_queue_messages", frozenset({("queue", queue)}))) in found, queue
        assert value(found, "pdfrelay_queue_messages", queue=queue) == 0
    assert value(found, "process_resident_memory_bytes") > 0

    # Counters the instrumented code increments on its own paths, visible by name right away.
    stack.ctx.metrics.cache_hits.inc()
    stack.ctx.metrics.webhook_attempts.labels(event="job.completed", outcome="retry").inc()
    stack.ctx.metrics.dead_letters.labels(queue=f"{ns}.webhooks").inc()
    found = samples(await (await stack.client.get("/metrics")).text())
    assert value(found, "pdfrelay_cache_hits_total") == 1
    assert (
        value(found, "pdfrelay_webhook_attempts_total", event="job.completed", outcome="retry") == 1
    )
    assert value(found, "pdfrelay_dead_letters_total", queue=f"{ns}.webhooks") == 1


async def test_queue_depth_counts_waiting_messages(make_settings: Any) -> None:
    async with running_stack(make_settings(), extract_running=False) as stack:
        for _ in range(3):
            await upload(stack, make_pdf(["waiting"]))
        found = samples(await (await stack.client.get("/metrics")).text())
        extract = f"{stack.ctx.settings.namespace}.extract"
        assert value(found, "pdfrelay_queue_messages", queue=extract) == 3
        assert value(found, "pdfrelay_queue_consumers", queue=extract) == 0


async def test_two_stacks_in_one_process_count_apart(make_settings: Any) -> None:
    def own() -> Settings:
        name = uuid.uuid4().hex[:10]
        settings: Settings = make_settings(namespace=f"t{name}", s3_bucket=f"t-{name}")
        return settings

    async with (
        running_stack(own(), extract_running=False) as one,
        running_stack(own(), extract_running=False) as two,
    ):
        await upload(one, make_pdf(["only in one"]))
        first = samples(await (await one.client.get("/metrics")).text())
        second = samples(await (await two.client.get("/metrics")).text())
        assert value(first, "pdfrelay_jobs_total", state="accepted", door="http") == 1
        assert value(second, "pdfrelay_jobs_total", state="accepted", door="http") == 0


async def test_ops_app_serves_metrics_and_probes(stack: Stack) -> None:
    async with TestClient(TestServer(ops.create_app(stack.ctx))) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        found = samples(await resp.text())
        assert (
            "pdfrelay_queue_messages",
            frozenset({("queue", f"{stack.ctx.settings.namespace}.extract")}),
        ) in found
        assert (await client.get("/healthz")).status == 200
        ready = await client.get("/readyz")
        assert ready.status == 200
        assert (await ready.json())["checks"] == {"storage": "ok", "broker": "ok"}


@contextmanager
def run_handler(name: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([PDFRELAY, "run", name], env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


async def test_run_handler_serves_metrics_port_and_logs_json(
    amqp_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDFRELAY_")} | {
        "PDFRELAY_AMQP_URL": amqp_url,
        "PDFRELAY_S3_ENDPOINT": s3_endpoint,
        "PDFRELAY_S3_BUCKET": f"t-{uuid.uuid4().hex[:10]}",
        "PDFRELAY_NAMESPACE": f"ops{uuid.uuid4().hex[:8]}",
        "PDFRELAY_METRICS_PORT": str(port),
        "PDFRELAY_API_KEYS": f"acme:{API_KEY}",
    }
    log = tmp_path / "object-drop.log"
    with run_handler("object-drop", env, log) as proc:
        output = wait_for_output(log, proc, "metrics and health on")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 200
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                found = samples(await resp.text())
        queue = f"{env['PDFRELAY_NAMESPACE']}.object-drop"
        assert value(found, "pdfrelay_queue_consumers", queue=queue) == 1
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines
    for line in lines:
        entry = json.loads(line)  # `pdfrelay run` logs JSON lines
        assert {"ts", "level", "logger", "message"} <= entry.keys()
    text = log.read_text()
    for secret in ("pdfrelay-secret", API_KEY):  # the S3 secret key and an API key
        assert secret not in text


# --- tracing -----------------------------------------------------------------------------------


@dataclass
class Receiver:
    calls: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), json.loads(await request.read())))
        async with self.arrived:
            self.arrived.notify_all()
        return web.Response(status=204)

    async def wait_for(self, job_id: str, within: float = 60) -> dict[str, str]:
        async with asyncio.timeout(within), self.arrived:
            while True:
                for headers, body in self.calls:
                    if body["data"]["job_id"] == job_id and body["type"] != "job.progress":
                        return headers
                await self.arrived.wait()


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        rec.url = str(server.make_url("/hook"))
        yield rec


def hook_settings(make_settings: Any, **overrides: Any) -> Settings:
    settings: Settings = make_settings(
        webhook_allowed_networks="127.0.0.0/8",
        webhook_secret=generate_secret(),
        **overrides,
    )
    return settings


async def test_traceparent_travels_from_upload_to_webhook(make_settings: Any) -> None:
    trace_id = secrets.token_hex(16)
    client_span = secrets.token_hex(8)
    traceparent = f"00-{trace_id}-{client_span}-01"
    async with running_stack(hook_settings(make_settings)) as stack, receiver() as rec:
        stack.start_webhooks()
        # The events of the job on the broker carry the trace in their AMQP headers.
        channel = await stack.ctx.connection.channel()
        events = await channel.declare_queue(exclusive=True)
        await events.bind(stack.ctx.topology.events, routing_key="job.*")

        traced = await upload(
            stack, make_pdf(["traced"]), {"traceparent": traceparent}, webhook_url=rec.url
        )
        untraced = await upload(stack, make_pdf(["untraced"]), webhook_url=rec.url)

        headers = await rec.wait_for(traced["job_id"])
        assert trace_id_of(headers["traceparent"]) == trace_id
        span_id = headers["traceparent"].split("-")[2]
        assert span_id != client_span  # the same trace, a span of our own

        record = await stack.ctx.jobs.get(traced["job_id"], "default")
        assert trace_id_of(record.traceparent) == trace_id

        async with asyncio.timeout(30):
            async for message in events.iterator():
                async with message.process():
                    if (message.headers or {}).get("job_id") == traced["job_id"]:
                        assert trace_id_of(str(message.headers["traceparent"])) == trace_id
                        break

        # Without one, the ingress starts a trace, and it reaches the webhook all the same.
        other = await rec.wait_for(untraced["job_id"])
        started = (await stack.ctx.jobs.get(untraced["job_id"], "default")).traceparent
        assert trace_id_of(started) is not None
        assert trace_id_of(other["traceparent"]) == trace_id_of(started) != trace_id
        await channel.close()


# --- logs --------------------------------------------------------------------------------------


@contextmanager
def json_logs(settings: Settings) -> Iterator[io.StringIO]:
    """What `pdfrelay run` writes: the JSON handler on the root logger, secrets registered."""
    stream = io.StringIO()
    handler = make_handler("json", settings_secrets(settings), stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_logs_are_json_with_the_job_id_and_no_secrets(make_settings: Any) -> None:
    settings = hook_settings(make_settings, api_keys=f"acme:{API_KEY}")
    secret = settings.webhook_secrets()[0]
    other_secret = generate_secret()  # not this process's: masked by its look
    async with running_stack(settings) as stack, receiver() as rec:
        stack.start_webhooks()
        with json_logs(settings) as stream:
            job = await upload(
                stack, make_pdf(["logged"]), AUTH, webhook_url=rec.url, webhook_token=TOKEN
            )
            await rec.wait_for(job["job_id"])
            await drain(stack)
            # What a careless line would leak, masked all the same.
            logging.getLogger("pdfrelay.test").warning(
                "calling %s with Authorization: Bearer %s, X-Callback-Token: %s, secrets %s "
                "and %s, amqp://pdfrelay:hunter2hunter2@broker/",
                rec.url,
                TOKEN,
                TOKEN,
                secret,
                other_secret,
            )
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    about_job = [e for e in lines if e.get("job_id") == job["job_id"]]
    messages = " | ".join(e["message"] for e in about_job)
    assert "accepted" in messages
    assert "completed" in messages
    assert any(e["logger"] == "handlers.webhooks" for e in about_job), messages
    # Lines logged while working on the job carry its trace too.
    assert all(re.fullmatch(r"[0-9a-f]{32}", e["trace_id"]) for e in about_job if "trace_id" in e)
    text = stream.getvalue()
    for leaked in (TOKEN, secret, other_secret, API_KEY, "hunter2hunter2"):
        assert leaked not in text
    assert "whsec_***" in text
    assert "amqp://pdfrelay:***@broker/" in text


def test_text_logs_name_the_job_and_mask_secrets() -> None:
    stream = io.StringIO()
    handler = make_handler("text", ["s3cr3t-value"], stream)
    logger = logging.getLogger("pdfrelay.test.text")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with job_context("0" * 32):
            try:
                raise RuntimeError("boom with s3cr3t-value and whsec_abc+/=")
            except RuntimeError:
                logger.exception("failed at %s", "https://h/cb?token=abc123&x=1")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = stream.getvalue()
    assert f"[job {'0' * 32}]" in text
    assert "s3cr3t-value" not in text
    assert "whsec_abc" not in text
    assert "abc123" not in text
    assert "token=***&x=1" in text
    assert "RuntimeError" in text


def test_json_log_fields_are_masked_too() -> None:
    stream = io.StringIO()
    handler = make_handler("json", ["s3cr3t-value"], stream)
    logger = logging.getLogger("pdfrelay.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "delivery to %s", "https://u:pw@h/x", extra={"note": "key s3cr3t-value", "n": 3}
        )
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    entry = json.loads(stream.getvalue())
    assert entry["message"] == "delivery to https://u:***@h/x"
    assert entry["note"] == "key ***"
    assert entry["n"] == 3
    assert "job_id" not in entry


# --- OpenAPI and docs --------------------------------------------------------------------------


def _spec_routes(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {route_key(method, path) for path, item in spec["paths"].items() for method in item}


def _validator(spec: dict[str, Any], name: str) -> OAS31Validator:
    return OAS31Validator(
        {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    )


async def test_openapi_validates_and_covers_every_route(stack: Stack) -> None:
    resp = await stack.client.get("/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    validate(spec)
    assert spec["openapi"].startswith("3.1")

    app = stack.client.app
    assert app is not None
    # Every served route is in the document, and nothing else (entries the route table marks
    # `in_api=False` are served but not part of the API).
    excluded = {route_key(r.operation.method, r.operation.path) for r in ROUTES if not r.in_api}
    served = set(app_routes(app.router)) - excluded
    documented = _spec_routes(spec)
    assert served - documented == set(), "served routes missing from the document"
    assert documented - served == set(), "documented routes the app does not serve"
    for key in [
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs/{}"),
        ("post", "/v1/jobs/{}/webhook/redeliver"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/docs"),
    ]:
        assert key in documented
    assert {k for k in served if k[1].startswith("/api/")} <= documented
    # The operations port's routes are documented too.
    assert set(app_routes(ops.create_app(stack.ctx).router)) <= documented


async def test_answers_match_the_documented_models(stack: Stack) -> None:
    spec = await (await stack.client.get("/openapi.json")).json()
    job_view = _validator(spec, "JobView")

    accepted = await upload(stack, make_pdf(["shape"]), client_ref="r")
    done = await wait_done(stack, accepted["job_id"])
    for body in (accepted, done):
        job_view.validate(body)
        JobView.model_validate(body)
        # No field in the answer that the model (and so the document) does not know.
        known = {f.alias or name for name, f in JobView.model_fields.items()}
        assert set(body) <= known, set(body) - known

    result = await (await stack.client.get(f"/v1/jobs/{accepted['job_id']}/result")).json()
    _validator(spec, "ExtractionResult").validate(result)

    missing = await stack.client.get(f"/v1/jobs/{'0' * 32}")
    assert missing.status == 404
    error = await missing.json()
    _validator(spec, "ErrorBody").validate(error)
    ErrorBody.model_validate(error)

    ready = await (await stack.client.get("/readyz")).json()
    _validator(spec, "Readiness").validate(ready)


async def test_docs_page_is_served_with_local_assets(stack: Stack) -> None:
    resp = await stack.client.get("/docs")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    html = await resp.text()
    assert "<script>" not in html  # no inline script: the CSP allows only our own files
    links = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert links
    for link in links:
        assert link.startswith("/docs/assets/"), link  # nothing from a CDN
        asset = await stack.client.get(link)
        assert asset.status == 200, link
        assert len(await asset.read()) > 0
    init = await (await stack.client.get("/docs/assets/init.js")).text()
    assert '"/openapi.json"' in init
    assert "validatorUrl: null" in init  # no badge fetched from validator.swagger.io
    assert "http" not in init
    bundle = await stack.client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["Content-Type"].endswith("javascript")
    assert (await stack.client.get("/docs/assets/../../etc/passwd")).status == 404
    assert (await stack.client.get("/docs/assets/index.html")).status == 404


async def test_amqp_headers_of_a_task_carry_the_trace(stack: Stack) -> None:
    """The extract task itself (not only the events) carries `traceparent` in its headers."""
    await drain(stack)  # nothing consumes: the task stays in the queue for us to look at
    trace_id = secrets.token_hex(16)
    accepted = await upload(
        stack, make_pdf(["task"]), {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    )
    channel = await stack.ctx.connection.channel()
    try:
        queue = await channel.get_queue(stack.ctx.topology.extract, ensure=False)
        message = await queue.get(timeout=10, fail=True)
        assert message is not None
        assert message.message_id == accepted["job_id"]
        assert trace_id_of(str((message.headers or {})["traceparent"])) == trace_id
        await message.nack(requeue=True)
    finally:
        await channel.close()
