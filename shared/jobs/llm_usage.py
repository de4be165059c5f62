"""The per-tenant token budget of the llm methods (PDFRELAY_LLM_TENANT_MONTHLY_TOKENS): each
ended llm job adds its tokens to its tenant's month; the doors refuse new llm jobs once the
month's budget is spent."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.adapters.storage import ObjectNotFound, ObjectStore
from shared.errors import ErrorCode, PermanentError
from shared.jobs.records import tenant_segment
from shared.models import Frozen, LlmUsage, utcnow
from shared.runtime.context import Context

USAGE_PREFIX = "results/llm-usage/"


def usage_key(tenant: str, at: datetime) -> str:
    """A tenant's tokens of one calendar month (UTC), for PDFRELAY_LLM_TENANT_MONTHLY_TOKENS."""
    return f"{USAGE_PREFIX}{tenant_segment(tenant)}/{at.astimezone(UTC):%Y-%m}.json"


class MonthlyUsage(Frozen):
    tokens: int = 0
    jobs: int = 0


async def month_usage(storage: ObjectStore, tenant: str, at: datetime) -> MonthlyUsage:
    try:
        return MonthlyUsage.model_validate_json(await storage.get_bytes(usage_key(tenant, at)))
    except ObjectNotFound:
        return MonthlyUsage()


async def check_budget(ctx: Context, tenant: str) -> None:
    """Raises PermanentError LLM_BUDGET_EXCEEDED (429) when the tenant's llm jobs have used
    this month's PDFRELAY_LLM_TENANT_MONTHLY_TOKENS."""
    budget = ctx.settings.llm_tenant_monthly_tokens
    if budget is None:
        return
    now = utcnow()
    used = await month_usage(ctx.storage, tenant, now)
    if used.tokens >= budget:
        raise PermanentError(
            f"this month's llm budget of {budget} tokens is spent ({used.tokens} used, "
            f"PDFRELAY_LLM_TENANT_MONTHLY_TOKENS); it renews on the 1st (UTC)",
            ErrorCode.LLM_BUDGET_EXCEEDED,
        )


async def charge(ctx: Context, tenant: str, usage: LlmUsage) -> None:
    """Add a job's tokens to its tenant's month. Only the merge queue's one consumer writes
    these, one job at a time: the read and the write cannot interleave with another's."""
    now = utcnow()
    month = await month_usage(ctx.storage, tenant, now)
    month = MonthlyUsage(
        tokens=month.tokens + usage.tokens_in + usage.tokens_out, jobs=month.jobs + 1
    )
    await ctx.storage.put_bytes(
        usage_key(tenant, now), month.model_dump_json().encode(), "application/json"
    )
