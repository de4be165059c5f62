"""The per-door table: what each door adds to a job's terminal announcement.

The core announces every ending the same way (event, webhook, reply); a door that needs more
says so here, and reaches the core through `Context.doors` (the entry points pass `DOORS`).
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.doors.outbox import write_outbox
from shared.doors.seed_payloads import webhook_body
from shared.models import Job
from shared.runtime.context import Context, DoorAnnouncements


class ObjectDrop:
    """The object drop: the outcome lands in `outbox/` beside the dropped name."""

    async def ended(self, ctx: Context, job: Job) -> None:
        await write_outbox(ctx.storage, job)

    async def webhook_body(self, ctx: Context, job: Job) -> str | None:
        return None


class Seed:
    """The Secretary's clients get the terminal payload they were written against."""

    async def ended(self, ctx: Context, job: Job) -> None:
        return None

    async def webhook_body(self, ctx: Context, job: Job) -> str | None:
        return await webhook_body(ctx, job)


DOORS: Mapping[str, DoorAnnouncements] = {"object-drop": ObjectDrop(), "seed": Seed()}
