"""The SSRF policy: which addresses are refused, resolution, and connecting only to checked ones."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address

import aiohttp
import pytest
from aiohttp import web

from shared.errors import ErrorCode, PermanentError, TransientError
from shared.webhooks.ssrf import (
    CheckedResolver,
    HostLookup,
    SsrfConnector,
    SsrfPolicy,
    check_url_syntax,
    pinned,
)

REFUSED = [
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("127.0.0.1", "loopback"),
    ("169.254.169.254", "link-local"),
    ("100.64.0.1", "CGNAT"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this network"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("192.0.2.1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("::ffff:127.0.0.1", "loopback address (IPv4-mapped"),
    ("::ffff:10.0.0.1", "private address (IPv4-mapped"),
    ("::ffff:169.254.169.254", "link-local address (IPv4-mapped"),
    ("::127.0.0.1", "loopback address (IPv4-compatible"),
    ("::93.184.216.34", "IPv4-compatible"),
    ("64:ff9b::a00:1", "private address (NAT64"),
    ("2002:7f00:1::1", "loopback address (6to4"),
    ("2001::1", "non-public"),
]
ALLOWED = ["93.184.216.34", "1.1.1.1", "2606:4700::1", "::ffff:93.184.216.34", "64:ff9b::5db8:d822"]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_refused_addresses(address: str, reason: str) -> None:
    verdict = SsrfPolicy().refusal_reason(ip_address(address))
    assert verdict is not None
    assert reason in verdict


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert SsrfPolicy().is_allowed(ip_address(address))


@pytest.mark.parametrize(("address", "_reason"), REFUSED)
async def test_refused_literals_in_urls(address: str, _reason: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(PermanentError) as info:
        await SsrfPolicy().resolve_checked(f"https://{host}/hook")
    assert info.value.code == ErrorCode.WEBHOOK_URL_REFUSED
    assert info.value.message.startswith("webhook URL refused: ")


@pytest.mark.parametrize(
    ("url", "port"), [("https://93.184.216.34/x", 443), ("http://[2606:4700::1]:8080/x", 8080)]
)
async def test_public_literals_resolve_to_themselves(url: str, port: int) -> None:
    host, got_port, addresses = await SsrfPolicy().resolve_checked(url)
    assert got_port == port
    assert addresses == [ip_address(host)]


def test_allow_list_exempts_only_listed_networks() -> None:
    policy = SsrfPolicy([IPv4Network("127.0.0.0/8"), IPv6Network("fd00::/8")])
    assert policy.is_allowed(ip_address("127.0.0.1"))
    assert policy.is_allowed(ip_address("127.10.0.5"))
    assert policy.is_allowed(ip_address("fd12::1"))
    # The embedded address of a mapped one counts, too.
    assert policy.is_allowed(ip_address("::ffff:127.0.0.1"))
    assert not policy.is_allowed(ip_address("::1"))
    assert not policy.is_allowed(ip_address("10.0.0.1"))
    assert not policy.is_allowed(ip_address("fc00::1"))


async def test_localhost_is_resolved_and_refused() -> None:
    with pytest.raises(PermanentError, match="host 'localhost' resolves to a loopback address"):
        await SsrfPolicy().resolve_checked("http://localhost:8080/hook")


async def test_localhost_allowed_when_loopback_is_listed() -> None:
    policy = SsrfPolicy([IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")])
    host, port, addresses = await policy.resolve_checked("http://LocalHost:8080/hook")
    assert (host, port) == ("localhost", 8080)
    assert addresses
    assert all(address.is_loopback for address in addresses)


def _fake_lookup(answers: Mapping[str, list[list[str]]], calls: list[str]) -> HostLookup:
    """Answer from a script: one answer per call, the last one repeating; unknown names fail."""

    async def lookup(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        queue = answers.get(host)
        if not queue:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return lookup


async def test_mixed_answers_keep_only_allowed_addresses() -> None:
    calls: list[str] = []
    lookup = _fake_lookup({"mixed.test": [["10.0.0.1", "93.184.216.34", "::1"]]}, calls)
    policy = SsrfPolicy(lookup=lookup)
    _, _, addresses = await policy.resolve_checked("https://mixed.test/")
    assert addresses == [ip_address("93.184.216.34")]


async def test_refusal_of_a_name_does_not_reveal_the_internal_address() -> None:
    lookup = _fake_lookup({"intranet.test": [["10.1.2.3"]]}, [])
    with pytest.raises(PermanentError) as info:
        await SsrfPolicy(lookup=lookup).resolve_checked("https://intranet.test/")
    assert "private address" in info.value.message
    assert "10.1.2.3" not in info.value.message


async def test_unresolvable_host_is_transient() -> None:
    with pytest.raises(TransientError, match=r"could not resolve host 'nowhere\.test'"):
        await SsrfPolicy(lookup=_fake_lookup({}, [])).resolve_checked("https://nowhere.test/")


async def test_dns_cache_reuses_checked_answers_until_expiry() -> None:
    calls: list[str] = []
    lookup = _fake_lookup({"a.test": [["93.184.216.34"], ["1.1.1.1"]]}, calls)
    cached = SsrfPolicy(lookup=lookup, dns_cache_ttl_s=60)
    first = await cached.resolve_checked("https://a.test/")
    second = await cached.resolve_checked("https://A.test./other")
    assert first[2] == second[2] == [ip_address("93.184.216.34")]
    assert calls == ["a.test"]

    calls.clear()
    uncached = SsrfPolicy(
        lookup=_fake_lookup({"a.test": [["93.184.216.34"], ["1.1.1.1"]]}, calls), dns_cache_ttl_s=0
    )
    assert (await uncached.resolve_checked("https://a.test/"))[2] == [ip_address("93.184.216.34")]
    assert (await uncached.resolve_checked("https://a.test/"))[2] == [ip_address("1.1.1.1")]
    assert calls == ["a.test", "a.test"]


async def test_dns_cache_is_bounded() -> None:
    calls: list[str] = []
    answers = {f"h{i}.test": [["93.184.216.34"]] for i in range(5)}
    policy = SsrfPolicy(lookup=_fake_lookup(answers, calls), dns_cache_size=2)
    for i in range(5):
        await policy.resolve_host(f"h{i}.test", 443)
    await policy.resolve_host("h4.test", 443)
    await policy.resolve_host("h0.test", 443)
    assert calls == [f"h{i}.test" for i in range(5)] + ["h0.test"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("gopher://example.com/", "scheme 'gopher'"),
        ("example.com/hook", "scheme"),
        ("http:///nohost", "no host"),
        ("http://example.com:0/", "port 0"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://exa mple.com/", "spaces or control"),
        ("http://example.com/\r\nX-Evil: 1", "spaces or control"),
        ("http://2130706433/", "not a canonical IP"),
        ("http://127.1/", "not a canonical IP"),
        ("http://0x7f.0.0.1/", "not a canonical IP"),
        ("http://017700000001/", "not a canonical IP"),
        ("https://example.com/" + "a" * 2100, "longer than"),
    ],
)
def test_check_url_syntax_refuses(url: str, message: str) -> None:
    with pytest.raises(PermanentError, match=message) as info:
        check_url_syntax(url)
    assert info.value.code == ErrorCode.WEBHOOK_URL_REFUSED


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook?x=1",
        "HTTP://Example.COM:8080/",
        "https://[2606:4700::1]/",
        "https://user:pass@example.com/",
        "https://bücher.example/hook",
        "https://123.example/hook",
    ],
)
def test_check_url_syntax_accepts(url: str) -> None:
    assert check_url_syntax(url).scheme in ("http", "https")


async def test_resolver_returns_pinned_addresses_without_a_lookup() -> None:
    calls: list[str] = []
    policy = SsrfPolicy(lookup=_fake_lookup({"pin.test": [["10.0.0.1"]]}, calls))
    resolver = CheckedResolver(policy)
    pins = [ip_address("93.184.216.34"), ip_address("2606:4700::1")]
    with pinned("Pin.Test.", pins):
        both = await resolver.resolve("pin.test", 443, family=socket.AF_UNSPEC)
        only_v6 = await resolver.resolve("pin.test", 443, family=socket.AF_INET6)
    assert [r["host"] for r in both] == ["93.184.216.34", "2606:4700::1"]
    assert [r["family"] for r in both] == [socket.AF_INET, socket.AF_INET6]
    assert all(r["hostname"] == "pin.test" and r["port"] == 443 for r in both)
    assert [r["host"] for r in only_v6] == ["2606:4700::1"]
    assert calls == []
    # Outside the block the pin is gone and the (refused) answer of DNS applies.
    with pytest.raises(PermanentError, match="private"):
        await resolver.resolve("pin.test", 443)
    await resolver.close()


async def test_resolver_without_address_of_wanted_family_raises_oserror() -> None:
    resolver = CheckedResolver(SsrfPolicy())
    with (
        pinned("v4only.test", [ip_address("93.184.216.34")]),
        pytest.raises(OSError, match="AF_INET6"),
    ):
        await resolver.resolve("v4only.test", 443, family=socket.AF_INET6)


@pytest.fixture
async def local_url() -> AsyncIterator[str]:
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_connector_refuses_loopback_literal_and_name(local_url: str) -> None:
    port = local_url.rsplit(":", 1)[1].strip("/")
    async with aiohttp.ClientSession(connector=SsrfConnector(SsrfPolicy())) as session:
        with pytest.raises(PermanentError, match=r"127\.0\.0\.1 is a loopback address"):
            await session.get(local_url)
        with pytest.raises(PermanentError, match="'localhost' resolves to a loopback"):
            await session.get(f"http://localhost:{port}/")


async def test_connector_connects_when_allowed(local_url: str) -> None:
    policy = SsrfPolicy([IPv4Network("127.0.0.0/8")])
    calls: list[str] = []
    named = SsrfPolicy(
        [IPv4Network("127.0.0.0/8")], lookup=_fake_lookup({"hook.test": [["127.0.0.1"]]}, calls)
    )
    port = local_url.rsplit(":", 1)[1].strip("/")
    async with (
        aiohttp.ClientSession(connector=SsrfConnector(policy)) as session,
        session.get(local_url) as response,
    ):
        assert response.status == 200
    async with (
        aiohttp.ClientSession(connector=SsrfConnector(named)) as session,
        session.get(f"http://hook.test:{port}/") as response,
    ):
        assert await response.text() == "ok"
    assert calls == ["hook.test"]


async def test_connector_refuses_to_be_given_its_own_resolver() -> None:
    with pytest.raises(TypeError, match="resolver"):
        SsrfConnector(SsrfPolicy(), resolver=CheckedResolver(SsrfPolicy()))
