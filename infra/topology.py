"""Broker topology as data: every exchange and queue pdfrelay uses, with its arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractChannel, ExchangeType

from shared.settings import Settings

Arguments = dict[str, Any]


@dataclass(frozen=True)
class Exchange:
    name: str
    type: ExchangeType


@dataclass(frozen=True)
class Queue:
    name: str
    arguments: Arguments = field(default_factory=dict)
    bindings: tuple[tuple[str, str], ...] = ()
    """(exchange name, routing key) pairs."""


@dataclass(frozen=True)
class Topology:
    """Names derive from the namespace so that tests can run side by side on one broker."""

    ns: str
    delivery_limit: int
    max_queue_length: int
    retry_delays_ms: tuple[int, ...] = ()

    # exchanges
    @property
    def requests(self) -> str:
        return f"{self.ns}.requests"

    @property
    def events(self) -> str:
        return f"{self.ns}.events"

    @property
    def dead_letters(self) -> str:
        return f"{self.ns}.dlx"

    @property
    def s3_events(self) -> str:
        return f"{self.ns}.s3-events"

    @property
    def webhooks_exchange(self) -> str:
        return f"{self.ns}.webhooks"

    # queues
    @property
    def extract(self) -> str:
        return f"{self.ns}.extract"

    @property
    def extract_dead(self) -> str:
        return f"{self.ns}.extract.dead"

    @property
    def webhooks(self) -> str:
        return f"{self.ns}.webhooks"

    @property
    def webhooks_dead(self) -> str:
        return f"{self.ns}.webhooks.dead"

    def webhook_retry(self, step: int) -> str:
        return f"{self.ns}.webhooks.retry.{step}"

    def exchanges(self) -> list[Exchange]:
        return [
            Exchange(self.requests, ExchangeType.DIRECT),
            Exchange(self.events, ExchangeType.TOPIC),
            Exchange(self.dead_letters, ExchangeType.DIRECT),
            Exchange(self.webhooks_exchange, ExchangeType.DIRECT),
            # Must match the flags of MinIO's AMQP target in docker-compose.yml.
            Exchange(self.s3_events, ExchangeType.FANOUT),
        ]

    def queues(self) -> list[Queue]:
        quorum: Arguments = {"x-queue-type": "quorum"}
        return [
            Queue(
                self.extract,
                {
                    **quorum,
                    "x-delivery-limit": self.delivery_limit,
                    # A quorum queue rejects only once it is over the limit: N - 1 accepts N.
                    "x-max-length": max(self.max_queue_length - 1, 0),
                    "x-overflow": "reject-publish",
                    "x-dead-letter-exchange": self.dead_letters,
                    "x-dead-letter-routing-key": self.extract_dead,
                    "x-dead-letter-strategy": "at-least-once",
                },
                bindings=((self.requests, "extract-task"),),
            ),
            Queue(self.extract_dead, quorum, bindings=((self.dead_letters, self.extract_dead),)),
            Queue(
                self.webhooks,
                {
                    **quorum,
                    "x-dead-letter-exchange": self.dead_letters,
                    "x-dead-letter-routing-key": self.webhooks_dead,
                },
                bindings=((self.webhooks_exchange, self.webhooks),),
            ),
            Queue(self.webhooks_dead, quorum, bindings=((self.dead_letters, self.webhooks_dead),)),
            *(
                Queue(
                    self.webhook_retry(step),
                    {
                        **quorum,
                        "x-message-ttl": delay,
                        "x-dead-letter-exchange": self.webhooks_exchange,
                        "x-dead-letter-routing-key": self.webhooks,
                        "x-overflow": "reject-publish",
                        "x-dead-letter-strategy": "at-least-once",
                    },
                    bindings=((self.webhooks_exchange, self.webhook_retry(step)),),
                )
                for step, delay in enumerate(self.retry_delays_ms)
            ),
        ]


def topology_for(settings: Settings, retry_delays_ms: tuple[int, ...] = ()) -> Topology:
    return Topology(
        ns=settings.namespace,
        delivery_limit=settings.extract_delivery_limit,
        max_queue_length=settings.max_queue_length,
        retry_delays_ms=retry_delays_ms,
    )


async def declare(channel: AbstractChannel, topology: Topology) -> None:
    """Declare every exchange, queue and binding; idempotent, run by every handler at start."""
    for ex in topology.exchanges():
        await channel.declare_exchange(ex.name, ex.type, durable=True)
    for q in topology.queues():
        queue = await channel.declare_queue(q.name, durable=True, arguments=q.arguments)
        for exchange, key in q.bindings:
            await queue.bind(exchange, routing_key=key)


async def delete(channel: AbstractChannel, topology: Topology) -> None:
    """Remove what `declare` made (tests clean up with this)."""
    for q in topology.queues():
        await channel.queue_delete(q.name)
    for ex in topology.exchanges():
        await channel.exchange_delete(ex.name)
