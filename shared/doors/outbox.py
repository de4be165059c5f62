"""The object-drop door's names: `inbox/<name>` in, `outbox/<name>.json|.md|.document.json|
.chunks.jsonl|.error.json` out."""

from __future__ import annotations

import json

from shared.adapters.storage import Storage
from shared.jobs.records import artifact_key, job_result_key
from shared.models import Job, JobStatus

INBOX = "inbox/"
OUTBOX = "outbox/"
OUTBOX_ARTIFACTS = (("document.json", ".document.json"), ("chunks.jsonl", ".chunks.jsonl"))
"""Artifacts copied beside the result: `outbox/<name>.document.json`, `….chunks.jsonl`."""


def outbox_key(inbox_key: str, suffix: str) -> str:
    return f"{OUTBOX}{inbox_key.removeprefix(INBOX)}{suffix}"


async def write_outbox(storage: Storage, job: Job) -> int:
    """Write a finished object-drop job's result (or its error) beside the dropped name: the
    same bytes to the same keys however often. Returns the objects written.

    Raises:
        ObjectNotFound: a stored output is gone (retention took the job).
        TransientError: storage failed.
    """
    assert job.source_key is not None
    if job.status is not JobStatus.COMPLETED:
        error = job.error.model_dump() if job.error else None
        body = {"job_id": job.job_id, "status": job.status.value, "error": error}
        await storage.put_json(outbox_key(job.source_key, ".error.json"), body)
        return 1
    raw = await storage.get_bytes(job_result_key(job))
    await storage.put_bytes(outbox_key(job.source_key, ".json"), raw)
    written = 1
    markdown = json.loads(raw).get("markdown")
    if markdown:
        await storage.put_bytes(
            outbox_key(job.source_key, ".md"), str(markdown).encode(), "text/markdown"
        )
        written += 1
    names = {a.name: a for a in (job.result.artifacts if job.result else ())}
    for name, suffix in OUTBOX_ARTIFACTS:
        if name in names:
            data = await storage.get_bytes(artifact_key(job.job_id, name))
            await storage.put_bytes(
                outbox_key(job.source_key, suffix), data, names[name].content_type
            )
            written += 1
    return written
