"""Scenario 8: keys, tenants, secrets, oversized uploads and key injection (`pdfrelay dev`)."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from handlers import ingress
from shared.webhooks.signing import generate_secret
from tests.reliability.harness import Service, document, open_service
from tests.reliability.ledger import Ledger

pytestmark = pytest.mark.integration

KEY_A = "ka_" + secrets.token_urlsafe(24)
KEY_B = "kb_" + secrets.token_urlsafe(24)
TOKEN = "tok_" + secrets.token_urlsafe(24)
S3_SECRET = "s3_" + secrets.token_urlsafe(24)
SECRET = generate_secret()
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
JSON_A = {**A, "Content-Type": "application/json"}
LIMIT = 256 * 1024
"""PDFRELAY_MAX_FILE_BYTES of this scenario."""

INJECTIONS = [
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "/etc/shadow.pdf",
    "a/../../jobs/x/record.json",
    "%2e%2e%2f%2e%2e%2fresults",
    "index/acme/../../b.pdf",
    "x" * 200 + ".pdf",
]
"""Hostile names that fit the length limits (longer ones are refused: step 6)."""

_ID = r"[0-9a-f]{32}"
STORED = [
    re.compile(rf"^uploads/(?P<id>{_ID})\.pdf$"),
    re.compile(rf"^jobs/(?P<id>{_ID})/[a-z_]+\.json$"),
    re.compile(rf"^results/(?P<id>{_ID})/result\.json$"),
    re.compile(rf"^results/c-[0-9a-f]{{64}}/(?P<id>{_ID})\.json$"),
    re.compile(rf"^results/(?P<id>{_ID})/cache-summary\.json$"),
    re.compile(rf"^results/(?P<id>{_ID})/artifacts/[A-Za-z0-9_.-]+$"),
    re.compile(rf"^index/(?:acme|globex)/\d{{13}}-(?P<id>{_ID})\.json$"),
    re.compile(rf"^inflight/(?:acme|globex)/(?P<id>{_ID})\.\d+$"),
    re.compile(r"^idempotency/[0-9a-f]{64}\.json$"),
    re.compile(r"^cache/[0-9a-f]{64}\.json$"),
]
"""Every key pdfrelay may write for these jobs: the job id or a hash, never a client's string."""


class Recorder:
    """Every response body and header the clients of this scenario saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def call(
        self, http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
    ) -> tuple[int, str]:
        async with http.request(method, url, allow_redirects=False, **kwargs) as resp:
            text = await resp.text(errors="replace")
            self.seen.append(f"{resp.status} {dict(resp.headers)} {text}")
            return resp.status, text


def routes(svc: Service) -> list[tuple[str, str]]:
    """(method, path template) of every route the ingress serves (its own router)."""
    app = ingress.create_app(svc.ctx)
    return sorted(
        {
            (r.method, r.resource.canonical)
            for r in app.router.routes()
            if r.resource is not None and r.method != "*"
        }
    )


def fill(template: str, job_id: str, name: str = "result.json") -> str:
    path = template.replace("{job_id}", job_id).replace("{name}", name)
    return re.sub(r"\{[^}]+\}", "x", path)


async def oversized_upload(base_url: str, total: int) -> tuple[int, bytes, int]:
    """Stream a chunked multipart upload of `total` bytes at a modest pace, stopping as soon as
    the answer comes; returns (status, body head, bytes sent by then)."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    boundary = "reliability-boundary"
    writer.write(
        (
            f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY_A}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n%PDF-1.7\n"
    ).encode()
    writer.write(f"{len(head):x}\r\n".encode() + head + b"\r\n")
    answer = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
    sent = 0
    chunk = b"0" * 32768
    try:
        while sent < total and not answer.done():
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
            sent += len(chunk)
            # A client on a slow link: ~3 MB/s, and it stops the moment the server answers.
            await asyncio.wait([answer], timeout=0.01)
    except ConnectionError:
        pass
    try:
        async with asyncio.timeout(30):
            headers = await answer
            body = await reader.read(4096)
    finally:
        writer.transport.abort()
    status = int(headers.split(b" ", 2)[1])
    return status, headers + body, sent


async def hostile_probes(svc: Service, rec: Recorder, base: str, job_b: str) -> dict[str, Any]:
    """Issue 14's probes against the running service; returns the scenario's figures."""
    url = f"{base}/v1/jobs"

    async def post(**kwargs: Any) -> tuple[int, str]:
        return await rec.call(svc.http, "POST", url, headers=A, **kwargs)

    # Another tenant's upload and the service's own keys: one identical refusal, no oracle.
    answers = set()
    for key in (f"uploads/{job_b}.pdf", f"uploads/{'0' * 32}.pdf", f"jobs/{job_b}/record.json"):
        status, text = await post(json={"source": {"s3": {"key": key}}})
        assert status == 403, text
        answers.add(text)
    assert len(answers) == 1, answers
    # Options, nesting, sizes, webhook credentials.
    probes: list[tuple[dict[str, Any], int, str]] = [
        ({"json": {"source": {"url": "https://x.test/a.pdf"}, "options": {"pages": p}}}, 422, c)
        for p, c in (("0", "INVALID_OPTIONS"), ("5-2", "INVALID_OPTIONS"))
    ]
    probes += [
        ({"json": {"source": {"url": "https://x"}, "options": {"pages": "9" * 4401}}}, 422, ""),
        ({"data": "[" * 30000, "headers": JSON_A}, 400, ""),
        ({"json": {"source": {"url": "https://x"}, "client_ref": "r" * 600}}, 400, ""),
        ({"data": b"{" + b" " * (512 << 10) + b"}", "headers": JSON_A}, 413, ""),
    ]
    for kwargs, want, code in probes:
        status, text = await rec.call(svc.http, "POST", url, **{"headers": A, **kwargs})
        assert status == want, (status, text[:200])
        assert text.startswith('{"error": {"code": "' + code), text[:200]
    status, text = await rec.call(svc.http, "PUT", f"{base}/healthz")
    assert status == 405
    assert "METHOD_NOT_ALLOWED" in text
    # The ReDoS of issue 14 (#2) while /healthz is timed.
    worst = 0.0
    redos = {
        "source": {"url": "https://x.test/a.pdf"},
        "options": {"pages": "1-" + " " * 8000 + "x"},
    }
    for _ in range(5):
        probe = asyncio.ensure_future(post(json=redos))
        start = time.perf_counter()
        status, _ = await rec.call(svc.http, "GET", f"{base}/healthz")
        worst = max(worst, time.perf_counter() - start)
        assert (await probe)[0] == 422
    assert worst < 0.05, worst
    return {
        "source_s3_refusals_identical": len(answers) == 1,
        "hostile_probes_refused": len(probes) + 4,
        "healthz_worst_ms_during_redos": round(worst * 1000, 1),
    }


@pytest.mark.timeout(180)
async def test_keys_tenants_secrets_limits_and_injection(
    fault_settings: Any, tmp_path: Path
) -> None:
    settings = fault_settings(
        api_keys=f"acme:{KEY_A},globex:{KEY_B}",
        webhook_secret=SECRET,
        s3_secret_key=S3_SECRET,
        max_file_bytes=LIMIT,
    )
    rec_http = Recorder()
    async with open_service(settings, tmp_path / "logs") as svc:
        dev = await svc.spawn("dev")
        base = svc.base_url
        async with Ledger(
            "8-security",
            "API keys, tenant isolation, secrets, size limit, key injection",
            settings,
            svc.http,
            base,
        ) as ledger:
            hook = await ledger.receiver("hook")
            pdf_b, words_b = document(1)
            job_b = await ledger.upload(
                pdf_b, words_b, receiver=hook, headers=B, webhook_token=TOKEN, client_ref="b"
            )
            assert job_b.status == 202, job_b.body
            injected: list[str] = []
            for i, evil in enumerate(INJECTIONS):
                pdf, words = document(100 + i)
                up = await ledger.upload(
                    pdf,
                    words,
                    receiver=hook,
                    headers={**A, "Idempotency-Key": evil},
                    filename=evil,
                    client_ref=evil,
                    webhook_token=TOKEN,
                )
                assert up.job_id is not None, (evil, up.body)
                injected.append(up.job_id)
            rec_http.seen.extend(str(u.body) for u in ledger.refusals)
            await ledger.settle(60)
            assert job_b.job_id is not None
            a_job = injected[0]

            # 1. No /v1 (or seed /api) route answers without a valid key.
            checked = 0
            for method, template in routes(svc):
                if not template.startswith(("/v1", "/api")):
                    continue
                url = base + fill(template, job_b.job_id)
                for headers in (
                    {},
                    {"Authorization": "Bearer wrong-key"},
                    {"Authorization": KEY_A},
                ):
                    status, text = await rec_http.call(svc.http, method, url, headers=headers)
                    assert status == 401, (method, template, headers, status, text)
                    checked += 1
            assert checked >= 3 * 8

            # 2. Tenant A cannot read, follow, cancel, redeliver or download B's job.
            for method, template in routes(svc):
                if "{job_id}" not in template or method == "HEAD":
                    continue
                for job_id in (job_b.job_id, "0" * 32, "../" + job_b.job_id):
                    status, text = await rec_http.call(
                        svc.http, method, base + fill(template, job_id), headers=A
                    )
                    assert status == 404, (method, template, status, text)
                    assert words_b[0] not in text
            status, text = await rec_http.call(svc.http, "GET", f"{base}/v1/jobs", headers=A)
            assert status == 200
            assert job_b.job_id not in text
            assert all(job_id in text for job_id in injected)
            status, text = await rec_http.call(
                svc.http, "GET", f"{base}/v1/jobs/{job_b.job_id}", headers=B
            )
            assert status == 200
            assert '"completed"' in text  # A's DELETE did not cancel it
            for name in ("..%2F..%2Fjobs%2F" + job_b.job_id + "%2Frecord.json", "..", "%2e%2e"):
                status, text = await rec_http.call(
                    svc.http, "GET", f"{base}/v1/jobs/{a_job}/artifacts/{name}", headers=A
                )
                assert status == 404, (name, status, text)

            # 3. An upload over the limit is cut off while it streams.
            started = time.monotonic()
            status, answer, sent = await oversized_upload(base, 64 * LIMIT)
            ledger.figures.update(
                upload_limit_kib=LIMIT // 1024,
                oversized_upload_sent_when_413_came_kib=sent // 1024,
                oversized_upload_would_have_been_kib=64 * LIMIT // 1024,
                oversized_upload_answered_after_s=round(time.monotonic() - started, 3),
            )
            assert status == 413, answer
            assert b"FILE_TOO_LARGE" in answer
            assert sent < 8 * LIMIT, sent

            # 3b. The hostile client of issue 14: each probe refused with a clear JSON error.
            figures = await hostile_probes(svc, rec_http, base, job_b.job_id)
            ledger.figures.update(figures)

            # 4. Stored keys: only the job's own prefixes, whatever the client sent.
            keys = await svc.ctx.storage.list_keys("")
            accepted = set(ledger.expected)
            for key in keys:
                match = next((m for p in STORED if (m := p.match(key))), None)
                assert match is not None, f"unexpected key {key!r}"
                if "id" in match.groupdict():
                    assert match["id"] in accepted, key

            # 5. Redeliver B's webhook (the sealed token path), then look for secrets everywhere.
            status, text = await rec_http.call(
                svc.http, "POST", f"{base}/v1/jobs/{job_b.job_id}/webhook/redeliver", headers=B
            )
            assert status == 202, text
            async with asyncio.timeout(30), ledger.changed:
                await ledger.changed.wait_for(
                    lambda: sum(c.job_id == job_b.job_id for c in hook.calls) >= 2
                )
            for job_id in [job_b.job_id, *injected]:
                headers = B if job_id == job_b.job_id else A
                for path in ("", "/result"):
                    await rec_http.call(
                        svc.http, "GET", f"{base}/v1/jobs/{job_id}{path}", headers=headers
                    )
            stored = [
                await svc.ctx.storage.get_bytes(key) for key in await svc.ctx.storage.list_keys("")
            ]
            ledger.figures.update(
                routes_checked_without_key=checked,
                objects_scanned=len(stored),
                responses_scanned=len(rec_http.seen),
                log_lines_scanned=len(dev.lines),
            )
            await ledger.check(within=60)

    needles = {
        "webhook secret": SECRET,
        "webhook secret (key part)": SECRET.removeprefix("whsec_"),
        "webhook token": TOKEN,
        "API key A": KEY_A,
        "API key B": KEY_B,
        "S3 secret key": S3_SECRET,
    }
    for what, needle in needles.items():
        for blob in stored:
            assert needle.encode() not in blob, f"{what} in a stored object"
        for text in rec_http.seen:
            assert needle not in text, f"{what} in a response"
        assert needle not in dev.text, f"{what} in the log"
