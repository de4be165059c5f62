"""The per-door table: what each door adds to a job's terminal announcement.

The core announces every ending the same way (event, webhook, reply); a door that needs more
says so here, and reaches the core through `Context.doors` (the entry points pass `DOORS`).
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.doors.outbox import outbox_key, write_outbox
from shared.doors.seed_payloads import webhook_body
from shared.errors import ErrorCode, PermanentError
from shared.models import Job
from shared.runtime.context import Context, DoorAnnouncements


class ObjectDrop:
    """The object drop: the outcome lands in `outbox/` beside the dropped name, as the job's
    target of kind `outbox` (delivered after the ending, like every target: `job.delivered`)."""

    async def ended(self, ctx: Context, job: Job) -> None:
        if job.target is None:
            # Accepted by the version before (no target named): its outbox is written here,
            # before the event, as it was then.
            await write_outbox(ctx.storage, job)

    async def webhook_body(self, ctx: Context, job: Job) -> str | None:
        return None

    async def write_outbox(self, ctx: Context, job: Job) -> tuple[str, int]:
        assert job.source_key is not None
        objects = await write_outbox(ctx.storage, job)
        return f"s3://{ctx.settings.s3_bucket}/{outbox_key(job.source_key, '')}", objects


class Seed:
    """The Secretary's clients get the terminal payload they were written against."""

    async def ended(self, ctx: Context, job: Job) -> None:
        return None

    async def webhook_body(self, ctx: Context, job: Job) -> str | None:
        return await webhook_body(ctx, job)

    async def write_outbox(self, ctx: Context, job: Job) -> tuple[str, int]:
        raise PermanentError("the seed door has no outbox", ErrorCode.TARGET_NOT_ALLOWED)


DOORS: Mapping[str, DoorAnnouncements] = {"object-drop": ObjectDrop(), "seed": Seed()}
