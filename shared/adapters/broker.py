"""The broker adapter: confirmed, persistent publishing with errors translated at the boundary,
and the `Broker` protocol the lifecycle and the announcements publish through."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Protocol, TypedDict, Unpack

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, HeadersType
from aio_pika.exceptions import AMQPError, DeliveryError, PublishError
from pydantic import BaseModel

from shared.errors import NotRoutable, QueueFullError, TransientError

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0
RENEW_INTERVAL_S = 1.0
"""A publishing channel the broker nacks is replaced at most this often: a queue really at its
length limit nacks on every channel, and is not worth a new channel per refused message."""


async def publish(
    channel: AbstractChannel,
    exchange: str,
    routing_key: str,
    body: BaseModel | bytes,
    *,
    message_id: str | None = None,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    headers: HeadersType | None = None,
    expiration: float | None = None,
) -> None:
    """Publish one persistent message and wait for the broker's confirm.

    The channel must be opened with publisher confirms and `on_return_raises=True`.
    `expiration` (seconds) is the message's TTL; it cannot outlast the queue's own TTL.

    Raises:
        QueueFullError: the broker nacked the message (a queue at its length limit).
        TransientError: the broker is away, did not confirm in time, or could not route.
    """
    payload = body if isinstance(body, bytes) else body.model_dump_json(by_alias=True).encode()
    message = aio_pika.Message(
        payload,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        correlation_id=correlation_id,
        reply_to=reply_to,
        headers=headers or {},
        expiration=expiration,
    )
    try:
        ex = await channel.get_exchange(exchange, ensure=False)
        await ex.publish(
            message, routing_key=routing_key, mandatory=True, timeout=PUBLISH_TIMEOUT_S
        )
    except PublishError as exc:
        raise NotRoutable(f"the broker could not route to {exchange!r}/{routing_key!r}") from exc
    except DeliveryError as exc:
        raise QueueFullError("the queue is full") from exc
    except TimeoutError as exc:
        raise TransientError("the broker did not confirm in time") from exc
    except (AMQPError, ConnectionError, RuntimeError) as exc:
        raise TransientError("the broker is unavailable") from exc


Body = BaseModel | bytes
"""A message's body: a pydantic message (sent as its JSON) or bytes as they are."""


class MessageProperties(TypedDict, total=False):
    """The keyword arguments of `publish` after the body, as one type for `Broker`."""

    message_id: str | None
    correlation_id: str | None
    reply_to: str | None
    headers: HeadersType | None
    expiration: float | None


class Broker(Protocol):
    """What the lifecycle, the announcements (events, webhook deliveries, replies) and the
    doors publish through: `ChannelBroker` over RabbitMQ, and an in-memory fake in the fast
    tests (tests/fakes.py). The contract and errors are `publish`'s."""

    async def publish(
        self, exchange: str, routing_key: str, body: Body, **properties: Unpack[MessageProperties]
    ) -> None: ...


class ChannelBroker:
    """`Broker` over one publishing channel (confirms on, unroutable messages raise).

    A channel whose publish the broker nacks is replaced by a new one from `connection` (at
    most once per `RENEW_INTERVAL_S`; the caller still gets the QueueFullError), and closed
    once its publishes in flight are over (never the channel it was given: the context's,
    which declared the topology). The broker keeps, per channel, a session with each quorum
    queue that channel publishes to; RabbitMQ 3.10 begins it with the node its record names
    as leader, and when that node has just died (a publish right after a reconnect, before the
    record names the new leader) the session rejects every later publish of the channel until
    that node is back, however healthy the queue. A new channel begins a new session, with
    the leader elected meanwhile. A queue really at its length limit nacks on any channel."""

    def __init__(self, channel: AbstractChannel, connection: AbstractConnection):
        self.channel = channel
        self._given = channel
        """The context's channel, never closed here; every other one was opened here."""
        self._connection = connection
        self._in_flight: dict[AbstractChannel, int] = {}
        self._renewing = asyncio.Lock()
        self._renewed_at = -math.inf
        self.renewals = 0

    async def publish(
        self, exchange: str, routing_key: str, body: Body, **properties: Unpack[MessageProperties]
    ) -> None:
        channel = self.channel
        self._in_flight[channel] = self._in_flight.get(channel, 0) + 1
        try:
            await publish(channel, exchange, routing_key, body, **properties)
        except QueueFullError:
            await self._renew(channel)
            raise
        finally:
            left = self._in_flight.pop(channel) - 1
            if left:
                self._in_flight[channel] = left
            elif channel is not self.channel and channel is not self._given:
                await _close(channel)

    async def _renew(self, refused: AbstractChannel) -> None:
        """Publish on a new channel from now on, unless `refused` was replaced already or
        the last replacement is too recent."""
        async with self._renewing:
            now = time.monotonic()
            if self.channel is not refused or now - self._renewed_at < RENEW_INTERVAL_S:
                return
            self._renewed_at = now
            try:
                fresh = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            except (AMQPError, ConnectionError, RuntimeError) as exc:
                log.warning("the nacked publishing channel is kept (no new one: %s)", exc)
                return
            self.channel = fresh
            self.renewals += 1
            # `refused` is closed by the last of its publishes in flight (`publish`).
            log.warning("the broker nacked a publish: publishing on a new channel")


async def _close(channel: AbstractChannel) -> None:
    try:
        await channel.close()
    except (AMQPError, ConnectionError, RuntimeError) as exc:
        log.debug("closing a replaced publishing channel: %s", exc)
