"""Broker topology as data: every exchange and queue pdfrelay uses, with its arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection, ExchangeType
from aiormq.exceptions import ChannelNotFoundEntity

from shared.settings import Settings

Arguments = dict[str, Any]

WEBHOOK_DELIVERY_LIMIT = 20
"""Handler failures (not HTTP failures: those go through the retry ladder) before a webhook
delivery is dead-lettered."""

PREVIEW_TTL_MS = 30_000
"""A preview request expires unread after this long (the console has given up by then)."""
PREVIEW_MAX_QUEUED = 1000


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
    backoff_ms: int = 5000
    quorum_group_size: int | None = None
    """Replicas of each quorum queue; None: the broker's default."""

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

    @property
    def control(self) -> str:
        """Fanout: cancel requests, to every extract process (each binds a queue of its own)."""
        return f"{self.ns}.control"

    @property
    def tasks(self) -> str:
        """Internal: extract tasks (other services use `requests`)."""
        return f"{self.ns}.tasks"

    # routing keys
    REQUEST_KEY = "extract"
    TASK_KEY = "extract"
    RANGE_KEY = "range"
    MERGE_KEY = "merge"
    BATCH_KEY = "batch"
    PREVIEW_KEY = "preview"
    LLM_KEY = "llm"
    LLM_MERGE_KEY = "llm-merge"
    DELIVER_KEY = "deliver"

    # queues
    @property
    def extract(self) -> str:
        return f"{self.ns}.extract"

    @property
    def extract_ranges(self) -> str:
        """Page-range tasks of large documents, apart so that small jobs do not queue behind."""
        return f"{self.ns}.extract.ranges"

    @property
    def extract_merge(self) -> str:
        """Merge tasks (one consumer at a time: a job's parts are merged exactly once)."""
        return f"{self.ns}.extract.merge"

    @property
    def batches(self) -> str:
        """Batch signals (an item ended, a batch is queued); one consumer at a time decides a
        batch's completion exactly once (shared/jobs/batches.py)."""
        return f"{self.ns}.batches"

    @property
    def batches_dead(self) -> str:
        return f"{self.ns}.batches.dead"

    @property
    def batches_deadline(self) -> str:
        """A batch's deadline signal waits here (its own TTL, no consumer) and then goes to
        `batches`: a batch whose ingress died while queuing it is opened as it stands."""
        return f"{self.ns}.batches.deadline"

    @property
    def targets(self) -> str:
        """Ended jobs whose outputs go to a result destination (shared/jobs/targets.py)."""
        return f"{self.ns}.targets"

    @property
    def targets_dead(self) -> str:
        return f"{self.ns}.targets.dead"

    @property
    def previews(self) -> str:
        """Page-preview renders the console asks for (RPC: replies go to the asking ingress's
        own exclusive queue, named by the broker); a request nobody took in time expires."""
        return f"{self.ns}.previews"

    @property
    def llm(self) -> str:
        """Page images for the vision model; the consumer's prefetch is the calls in flight."""
        return f"{self.ns}.llm"

    @property
    def llm_merge(self) -> str:
        """A job's pages merged, or its ending, once (single active consumer)."""
        return f"{self.ns}.llm.merge"

    @property
    def llm_dead(self) -> str:
        """LLM tasks given up on (delivery limit, transient budget): their jobs fail."""
        return f"{self.ns}.llm.dead"

    @property
    def extract_dead(self) -> str:
        return f"{self.ns}.extract.dead"

    @property
    def requests_queue(self) -> str:
        return f"{self.ns}.requests"

    @property
    def requests_dead(self) -> str:
        return f"{self.ns}.requests.dead"

    @property
    def object_drop(self) -> str:
        return f"{self.ns}.object-drop"

    @property
    def object_drop_dead(self) -> str:
        return f"{self.ns}.object-drop.dead"

    @property
    def webhooks(self) -> str:
        return f"{self.ns}.webhooks"

    @property
    def webhooks_dead(self) -> str:
        return f"{self.ns}.webhooks.dead"

    @property
    def webhooks_redeliver(self) -> str:
        return f"{self.ns}.webhooks.redeliver"

    @property
    def webhook_states(self) -> str:
        """Delivery states on their way to S3, in batches (shared/webhooks/statelog.py)."""
        return f"{self.ns}.webhooks.states"

    @property
    def webhook_states_dead(self) -> str:
        """State batches the states queue gave up on (see README "Upgrading")."""
        return f"{self.ns}.webhooks.states.dead"

    def webhook_retry(self, step: int) -> str:
        """The wait queue of one step; named after its delay, because a queue's TTL cannot be
        changed once declared: a new schedule gets new queues (old ones drain back, then idle)."""
        return f"{self.ns}.webhooks.retry.{step}.{self.retry_delays_ms[step]}ms"

    def exchanges(self) -> list[Exchange]:
        return [
            Exchange(self.requests, ExchangeType.DIRECT),
            Exchange(self.events, ExchangeType.TOPIC),
            Exchange(self.dead_letters, ExchangeType.DIRECT),
            Exchange(self.webhooks_exchange, ExchangeType.DIRECT),
            Exchange(self.tasks, ExchangeType.DIRECT),
            Exchange(self.control, ExchangeType.FANOUT),
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
                bindings=((self.tasks, self.TASK_KEY),),
            ),
            self._extract_queue(self.extract_ranges, self.RANGE_KEY),
            self._extract_queue(
                self.extract_merge, self.MERGE_KEY, {"x-single-active-consumer": True}
            ),
            Queue(self.extract_dead, quorum, bindings=((self.dead_letters, self.extract_dead),)),
            Queue(
                self.previews,
                {
                    **quorum,
                    # The asker waits PDFRELAY_PREVIEW_TIMEOUT_S at most: later is too late.
                    "x-message-ttl": PREVIEW_TTL_MS,
                    "x-max-length": PREVIEW_MAX_QUEUED,
                    "x-overflow": "reject-publish",
                    # A page that kills its worker is not rendered again and again.
                    "x-delivery-limit": 2,
                },
                bindings=((self.tasks, self.PREVIEW_KEY),),
            ),
            self._llm_queue(self.llm, self.LLM_KEY),
            self._llm_queue(self.llm_merge, self.LLM_MERGE_KEY, {"x-single-active-consumer": True}),
            Queue(self.llm_dead, quorum, bindings=((self.dead_letters, self.llm_dead),)),
            self._backoff_queue(self.llm),
            self._backoff_queue(self.llm_merge),
            Queue(
                self.batches,
                {
                    **quorum,
                    "x-single-active-consumer": True,
                    "x-delivery-limit": self.delivery_limit,
                    "x-dead-letter-exchange": self.dead_letters,
                    "x-dead-letter-routing-key": self.batches_dead,
                    "x-dead-letter-strategy": "at-least-once",
                },
                bindings=((self.tasks, self.BATCH_KEY),),
            ),
            Queue(self.batches_dead, quorum, bindings=((self.dead_letters, self.batches_dead),)),
            Queue(
                self.batches_deadline,
                {
                    **quorum,
                    "x-overflow": "reject-publish",
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.batches,
                    "x-dead-letter-strategy": "at-least-once",
                },
            ),
            Queue(
                self.targets,
                {
                    **quorum,
                    "x-delivery-limit": self.delivery_limit,
                    "x-dead-letter-exchange": self.dead_letters,
                    "x-dead-letter-routing-key": self.targets_dead,
                    "x-dead-letter-strategy": "at-least-once",
                },
                bindings=((self.tasks, self.DELIVER_KEY),),
            ),
            Queue(self.targets_dead, quorum, bindings=((self.dead_letters, self.targets_dead),)),
            self._backoff_queue(self.targets),
            self._backoff_queue(self.batches),
            self._backoff_queue(self.extract),
            self._backoff_queue(self.extract_ranges),
            self._backoff_queue(self.extract_merge),
            self._backoff_queue(self.requests_queue),
            self._backoff_queue(self.object_drop),
            *self._door(self.requests_queue, self.requests_dead, (self.requests, self.REQUEST_KEY)),
            *self._door(self.object_drop, self.object_drop_dead, (self.s3_events, "")),
            Queue(
                self.webhooks,
                {
                    **quorum,
                    # Bounds the requeues of a delivery whose handler keeps failing (poison).
                    "x-delivery-limit": WEBHOOK_DELIVERY_LIMIT,
                    "x-dead-letter-exchange": self.dead_letters,
                    "x-dead-letter-routing-key": self.webhooks_dead,
                },
                bindings=((self.webhooks_exchange, self.webhooks),),
            ),
            Queue(self.webhooks_dead, quorum, bindings=((self.dead_letters, self.webhooks_dead),)),
            Queue(
                self.webhooks_redeliver,
                {**quorum, "x-delivery-limit": WEBHOOK_DELIVERY_LIMIT},
                bindings=((self.webhooks_exchange, self.webhooks_redeliver),),
            ),
            Queue(
                self.webhook_states,
                # One writer at a time keeps each job's states in order. A batch waits here
                # through an S3 outage; should a broker's default delivery limit (RabbitMQ 4:
                # 20) drop it, it goes to `webhook_states_dead`, never into the void.
                {
                    **quorum,
                    "x-single-active-consumer": True,
                    "x-dead-letter-exchange": self.dead_letters,
                    "x-dead-letter-routing-key": self.webhook_states_dead,
                    "x-dead-letter-strategy": "at-least-once",
                },
                bindings=((self.webhooks_exchange, self.webhook_states),),
            ),
            Queue(
                self.webhook_states_dead,
                quorum,
                bindings=((self.dead_letters, self.webhook_states_dead),),
            ),
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

    def _extract_queue(self, name: str, key: str, extra: Arguments | None = None) -> Queue:
        """A queue of internal fan-out tasks: crashes count, the dead go to `extract_dead`."""
        return Queue(
            name,
            {
                "x-queue-type": "quorum",
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-exchange": self.dead_letters,
                "x-dead-letter-routing-key": self.extract_dead,
                "x-dead-letter-strategy": "at-least-once",
                **(extra or {}),
            },
            bindings=((self.tasks, key),),
        )

    def _llm_queue(self, name: str, key: str, extra: Arguments | None = None) -> Queue:
        """A queue of vision-model tasks: crashes count, the dead go to `llm_dead`."""
        return Queue(
            name,
            {
                "x-queue-type": "quorum",
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-exchange": self.dead_letters,
                "x-dead-letter-routing-key": self.llm_dead,
                "x-dead-letter-strategy": "at-least-once",
                **(extra or {}),
            },
            bindings=((self.tasks, key),),
        )

    def backoff(self, queue: str) -> str:
        """Where a message waits after a transient failure, before it returns to `queue`."""
        return f"{queue}.backoff"

    def _backoff_queue(self, queue: str) -> Queue:
        # Published to through the default exchange; dead-letters back to `queue` on expiry.
        return Queue(
            self.backoff(queue),
            {
                "x-queue-type": "quorum",
                "x-message-ttl": self.backoff_ms,
                "x-overflow": "reject-publish",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
                "x-dead-letter-strategy": "at-least-once",
            },
        )

    def _door(self, name: str, dead: str, binding: tuple[str, str]) -> tuple[Queue, Queue]:
        """An entry queue for messages from outside, and where the invalid ones are parked."""
        return (
            Queue(
                name,
                {
                    "x-queue-type": "quorum",
                    "x-delivery-limit": self.delivery_limit,
                    "x-dead-letter-exchange": self.dead_letters,
                    "x-dead-letter-routing-key": dead,
                },
                bindings=(binding,),
            ),
            Queue(dead, {"x-queue-type": "quorum"}, bindings=((self.dead_letters, dead),)),
        )


def topology_for(settings: Settings) -> Topology:
    """The topology of `settings`; one webhook wait queue per step of the retry schedule."""
    return Topology(
        ns=settings.namespace,
        delivery_limit=settings.extract_delivery_limit,
        max_queue_length=settings.max_queue_length,
        backoff_ms=max(1, round(settings.transient_backoff_s * 1000)),
        retry_delays_ms=tuple(max(1, round(d * 1000)) for d in settings.webhook_retry_delays()),
        quorum_group_size=settings.quorum_group_size,
    )


async def declare(channel: AbstractChannel, topology: Topology) -> None:
    """Declare every exchange, queue and binding; idempotent, run by every handler at start."""
    for ex in topology.exchanges():
        await channel.declare_exchange(ex.name, ex.type, durable=True)
    for q in topology.queues():
        arguments = q.arguments
        if topology.quorum_group_size is not None and arguments.get("x-queue-type") == "quorum":
            arguments = {**arguments, "x-quorum-initial-group-size": topology.quorum_group_size}
        queue = await channel.declare_queue(q.name, durable=True, arguments=arguments)
        for exchange, key in q.bindings:
            await queue.bind(exchange, routing_key=key)


async def delete(connection: AbstractConnection, topology: Topology) -> list[str]:
    """Remove what `declare` made (tests clean up with this); returns the queues left behind.

    Right after a broker restart a quorum queue may still be starting, and the broker answers
    its deletion with NOT_FOUND (closing the channel): it is skipped, and named in the result.
    """
    left: list[str] = []
    channel = await connection.channel()
    for q in topology.queues():
        try:
            await channel.queue_delete(q.name)
        except ChannelNotFoundEntity:
            left.append(q.name)
            channel = await connection.channel()
    for ex in topology.exchanges():
        await channel.exchange_delete(ex.name)
    await channel.close()
    return left
