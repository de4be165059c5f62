"""One delivery attempt against real local receivers: outcomes, signatures, SSRF, timeouts."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from ipaddress import IPv4Network
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from shared.webhooks.delivery import Attempt, build_headers, deliver, parse_retry_after
from shared.webhooks.signing import generate_secret
from shared.webhooks.ssrf import HostLookup, SsrfConnector, SsrfPolicy

BODY = b'{"type": "job.completed", "timestamp": "2024-01-01T00:00:00Z", "data": {"job_id": "j1"}}'
TOKEN = "tok_receiver-sees-this-but-logs-never"
LOOPBACK = SsrfPolicy([IPv4Network("127.0.0.0/8")])


@dataclass
class Received:
    path: str
    host: str
    headers: dict[str, str]
    body: bytes
    verified_with: list[int]


@dataclass
class Receiver:
    """A real aiohttp server on 127.0.0.1 that records what it gets."""

    secrets: Sequence[str]
    port: int = 0
    scheme: str = "http"
    received: list[Received] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hung_entered: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    async def record(self, request: web.Request) -> None:
        body = await request.read()
        headers = dict(request.headers)
        verified = []
        for index, secret in enumerate(self.secrets):
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            verified.append(index)
        self.hits[request.path] += 1
        self.received.append(Received(request.path, request.host, headers, body, verified))

    def app(self) -> web.Application:
        async def ok(request: web.Request) -> web.Response:
            await self.record(request)
            last = self.received[-1]
            return web.Response(status=204 if len(last.verified_with) == len(self.secrets) else 401)

        async def status(request: web.Request) -> web.Response:
            await self.record(request)
            headers = {}
            if "retry_after" in request.query:
                headers["Retry-After"] = request.query["retry_after"]
            return web.Response(status=int(request.match_info["code"]), headers=headers)

        async def redirect(request: web.Request) -> web.Response:
            await self.record(request)
            raise web.HTTPFound(self.url("/target"))

        async def target(request: web.Request) -> web.Response:
            await self.record(request)
            return web.Response(text="should never be reached")

        async def hang(request: web.Request) -> web.Response:
            await self.record(request)
            self.hung_entered.set()
            await self.release.wait()
            return web.Response(text="too late")

        app = web.Application()
        app.router.add_post("/ok", ok)
        app.router.add_post("/status/{code}", status)
        app.router.add_post("/redirect", redirect)
        app.router.add_route("*", "/target", target)
        app.router.add_post("/hang", hang)
        return app


@pytest.fixture
def secrets() -> list[str]:
    return [generate_secret(), generate_secret()]


async def _serve(receiver: Receiver, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    runner = web.AppRunner(receiver.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    receiver.port = runner.addresses[0][1]
    return runner


@pytest.fixture
async def receiver(secrets: list[str]) -> AsyncIterator[Receiver]:
    rec = Receiver(secrets)
    runner = await _serve(rec)
    try:
        yield rec
    finally:
        rec.release.set()
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=SsrfConnector(LOOPBACK)) as client:
        yield client


def _headers(secrets: Sequence[str], token: str | None = TOKEN) -> dict[str, str]:
    return build_headers("evt_01", int(time.time()), BODY, secrets, token)


async def test_2xx_is_delivered_signed_for_every_secret(
    session: aiohttp.ClientSession,
    receiver: Receiver,
    secrets: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    attempt = await deliver(session, LOOPBACK, receiver.url("/ok"), BODY, _headers(secrets))
    assert attempt.outcome == "delivered"
    assert attempt.status == 204
    assert attempt.error is None
    assert attempt.retry_after_s is None
    assert attempt.elapsed_s > 0
    [got] = receiver.received
    assert got.verified_with == [0, 1]  # each secret of the rotation verifies on its own
    assert got.body == BODY
    assert got.headers["webhook-id"] == "evt_01"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"
    assert got.headers["X-Callback-Token"] == TOKEN
    for secret in [*secrets, TOKEN]:
        assert secret not in caplog.text
        assert secret not in repr(attempt)


async def test_500_is_retried(
    session: aiohttp.ClientSession, receiver: Receiver, secrets: list[str]
) -> None:
    attempt = await deliver(session, LOOPBACK, receiver.url("/status/500"), BODY, _headers(secrets))
    assert attempt == Attempt("retry", 500, "HTTP 500", None, attempt.elapsed_s)


async def test_410_means_gone(
    session: aiohttp.ClientSession, receiver: Receiver, secrets: list[str]
) -> None:
    attempt = await deliver(session, LOOPBACK, receiver.url("/status/410"), BODY, _headers(secrets))
    assert attempt.outcome == "gone"
    assert attempt.status == 410


@pytest.mark.parametrize(
    ("code", "value", "expected"),
    [
        (429, "120", 120.0),
        (503, "7", 7.0),
        (429, "0", 1.0),  # clamped up to the minimum
        (429, "999999", 3600.0),  # clamped down to the maximum
        (429, "soon", None),
        (429, "", None),
        (500, "120", None),  # only 429 and 503 carry a meaningful Retry-After
    ],
)
async def test_retry_after_seconds(
    session: aiohttp.ClientSession,
    receiver: Receiver,
    secrets: list[str],
    code: int,
    value: str,
    expected: float | None,
) -> None:
    url = receiver.url(f"/status/{code}?retry_after={value}")
    attempt = await deliver(
        session,
        LOOPBACK,
        url,
        BODY,
        _headers(secrets),
        min_retry_after_s=1.0,
        max_retry_after_s=3600.0,
    )
    assert attempt.outcome == "retry"
    assert attempt.status == code
    assert attempt.retry_after_s == expected


async def test_retry_after_http_date(
    session: aiohttp.ClientSession, receiver: Receiver, secrets: list[str]
) -> None:
    when = formatdate(time.time() + 120, usegmt=True)
    url = receiver.url("/status/429?retry_after=" + when.replace(" ", "%20"))
    attempt = await deliver(session, LOOPBACK, url, BODY, _headers(secrets))
    assert attempt.outcome == "retry"
    assert attempt.retry_after_s is not None
    assert 110 <= attempt.retry_after_s <= 121


async def test_redirect_is_not_followed(
    session: aiohttp.ClientSession, receiver: Receiver, secrets: list[str]
) -> None:
    attempt = await deliver(session, LOOPBACK, receiver.url("/redirect"), BODY, _headers(secrets))
    assert attempt.outcome == "retry"
    assert attempt.status == 302
    assert attempt.error is not None
    assert "redirects are not followed" in attempt.error
    assert receiver.hits["/redirect"] == 1
    assert receiver.hits["/target"] == 0


async def test_hung_receiver_times_out_without_blocking_others(
    session: aiohttp.ClientSession, receiver: Receiver, secrets: list[str]
) -> None:
    hung_done = asyncio.Event()

    async def to_hung() -> Attempt:
        try:
            return await deliver(
                session, LOOPBACK, receiver.url("/hang"), BODY, _headers(secrets), timeout_s=1.0
            )
        finally:
            hung_done.set()

    async def to_healthy() -> tuple[Attempt, bool]:
        # Start only once the hung request is provably in flight.
        await receiver.hung_entered.wait()
        attempt = await deliver(session, LOOPBACK, receiver.url("/ok"), BODY, _headers(secrets))
        return attempt, hung_done.is_set()

    try:
        hung, (healthy, hung_was_done) = await asyncio.gather(to_hung(), to_healthy())
    finally:
        receiver.release.set()
    assert healthy.outcome == "delivered"
    assert not hung_was_done
    assert hung.outcome == "retry"
    assert hung.status is None
    assert hung.error == "timed out after 1s"


async def test_loopback_refused_unless_allowed(
    session: aiohttp.ClientSession, receiver: Receiver, secrets: list[str]
) -> None:
    strict = SsrfPolicy()
    for host in ("127.0.0.1", "localhost"):
        attempt = await deliver(session, strict, receiver.url("/ok", host), BODY, _headers(secrets))
        assert attempt.outcome == "refused"
        assert attempt.status is None
        assert attempt.error is not None
        assert "loopback" in attempt.error
    assert receiver.hits["/ok"] == 0
    allowed = await deliver(session, LOOPBACK, receiver.url("/ok"), BODY, _headers(secrets))
    assert allowed.outcome == "delivered"


def _lookup(answers: list[list[str]], calls: list[str]) -> HostLookup:
    async def lookup(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers.pop(0)

    return lookup


@pytest.mark.parametrize("shared_session", [True, False])
async def test_connection_goes_to_the_checked_address(
    receiver: Receiver, secrets: list[str], shared_session: bool
) -> None:
    # DNS answers loopback (allowed) first and a private address (refused) after that: a
    # second lookup at connect time - a rebinding window - would make the delivery fail.
    calls: list[str] = []
    policy = SsrfPolicy(
        [IPv4Network("127.0.0.0/8")],
        lookup=_lookup([["127.0.0.1"], ["10.0.0.1"]], calls),
        dns_cache_ttl_s=0,
    )
    connector = SsrfConnector(policy) if shared_session else None
    async with aiohttp.ClientSession(connector=connector) as client:
        url = receiver.url("/ok", host="hook.test")
        first = await deliver(client, policy, url, BODY, _headers(secrets))
        second = await deliver(client, policy, url, BODY, _headers(secrets))
    assert first.outcome == "delivered"
    assert calls == ["hook.test", "hook.test"]
    assert receiver.received[0].host == f"hook.test:{receiver.port}"
    # Checked again at delivery: the new answer is refused before any connection.
    assert second.outcome == "refused"
    assert second.error is not None
    assert "private address" in second.error
    assert receiver.hits["/ok"] == 1


async def test_connection_refused_is_retried(
    session: aiohttp.ClientSession, secrets: list[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempt = await deliver(
        session, LOOPBACK, f"http://127.0.0.1:{port}/ok", BODY, _headers(secrets), timeout_s=5
    )
    assert attempt.outcome == "retry"
    assert attempt.status is None
    assert attempt.error is not None
    assert attempt.error.startswith("connection failed")


async def test_unresolvable_host_is_retried(
    session: aiohttp.ClientSession, secrets: list[str]
) -> None:
    async def nxdomain(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    policy = SsrfPolicy(lookup=nxdomain)
    attempt = await deliver(session, policy, "https://gone.test/hook", BODY, _headers(secrets))
    assert attempt == Attempt(
        "retry", None, "could not resolve host 'gone.test'", None, attempt.elapsed_s
    )


async def test_malformed_url_is_refused(session: aiohttp.ClientSession, secrets: list[str]) -> None:
    attempt = await deliver(session, LOOPBACK, "ftp://127.0.0.1/x", BODY, _headers(secrets))
    assert attempt.outcome == "refused"
    assert attempt.error is not None
    assert "scheme 'ftp'" in attempt.error


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    crypto = pytest.importorskip("cryptography")
    del crypto
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_uses_the_host_name_while_connecting_to_the_checked_address(
    tmp_path: Path, secrets: list[str]
) -> None:
    cert, key = _self_signed(tmp_path, "hook.test")
    server_names: list[str | None] = []
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server_ctx.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    rec = Receiver(secrets, scheme="https")
    runner = await _serve(rec, server_ctx)
    calls: list[str] = []
    policy = SsrfPolicy(
        [IPv4Network("127.0.0.0/8")],
        lookup=_lookup([["127.0.0.1"]], calls),
    )
    try:
        async with aiohttp.ClientSession(connector=SsrfConnector(policy, ssl=client_ctx)) as client:
            by_name = await deliver(
                client, policy, rec.url("/ok", "hook.test"), BODY, _headers(secrets)
            )
            by_address = await deliver(client, policy, rec.url("/ok"), BODY, _headers(secrets))
    finally:
        await runner.cleanup()
    assert by_name.outcome == "delivered"
    assert server_names[0] == "hook.test"
    assert rec.received[0].host == f"hook.test:{rec.port}"
    # The certificate names hook.test, not 127.0.0.1: verification is really on.
    assert by_address.outcome == "retry"
    assert by_address.error == "TLS certificate verification failed"


def test_build_headers_without_token() -> None:
    secret = generate_secret()
    headers = build_headers("evt_9", 1_700_000_000, BODY, [secret], None)
    assert set(headers) == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "user-agent",
    }
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("event_id", "token", "message"),
    [
        ("evt", "bad\r\nX-Injected: 1", "webhook token contains control characters"),
        ("evt", "", "webhook token must not be empty"),
        ("", None, "event id must not be empty"),
        ("evt\n", None, "event id contains control characters"),
    ],
)
def test_build_headers_rejects_unsafe_values(
    event_id: str, token: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        build_headers(event_id, 1, BODY, [generate_secret()], token)
    if token:
        assert token not in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("30", 30.0),
        (" 30 ", 30.0),
        ("-5", None),
        ("1.5", None),
        ("٣", None),  # a non-ASCII digit is not a delay
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 5.0),  # in the past: the minimum
        ("Wed, 21 Oct 2015 09:28:00 GMT", 3600.0),
        ("not a date", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = dt.datetime(2015, 10, 21, 7, 27, tzinfo=dt.UTC).timestamp()
    assert parse_retry_after(value, now=now, min_s=5.0, max_s=3600.0) == expected


def test_attempt_is_frozen() -> None:
    attempt = Attempt("delivered", 200)
    with pytest.raises(dataclasses.FrozenInstanceError):
        attempt.status = 500  # type: ignore[misc]


async def test_a_request_the_client_refuses_to_make_is_refused_not_raised(
    session: aiohttp.ClientSession, receiver: Receiver, secrets: list[str]
) -> None:
    """aiohttp will not send URL credentials next to the token's Authorization header."""
    url = receiver.url("/ok").replace("http://", "http://user:pass@")
    attempt = await deliver(session, LOOPBACK, url, BODY, _headers(secrets))
    assert attempt.outcome == "refused"
    assert attempt.error is not None
    assert "cannot be made" in attempt.error
    assert receiver.received == []
