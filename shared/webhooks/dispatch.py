"""Webhook dispatch: one signed attempt, the retry ladder through the broker, delivery states.

A delivery message carries its attempt count in our own header. A failed attempt is
republished to the wait queue of the next step of the schedule (a TTL queue that
dead-letters back to the dispatch queue); after the last step, or on `410 Gone` or an SSRF
refusal, it is parked in the dead-letter queue, from which `pdfrelay dlq replay` takes it back.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
from aio_pika.abc import AbstractIncomingMessage, HeadersType

from shared.models import WebhookDelivery, WebhookState, WebhookStateUpdate, utcnow
from shared.runtime.context import Context
from shared.webhooks.delivery import Attempt, build_headers, deliver
from shared.webhooks.retry import with_jitter
from shared.webhooks.sealing import Sealer
from shared.webhooks.ssrf import SsrfPolicy
from shared.webhooks.statelog import StateLog

ATTEMPT_HEADER = "x-pdfrelay-attempt"
"""Attempts already made; absent on a fresh (or replayed) delivery."""
REASON_HEADER = "x-pdfrelay-dead-reason"
ERROR_HEADER = "x-pdfrelay-last-error"
STATUS_HEADER = "x-pdfrelay-last-status"

JITTER = 0.1
"""Relative spread of the waits, downward only: a message's TTL cannot outlast its queue's."""
PROGRESS_EVENT = "job.progress"


def attempts_made(message: AbstractIncomingMessage) -> int:
    """The attempt count our own header carries (0 when absent or unreadable)."""
    value = (message.headers or {}).get(ATTEMPT_HEADER)
    return value if isinstance(value, int) and value > 0 else 0


@dataclass(frozen=True)
class Ladder:
    """The retry schedule: which wait queue (step) comes next, and for how long."""

    delays: tuple[float, ...]

    @property
    def longest(self) -> float:
        return max(self.delays)

    def next_wait(
        self, attempts: int, retry_after_s: float | None = None, rng: random.Random | None = None
    ) -> tuple[int, float] | None:
        """The step and wait (seconds) before the next attempt, or None to give up.

        Args:
            attempts: Attempts made so far (at least 1).
            retry_after_s: The receiver's `Retry-After`, if it sent one.
            rng: The random source for the jitter.

        Returns:
            ``(step, wait_s)`` with ``wait_s <= delays[step]``, or None after the last step.
        """
        if attempts > len(self.delays):
            return None
        step = attempts - 1
        if retry_after_s is not None and retry_after_s > self.delays[step]:
            # The shortest wait queue at least as long as the receiver asked (the longest one
            # when none is): Retry-After can slow the ladder down, never past its bounds.
            fits = [i for i, d in enumerate(self.delays) if d >= retry_after_s]
            pool = fits or range(len(self.delays))
            pick = min if fits else max
            step = pick(pool, key=lambda i: self.delays[i])
        delay = self.delays[step]
        wait = with_jitter(delay * (1 - JITTER / 2), JITTER / 2, rng)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, delay))
        return step, min(wait, delay)


@dataclass(frozen=True)
class Dispatcher:
    """What the webhooks handler holds: the HTTP session, SSRF policy, secrets, ladder and
    the log that takes delivery states to S3."""

    ctx: Context
    session: aiohttp.ClientSession
    policy: SsrfPolicy
    secrets: tuple[str, ...]
    sealer: Sealer
    ladder: Ladder
    states: StateLog

    async def attempt(self, delivery: WebhookDelivery) -> Attempt:
        """One signed POST; a fresh `webhook-timestamp`, the stable `webhook-id`."""
        body = delivery.body.encode()
        try:
            headers = build_headers(
                delivery.event_id, int(time.time()), body, self.secrets, delivery.token
            )
        except ValueError as exc:
            # A token with control characters cannot be sent, now or later.
            return Attempt("refused", error=str(exc))
        return await deliver(
            self.session,
            self.policy,
            delivery.url,
            body,
            headers,
            self.ctx.settings.webhook_timeout_s,
            max_retry_after_s=self.ladder.longest,
        )

    async def record(self, delivery: WebhookDelivery, state: WebhookState) -> None:
        """Log the job's webhook state, with the delivery sealed in it (for redelivery); it
        reaches S3 behind the deliveries (shared/webhooks/statelog.py)."""
        sealed = self.sealer.seal(
            delivery.model_dump_json(by_alias=True).encode(), delivery.job_id.encode()
        )
        await self.states.append(
            WebhookStateUpdate(job_id=delivery.job_id, state=state, sealed=sealed)
        )

    def open_sealed(self, job_id: str, sealed: str) -> WebhookDelivery:
        """The delivery `record` sealed. Raises ValueError if no current secret opens it."""
        raw = self.sealer.open(sealed, job_id.encode())
        return WebhookDelivery.model_validate_json(raw)

    async def retry_later(
        self, delivery: WebhookDelivery, attempts: int, step: int, wait_s: float
    ) -> None:
        """Park the delivery in the wait queue of `step`; it comes back after `wait_s`."""
        topo = self.ctx.topology
        await self.ctx.broker.publish(
            topo.webhooks_exchange,
            topo.webhook_retry(step),
            delivery,
            message_id=delivery.event_id,
            headers={ATTEMPT_HEADER: attempts, "job_id": delivery.job_id},
            expiration=wait_s,
        )

    async def park(self, delivery: WebhookDelivery, attempts: int, result: Attempt) -> None:
        """Put the delivery in the dead-letter queue, with why, for `pdfrelay dlq`."""
        headers: HeadersType = {
            ATTEMPT_HEADER: attempts,
            "job_id": delivery.job_id,
            REASON_HEADER: result.outcome,
            ERROR_HEADER: result.error or "",
        }
        if result.status is not None:
            headers[STATUS_HEADER] = result.status
        topo = self.ctx.topology
        await self.ctx.broker.publish(
            topo.dead_letters,
            topo.webhooks_dead,
            delivery,
            message_id=delivery.event_id,
            headers=headers,
        )


async def enqueue(ctx: Context, delivery: WebhookDelivery) -> None:
    """Send a delivery to the dispatch queue with a fresh attempt count: its first attempt, or
    its redelivery."""
    await ctx.broker.publish(
        ctx.topology.webhooks_exchange,
        ctx.topology.webhooks,
        delivery,
        message_id=delivery.event_id,
        headers={"job_id": delivery.job_id},
    )


def next_state(
    delivery: WebhookDelivery,
    attempts: int,
    result: Attempt,
    wait_s: float | None,
) -> WebhookState:
    """The job's webhook state after an attempt (`wait_s` None: no further attempt)."""
    if result.outcome == "delivered":
        return WebhookState(
            state="delivered",
            url=delivery.url,
            attempts=attempts,
            last_status=result.status,
            delivered_at=utcnow(),
        )
    return WebhookState(
        state="retrying" if wait_s is not None else "dead",
        url=delivery.url,
        attempts=attempts,
        last_status=result.status,
        last_error=result.error,
        next_attempt_at=utcnow() + timedelta(seconds=wait_s) if wait_s is not None else None,
    )


def dispatcher_secrets(raw: Sequence[str]) -> tuple[str, ...]:
    """Validate the signing secrets at start-up (never echoing them)."""
    secrets = tuple(raw)
    if not secrets:
        raise ValueError("PDFRELAY_WEBHOOK_SECRET is not set")
    Sealer(secrets)  # decodes every secret: a malformed one fails here, not on the first send
    return secrets
