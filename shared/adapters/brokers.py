"""A robust broker connection over several addresses (the nodes of a RabbitMQ cluster).

aio-pika's robust connection reconnects to the one URL it was given. `connect_robust` here
takes the list of `PDFRELAY_AMQP_URL` and tries the nodes in turn: the first attempt goes to
the first address, every later attempt (a failed one, or a reconnect after the connection was
lost) to the next. On each reconnect the robust channels re-declare what they declared (the
topology: exchanges, queues, bindings) and resume their consumers.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika import RobustConnection
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from yarl import URL

RECONNECT_INTERVAL_S = 1.0
"""Pause between two connection attempts when there are several nodes to try (one node: 5 s,
aio-pika's default): a dead node is refused at once, its neighbour is likely up."""


class MultiNodeConnection(RobustConnection):
    """A `RobustConnection` whose every connection attempt goes to the next of its URLs.

    aio-pika clears `transport` right before each attempt (and on close); that is where the
    address moves on.
    """

    def __init__(self, urls: list[URL], start: int = 0, **kwargs: Any) -> None:
        self._urls = list(urls)
        self._resets = 0
        self._first = 1
        super().__init__(self._urls[start % len(self._urls)], **kwargs)
        # The next reset is the first connection attempt: it gets address `start`.
        self._first = self._resets + 1 - start

    @property
    def url(self) -> URL:
        return self._urls[(self._resets - self._first) % len(self._urls)]

    @url.setter
    def url(self, value: URL) -> None:
        # aio-pika sets it at start and on `update_secret`: the same credentials on every node.
        self._urls = [u.with_user(value.user).with_password(value.password) for u in self._urls]

    @property
    def transport(self) -> Any:
        return self._transport

    @transport.setter
    def transport(self, value: Any) -> None:
        if value is None:
            self._resets += 1
        self._transport = value


def split_urls(raw: str) -> list[str]:
    """`amqp://a/,amqp://b/` → the addresses (spaces around commas allowed)."""
    return [u.strip() for u in raw.split(",") if u.strip()]


async def connect_robust(raw_urls: str, **kwargs: Any) -> AbstractRobustConnection:
    """A robust connection to the first reachable of these comma-separated addresses."""
    urls = split_urls(raw_urls)
    if len(urls) < 2:
        single: AbstractRobustConnection = await aio_pika.connect_robust(
            urls[0] if urls else raw_urls, **kwargs
        )
        return single
    kwargs.setdefault("reconnect_interval", RECONNECT_INTERVAL_S)
    error: Exception | None = None
    # At start each address once, in turn: the first that answers is the connection's (later
    # attempts go round from there); none answering fails like a single address does.
    for start in range(len(urls)):
        connection = MultiNodeConnection([URL(u) for u in urls], start, **kwargs)
        try:
            await connection.connect()
        except CONNECTION_EXCEPTIONS as exc:
            error = exc
            await connection.close()
            continue
        return connection
    assert error is not None
    raise error


async def connect_any(raw_urls: str, **kwargs: Any) -> AbstractConnection:
    """A plain (not robust) connection to the first of these addresses that answers."""
    urls = split_urls(raw_urls) or [raw_urls]
    for url in urls[:-1]:
        try:
            connection: AbstractConnection = await aio_pika.connect(url, **kwargs)
        except CONNECTION_EXCEPTIONS:
            continue
        return connection
    last: AbstractConnection = await aio_pika.connect(urls[-1], **kwargs)
    return last
