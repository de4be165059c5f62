"""One job per idempotent request, whichever process submits it and wherever it was cut off.

The soak (issue 21) once made two jobs of one broker message: a broker node died, the message
went back to the queue and to the second ingress while the first was still making its job;
both looked the key up, found nothing, and each made one. Here two `Submitter`s stand for two
processes (each has its own in-process lock), against the real S3 server and broker.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from shared.errors import ErrorCode, PermanentError
from shared.intake.submit import Submission, Submitter, request_digest
from shared.jobs import lifecycle
from shared.jobs.records import IdempotencyClaim, record_key
from shared.models import ExtractOptions, Job, new_job_id
from tests.conftest import Stack
from tests.factories import make_pdf
from tests.helpers import wait_done

pytestmark = pytest.mark.integration


def _request(n: int, **kw: object) -> Submission:
    return Submission(
        tenant="default",
        door="broker",
        options=ExtractOptions(),
        s3_key=f"shared/in-{n}.pdf",
        idempotency_key=f"msg-{n}",
        **kw,  # type: ignore[arg-type]
    )


async def _records(stack: Stack) -> list[str]:
    return [k for k in await stack.ctx.storage.list_keys("index/") if k.endswith(".json")]


async def test_one_message_submitted_by_two_processes_at_once_is_one_job(stack: Stack) -> None:
    for n in range(4):
        await stack.ctx.storage.put_bytes(f"shared/in-{n}.pdf", make_pdf([f"message {n}"]))
    first, second = Submitter(), Submitter()
    pairs = await asyncio.gather(
        *(
            asyncio.gather(
                first.submit(stack.ctx, _request(n)),
                second.submit(stack.ctx, _request(n, recover=True)),
            )
            for n in range(4)
        )
    )
    for (a, _), (b, _) in pairs:
        assert a.job_id == b.job_id
    assert len(await _records(stack)) == 4
    for (job, _), _ in pairs:
        assert (await wait_done(stack, job.job_id))["status"] == "completed"
    # Still one job each when the message comes once more, after the jobs ended.
    again, created = await Submitter().submit(stack.ctx, _request(0, recover=True))
    assert (again.job_id, created) == (pairs[0][0][0].job_id, False)
    assert len(await _records(stack)) == 4


async def test_a_submitter_cut_off_after_binding_the_key_leaves_its_job_to_the_next(
    stack: Stack,
) -> None:
    """Cut off after binding the key: the repeat makes the job under the bound id."""
    await stack.ctx.storage.put_bytes("shared/in-0.pdf", make_pdf(["bound, not stored"]))
    sub = _request(0, recover=True)
    bound = IdempotencyClaim(job_id=new_job_id(), request=request_digest(sub))
    assert await stack.ctx.jobs.claim_idempotent("default", "broker:msg-0", bound) is None
    job, created = await Submitter().submit(stack.ctx, sub)
    assert (job.job_id, created) == (bound.job_id, True)
    assert (await wait_done(stack, job.job_id))["status"] == "completed"


async def test_a_submitter_cut_off_before_publishing_the_task_leaves_it_to_a_redelivery(
    stack: Stack,
) -> None:
    """Cut off between storing the record and publishing the task: a plain repeat finds the
    job; a redelivered message (`recover`) publishes its task, and the job ends."""
    await stack.ctx.storage.put_bytes("shared/in-0.pdf", make_pdf(["stored, never queued"]))
    sub = _request(0)
    job = Job(
        job_id=new_job_id(),
        tenant="default",
        door="broker",
        options=sub.options,
        source_key=sub.s3_key,
    )
    claim = IdempotencyClaim(job_id=job.job_id, request=request_digest(sub))
    assert await stack.ctx.jobs.claim_idempotent("default", "broker:msg-0", claim) is None
    await lifecycle.accept(stack.ctx, job)

    found, created = await Submitter().submit(stack.ctx, sub)
    assert (found.job_id, created, found.status.value) == (job.job_id, False, "queued")
    found, created = await Submitter().submit(stack.ctx, _request(0, recover=True))
    assert (found.job_id, created) == (job.job_id, False)
    assert (await wait_done(stack, job.job_id))["status"] == "completed"


async def test_another_request_with_a_bound_key_is_refused_before_anything_is_stored(
    stack: Stack,
) -> None:
    await stack.ctx.storage.put_bytes("shared/in-0.pdf", make_pdf(["first"]))
    await stack.ctx.storage.put_bytes("shared/in-1.pdf", make_pdf(["second"]))
    job, _ = await Submitter().submit(stack.ctx, _request(0))
    other = replace(_request(1), idempotency_key="msg-0")
    with pytest.raises(PermanentError, match="different request") as refused:
        await Submitter().submit(stack.ctx, other)
    assert refused.value.code == ErrorCode.IDEMPOTENCY_MISMATCH
    assert await _records(stack) == [record_key("default", job.job_id)]
