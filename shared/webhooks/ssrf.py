"""SSRF policy for webhook targets: refuse non-public addresses, connect only to checked ones."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import ipaddress
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, TypeAlias

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from yarl import URL

from shared.errors import ErrorCode, PermanentError, TransientError

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network
HostLookup: TypeAlias = Callable[[str, int], Awaitable[Sequence[str]]]
"""Resolves ``(host, port)`` to address strings; raises OSError when the name does not resolve."""

MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Hosts made only of numbers, hex and dots that are not canonical addresses ("127.1",
# "2130706433", "0x7f.1"): resolvers map them onto addresses, so they only serve to hide one.
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+))*\.?", re.IGNORECASE)
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


def _v4(*blocks: tuple[str, str]) -> tuple[tuple[IPv4Network, str], ...]:
    return tuple((IPv4Network(net), label) for net, label in blocks)


def _v6(*blocks: tuple[str, str]) -> tuple[tuple[IPv6Network, str], ...]:
    return tuple((IPv6Network(net), label) for net, label in blocks)


# Spelled out rather than left to ipaddress.is_global alone, whose tables differ between
# Python versions (3.11 calls 224/4, fec0::/10 and 3fff::/20 global).
_BLOCKED_V4 = _v4(
    ("0.0.0.0/8", "a 'this network' address (0.0.0.0/8)"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a shared (CGNAT) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.88.99.0/24", "a deprecated 6to4 relay address"),
    ("192.168.0.0/16", "a private address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("255.255.255.255/32", "the broadcast address"),
    ("240.0.0.0/4", "a reserved address"),
)
_BLOCKED_V6 = _v6(
    ("::1/128", "a loopback address"),
    ("::/96", "a deprecated IPv4-compatible address"),
    ("::ffff:0:0/96", "an IPv4-mapped address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("100::/64", "a discard-only address"),
    ("2001:db8::/32", "a documentation address"),
    ("3fff::/20", "a documentation address"),
    ("fc00::/7", "a private (unique local) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a deprecated site-local address"),
    ("ff00::/8", "a multicast address"),
)
_NAT64 = IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = IPv6Network("::/96")


@functools.lru_cache(maxsize=4096)
def _parse_ip(host: str) -> IPAddress | None:
    host = host.strip("[]")
    # Cheap rejection of host names: this runs on every request.
    if ":" not in host and not host.replace(".", "").isdigit():
        return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _embedded_ipv4(ip: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 address carries, and how, for the transition formats."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible", IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _static_reason(ip: IPAddress) -> str | None:
    if ip.is_unspecified:
        return "the unspecified address"
    blocks: Sequence[tuple[IPNetwork, str]] = _BLOCKED_V4 if ip.version == 4 else _BLOCKED_V6
    for network, label in blocks:
        if ip in network:
            return label
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private or not ip.is_global:
        return "a non-public address"
    return None


def _host_key(host: str) -> str:
    return host.rstrip(".").lower()


def _refused(message: str) -> PermanentError:
    return PermanentError(f"webhook URL refused: {message}", ErrorCode.WEBHOOK_URL_REFUSED)


def check_url_syntax(url: str) -> URL:
    """Check a webhook URL's form without resolving it (cheap; for submit-time validation).

    Args:
        url: The URL as the client gave it.

    Returns:
        The parsed URL.

    Raises:
        PermanentError: With code ``WEBHOOK_URL_REFUSED`` if the URL is too long, contains
            spaces or control characters, is not absolute ``http``/``https``, has no host,
            port 0, or a numeric host that is not a canonical IP address.
    """
    if len(url) > MAX_URL_LENGTH:
        raise _refused(f"longer than {MAX_URL_LENGTH} characters")
    if _CONTROL_OR_SPACE.search(url):
        raise _refused("contains spaces or control characters")
    try:
        parsed = URL(url)
        port = parsed.port
    except (ValueError, TypeError) as exc:
        raise _refused(f"not a valid URL ({exc})") from None
    if parsed.scheme not in _DEFAULT_PORTS:
        shown = parsed.scheme or "(none)"
        raise _refused(f"scheme {shown!r} is not allowed; use http or https")
    host = parsed.raw_host
    if not host:
        raise _refused("the URL has no host")
    if not port:
        raise _refused("port 0 is not allowed")
    if _parse_ip(host) is None and _NUMERIC_HOST.fullmatch(host):
        raise _refused(f"host {host!r} is not a canonical IP address")
    return parsed


async def _system_lookup(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


class SsrfPolicy:
    """Which addresses webhook deliveries may connect to.

    Every address must be public unless it lies in one of ``allowed_networks``. Resolution
    results are cached for ``dns_cache_ttl_s`` so a busy dispatcher does not ask DNS once per
    delivery; only checked results are ever used, so the cache cannot open a rebinding window.
    """

    def __init__(
        self,
        allowed_networks: Sequence[IPv4Network | IPv6Network] = (),
        *,
        dns_cache_ttl_s: float = 10.0,
        dns_cache_size: int = 4096,
        lookup: HostLookup | None = None,
    ) -> None:
        """Create a policy.

        Args:
            allowed_networks: Networks exempt from the block (e.g. ``127.0.0.0/8`` for tests).
            dns_cache_ttl_s: How long a successful resolution is reused; 0 disables caching.
            dns_cache_size: How many host names the cache holds at most.
            lookup: Resolves a host name to addresses; the system resolver when omitted.
        """
        self.allowed_networks: tuple[IPNetwork, ...] = tuple(allowed_networks)
        self._ttl = dns_cache_ttl_s
        self._cache_size = dns_cache_size
        self._lookup: HostLookup = lookup if lookup is not None else _system_lookup
        self._cache: dict[tuple[str, int], tuple[float, tuple[IPAddress, ...]]] = {}

    def refusal_reason(self, ip: IPAddress) -> str | None:
        """Why the policy refuses an address.

        Args:
            ip: The address to judge.

        Returns:
            A phrase such as ``"a loopback address"``, or None if the address is allowed.
        """
        if any(ip in network for network in self.allowed_networks):
            return None
        if isinstance(ip, IPv6Address):
            embedded = _embedded_ipv4(ip)
            if embedded is not None:
                kind, inner = embedded
                reason = self.refusal_reason(inner)
                if reason is not None:
                    return f"{reason} ({kind} IPv6 form)"
                if kind in ("IPv4-mapped", "NAT64"):
                    # These reach exactly the embedded address, which is allowed.
                    return None
        return _static_reason(ip)

    def is_allowed(self, ip: IPAddress) -> bool:
        """Whether deliveries may connect to an address.

        Args:
            ip: The address to judge.

        Returns:
            True if the address is public or inside an allowed network.
        """
        return self.refusal_reason(ip) is None

    async def resolve_host(self, host: str, port: int) -> list[IPAddress]:
        """Resolve a host (or take an IP literal) and keep the addresses the policy allows.

        Args:
            host: A host name or IP literal, as in the URL (IDNA-encoded).
            port: The port, passed to the resolver.

        Returns:
            The allowed addresses, in resolver order, never empty.

        Raises:
            PermanentError: With code ``WEBHOOK_URL_REFUSED`` if no address is allowed.
            TransientError: If the name does not resolve (DNS may recover).
        """
        literal = _parse_ip(host)
        if literal is not None:
            reason = self.refusal_reason(literal)
            if reason is not None:
                raise _refused(f"{literal} is {reason}")
            return [literal]
        addresses = await self._lookup_cached(host, port)
        allowed = [ip for ip in addresses if self.refusal_reason(ip) is None]
        if not allowed:
            # Say what kind of address it was, not which: the answer must not map internal DNS.
            raise _refused(f"host {host!r} resolves to {self.refusal_reason(addresses[0])}")
        return allowed

    async def resolve_checked(self, url: str) -> tuple[str, int, list[IPAddress]]:
        """Validate a webhook URL and resolve it to the addresses a delivery may use.

        Args:
            url: The webhook URL.

        Returns:
            ``(host, port, addresses)``: the IDNA host as the HTTP client will see it, the
            effective port and the allowed addresses (never empty).

        Raises:
            PermanentError: With code ``WEBHOOK_URL_REFUSED`` if the URL is malformed, not
                http(s), or resolves only to refused addresses.
            TransientError: If the host name does not resolve.
        """
        parsed = check_url_syntax(url)
        host = parsed.raw_host
        port = parsed.port
        # Both are guaranteed by check_url_syntax.
        assert host is not None
        assert port is not None
        return host, port, await self.resolve_host(host, port)

    async def _lookup_cached(self, host: str, port: int) -> tuple[IPAddress, ...]:
        key = (_host_key(host), port)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            raw = await self._lookup(host, port)
        except (OSError, UnicodeError) as exc:
            raise TransientError(f"could not resolve host {host!r}") from exc
        addresses = tuple(dict.fromkeys(ip for ip in map(_parse_ip, raw) if ip is not None))
        if not addresses:
            raise TransientError(f"could not resolve host {host!r}")
        if self._ttl > 0:
            self._cache.pop(key, None)
            while len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]
            self._cache[key] = (now + self._ttl, addresses)
        return addresses


_PINS: contextvars.ContextVar[Mapping[str, tuple[IPAddress, ...]] | None] = contextvars.ContextVar(
    "pdfrelay_ssrf_pins", default=None
)


@contextlib.contextmanager
def pinned(host: str, addresses: Sequence[IPAddress]) -> Iterator[None]:
    """Make `CheckedResolver` answer ``host`` with exactly these addresses in this context.

    Connections opened inside the block for that host go to the addresses that were
    checked, without a second DNS lookup that could answer differently.

    Args:
        host: The host name as in the URL.
        addresses: Addresses already allowed by the policy.

    Yields:
        Nothing; the pin is removed on exit.
    """
    current = _PINS.get() or {}
    token = _PINS.set({**current, _host_key(host): tuple(addresses)})
    try:
        yield
    finally:
        _PINS.reset(token)


class CheckedResolver(AbstractResolver):
    """An aiohttp resolver that only ever returns addresses the policy allows.

    Inside `pinned` it returns the pinned addresses; otherwise it resolves through the
    policy and raises `PermanentError` (``WEBHOOK_URL_REFUSED``) if nothing is allowed.
    """

    def __init__(self, policy: SsrfPolicy) -> None:
        """Create the resolver.

        Args:
            policy: The policy that checks unpinned host names.
        """
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve a host to checked addresses (see the class docstring).

        Args:
            host: The host name.
            port: The port to connect to.
            family: ``AF_UNSPEC`` for any, or the one address family wanted.

        Returns:
            One result per allowed address of the wanted family.

        Raises:
            PermanentError: If the policy refuses every address of the host.
            TransientError: If the host does not resolve.
            OSError: If no allowed address has the wanted family.
        """
        pins = _PINS.get()
        addresses = pins.get(_host_key(host)) if pins is not None else None
        if addresses is None:
            addresses = tuple(await self._policy.resolve_host(host, port))
        results: list[ResolveResult] = []
        for ip in addresses:
            ip_family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            if family not in (socket.AF_UNSPEC, ip_family):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=str(ip),
                    port=port,
                    family=ip_family,
                    proto=0,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        if not results:
            raise OSError(f"no allowed {family.name} address for host {host!r}")
        return results

    async def close(self) -> None:
        """Nothing to release."""


class SsrfConnector(aiohttp.TCPConnector):
    """A TCP connector whose every connection goes to an address the policy allows.

    Host names are resolved by a `CheckedResolver` (no DNS cache of aiohttp's own, so each
    new connection uses the pinned or freshly checked addresses); IP-literal hosts, which
    aiohttp does not pass to the resolver, are checked here. TLS SNI, certificate checks and
    the ``Host`` header keep using the host name. Do not combine with an HTTP proxy: the
    proxy would resolve the name itself.
    """

    def __init__(self, policy: SsrfPolicy, **kwargs: Any) -> None:
        """Create the connector.

        Args:
            policy: The SSRF policy to enforce.
            **kwargs: Passed to `aiohttp.TCPConnector` (``limit``, ``ssl``, ...), except
                ``resolver`` and ``use_dns_cache``, which this class sets.

        Raises:
            TypeError: If ``resolver`` or ``use_dns_cache`` is given.
        """
        for reserved in ("resolver", "use_dns_cache"):
            if reserved in kwargs:
                raise TypeError(f"SsrfConnector sets {reserved!r} itself")
        super().__init__(resolver=CheckedResolver(policy), use_dns_cache=False, **kwargs)
        self.ssrf_policy = policy

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> Connection:
        """Refuse IP-literal hosts the policy does not allow, then connect as usual."""
        host = req.url.raw_host
        literal = _parse_ip(host) if host else None
        if literal is not None:
            reason = self.ssrf_policy.refusal_reason(literal)
            if reason is not None:
                raise _refused(f"{literal} is {reason}")
        return await super().connect(req, traces, timeout)
