"""The parking lot of webhook deliveries that gave up: list and replay (`pdfrelay dlq`, the
console's operations view).

Messages are taken with basic.get and manual acks: a replayed message is acked only after
the broker confirmed its copy on the dispatch queue, and everything else goes back untouched
when the channel closes, so nothing is lost if the command dies half-way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from shared.adapters.broker import publish
from shared.adapters.brokers import connect_any
from shared.adapters.topology import Topology, topology_for
from shared.models import WebhookDelivery
from shared.settings import Settings
from shared.webhooks.dispatch import ATTEMPT_HEADER, ERROR_HEADER, REASON_HEADER, STATUS_HEADER

T = TypeVar("T")


@dataclass(frozen=True)
class DeadLetter:
    """One parked delivery, as `pdfrelay dlq list` shows it (never its token)."""

    job_id: str | None
    event_type: str | None
    url: str | None
    attempts: int
    reason: str | None
    last_status: int | None
    last_error: str | None


def _describe(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    try:
        delivery: WebhookDelivery | None = WebhookDelivery.model_validate_json(message.body)
    except ValidationError:
        delivery = None
    attempts, status = headers.get(ATTEMPT_HEADER), headers.get(STATUS_HEADER)
    reason, error = headers.get(REASON_HEADER), headers.get(ERROR_HEADER)
    job_id = headers.get("job_id")
    return DeadLetter(
        job_id=delivery.job_id if delivery else (job_id if isinstance(job_id, str) else None),
        event_type=delivery.event_type if delivery else None,
        url=delivery.url if delivery else None,
        attempts=attempts if isinstance(attempts, int) else 0,
        # Without our headers the broker dead-lettered it: invalid, or the handler kept failing.
        reason=str(reason) if reason else ("invalid message" if delivery is None else "rejected"),
        last_status=status if isinstance(status, int) else None,
        last_error=str(error) if error else None,
    )


@asynccontextmanager
async def parked_queue(
    settings: Settings, name: Callable[[Topology], str]
) -> AsyncIterator[tuple[Topology, AbstractConnection, AbstractQueue]]:
    """A parking lot (`name` of the topology), to take messages from with basic.get and manual
    acks: what is not acked goes back, in order, when the block ends."""
    topo = topology_for(settings)
    # Not a robust connection: if it drops half-way, every unacked message is back in the
    # queue and the command fails loudly rather than carrying on with a new channel.
    connection = await connect_any(
        settings.amqp_url.get_secret_value(),
        client_properties={"connection_name": "pdfrelay-dlq"},
    )
    async with connection:
        channel = await connection.channel()
        # Unacked messages go back to the queue, in order, when this channel closes.
        async with channel:
            queue = await channel.declare_queue(name(topo), passive=True)
            yield topo, connection, queue


def _webhooks_dead(topo: Topology) -> str:
    return topo.webhooks_dead


async def peek_parked(
    settings: Settings,
    name: Callable[[Topology], str],
    describe: Callable[[AbstractIncomingMessage], T],
    limit: int,
) -> list[T]:
    """A parking lot's messages (at most `limit`), oldest first, each as `describe` says; the
    queue is left as it was."""
    found: list[T] = []
    async with parked_queue(settings, name) as (_, _connection, queue):
        while len(found) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            found.append(describe(message))
    return found


async def list_dead(settings: Settings, limit: int = 1000) -> list[DeadLetter]:
    """The parked webhook deliveries, oldest first; the queue is left as it was."""
    return await peek_parked(settings, _webhooks_dead, _describe, limit)


async def replay_dead(
    settings: Settings, *, job_id: str | None = None, replay_all: bool = False
) -> int:
    """Move parked deliveries (of one job, or all) back to the dispatch queue, attempts reset.

    Returns:
        How many deliveries were replayed.
    """
    if (job_id is None) == (not replay_all):
        raise ValueError("give exactly one of job_id or replay_all")
    replayed = 0
    async with parked_queue(settings, _webhooks_dead) as (topo, connection, queue):
        publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
        async with publisher:
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                try:
                    delivery = WebhookDelivery.model_validate_json(message.body)
                except ValidationError:
                    continue  # not replayable: stays parked
                if not replay_all and delivery.job_id != job_id:
                    continue  # someone else's: goes back when the channel closes
                await publish(
                    publisher,
                    topo.webhooks_exchange,
                    topo.webhooks,
                    message.body,
                    message_id=delivery.event_id,
                    headers={"job_id": delivery.job_id},
                )
                await message.ack()
                replayed += 1
    return replayed
