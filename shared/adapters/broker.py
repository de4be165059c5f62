"""The broker adapter: confirmed, persistent publishing with errors translated at the boundary,
and the `Broker` protocol the lifecycle and the announcements publish through."""

from __future__ import annotations

from typing import Protocol, TypedDict, Unpack

import aio_pika
from aio_pika.abc import AbstractChannel, HeadersType
from aio_pika.exceptions import AMQPError, DeliveryError, PublishError
from pydantic import BaseModel

from shared.errors import NotRoutable, QueueFullError, TransientError

PUBLISH_TIMEOUT_S = 10.0


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
    """`Broker` over one publishing channel (confirms on, unroutable messages raise)."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel

    async def publish(
        self, exchange: str, routing_key: str, body: Body, **properties: Unpack[MessageProperties]
    ) -> None:
        await publish(self.channel, exchange, routing_key, body, **properties)
