"""Messages of the version before: a task without the record in it is still extracted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.adapters.broker import publish
from shared.jobs.records import upload_key
from shared.models import ExtractTask, Job
from tests.conftest import running_stack
from tests.factories import make_pdf
from tests.helpers import wait_done

pytestmark = pytest.mark.integration


def test_an_old_task_message_parses_without_the_record() -> None:
    old = json.dumps({"schema": "pdfrelay.extract-task/1", "job_id": "a" * 32, "tenant": "t"})
    task = ExtractTask.model_validate_json(old)
    assert task.job is None


async def test_an_old_task_without_the_record_is_extracted(make_settings: Any) -> None:
    async with running_stack(make_settings()) as stack:
        ctx = stack.ctx
        job = Job(job_id="b" * 32, source_key=upload_key("b" * 32))
        await ctx.storage.put_bytes(
            upload_key(job.job_id), make_pdf(["from an older ingress"]), "application/pdf"
        )
        await ctx.jobs.create(job)
        # What an ingress of the version before publishes: no `job` field at all.
        body = json.dumps({"schema": "pdfrelay.extract-task/1", "job_id": job.job_id}).encode()
        await publish(ctx.channel, ctx.topology.tasks, ctx.topology.TASK_KEY, body)
        done = await wait_done(stack, job.job_id)
        assert done["status"] == "completed", done
        resp = await stack.client.get(f"/v1/jobs/{job.job_id}/result")
        assert "from an older ingress" in (await resp.json())["pages"][0]["text"]


async def test_a_task_without_the_records_version_is_extracted(make_settings: Any) -> None:
    """An ingress of the version before puts the record in the task but no version header: the
    handler reads the record's version before its ending (one GET), and the job ends."""
    async with running_stack(make_settings()) as stack:
        ctx = stack.ctx
        job = Job(job_id="c" * 32, source_key=upload_key("c" * 32))
        await ctx.storage.put_bytes(
            upload_key(job.job_id), make_pdf(["no version header"]), "application/pdf"
        )
        await ctx.jobs.create(job)
        task = ExtractTask(job_id=job.job_id, job=job)
        await publish(ctx.channel, ctx.topology.tasks, ctx.topology.TASK_KEY, task)
        done = await wait_done(stack, job.job_id)
        assert done["status"] == "completed", done
