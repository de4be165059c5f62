"""The result cache: the same PDF bytes with the same options reuse a stored result.

An extraction that can be cached stores its result document under its cache key,
`results/c-{key}/{job_id}.json`, with the job's result summary (pages, warnings, artifacts) in
the object's metadata. That name is the cache entry: a later job with the same key finds it with
one listing (no manifest to read or write), copies the artifacts server-side into its own keys
(no worker, no download of the PDF when its sha256 is known) and stores its own copy of the
result under the same key, so the entry lives as long as its newest job. An entry retention has
deleted is simply not listed: a miss, and the extraction that follows stores a fresh one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from shared.adapters.digests import file_digest
from shared.adapters.storage import ObjectInfo, ObjectNotFound
from shared.extraction.base import EXTRACTOR_VERSION
from shared.jobs.records import artifact_key
from shared.models import (
    LLM_OUTPUT,
    Artifact,
    ExtractionResult,
    ExtractOptions,
    Frozen,
    Job,
    JobResultSummary,
)
from shared.runtime.context import Context

if TYPE_CHECKING:  # the worker pool loads the engine: not in this module's processes
    from shared.extraction.pool import WorkOutput

log = logging.getLogger(__name__)

CACHE_PREFIX = "results/c-"
SUMMARY_META = "pdfrelay-summary"
"""The user metadata (`x-amz-meta-pdfrelay-summary`) of a cached result: its `CachedSummary`."""
MAX_SUMMARY_META = 1536
"""S3 allows 2 KiB of user metadata per object; a larger summary (many artifacts) is stored
beside the result instead, at `summary_key`."""


def entry_prefix(key: str) -> str:
    return f"{CACHE_PREFIX}{key}/"


def entry_key(key: str, job_id: str) -> str:
    """Where a cached extraction's result is stored: the job's result and the cache entry."""
    return f"{entry_prefix(key)}{job_id}.json"


def summary_key(job_id: str) -> str:
    """A summary too large for the result's metadata (under the job's own prefix)."""
    return f"results/{job_id}/cache-summary.json"


class CachedSummary(Frozen):
    """What a later job with the same key needs of the entry besides the result document."""

    page_count: int
    pages_extracted: int
    warnings: tuple[str, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    """Stored at `artifact_key(job_id, name)` of the entry's job."""


def normalise_pages(spec: str | None) -> str | None:
    """`pages` as sorted, merged ranges ("7,1-3,2-4" → "1-4,7"); every page ("1-") → None.

    A spec the engine would refuse is returned unchanged (failures are never cached).
    """
    if spec is None:
        return None
    ranges: list[tuple[int, int | None]] = []
    for part in spec.replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            return spec
        start = int(first)
        end = int(last) if last else (None if dash else start)
        if start < 1 or (end is not None and end < start):
            return spec
        ranges.append((start, end))
    ranges.sort(key=lambda r: r[0])
    merged: list[tuple[int, int | None]] = []
    for start, end in ranges:
        if merged:
            prev_start, prev_end = merged[-1]
            if prev_end is None or start <= prev_end + 1:
                wider = None if prev_end is None or end is None else max(prev_end, end)
                merged[-1] = (prev_start, wider)
                continue
        merged.append((start, end))
    if merged == [(1, None)]:
        return None
    return ",".join(f"{s}-" if e is None else str(s) if s == e else f"{s}-{e}" for s, e in merged)


def normalised_options(options: ExtractOptions) -> dict[str, object]:
    """The options that can change the result, in one canonical form.

    Like the engine: `ocr` and `ocr_language` only matter when text or Markdown is asked for
    (otherwise no page is OCRed), `image_dpi` only for `page_images`. `force_refresh` never.
    """
    outputs = sorted(set(options.outputs))
    needs_text = not {"text", "markdown", "blocks", "chunks"}.isdisjoint(outputs)
    ocr = options.ocr if needs_text else "never"
    return {
        "outputs": outputs,
        "pages": normalise_pages(options.pages),
        "ocr": ocr,
        "ocr_language": options.ocr_language if ocr != "never" else None,
        "image_dpi": options.image_dpi if "page_images" in outputs else None,
        "chunking": options.chunking.model_dump() if "chunks" in outputs else None,
    }


def cache_key(source_sha256: str, options: ExtractOptions, tenant: str) -> str:
    """sha256 over the PDF's sha256, the normalised options, the extractor version and the
    tenant (a shared entry would tell one tenant that another has had the same file)."""
    material = {
        "extractor": EXTRACTOR_VERSION,
        "options": normalised_options(options),
        "sha256": source_sha256.lower(),
        "tenant": tenant,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Lookup:
    key: str
    """The job's cache key (also after a miss: `store` stores the new result under it)."""
    hit: JobResultSummary | None
    """The job's result, already copied into its own keys (at `entry_key(key, job_id)`);
    None: extract."""
    sha256: str
    """The source's sha256 (from the record, or taken here after the fetch)."""


async def lookup(
    ctx: Context, job: Job, fetch: Callable[[], Awaitable[None]], pdf_path: str
) -> Lookup:
    """Answer the job from the cache, or fetch its source to `pdf_path` for an extraction.

    With the upload's sha256 in the record the cache is asked before anything is downloaded;
    otherwise (S3 and URL sources) the source is fetched and hashed first.
    """
    fetched = job.source_sha256 is None
    if job.source_sha256 is not None:
        digest = job.source_sha256
    else:
        await fetch()
        _, digest = await asyncio.to_thread(file_digest, pdf_path)
    key = cache_key(digest, job.options, job.tenant)
    # A job for a language model is never answered whole: its pages (and its template's answer)
    # are cached one by one, by image or text, model and prompt (shared/jobs/llm.py), which this
    # key does not know.
    options = job.options
    fresh = options.force_refresh or LLM_OUTPUT in options.outputs or options.template is not None
    hit = None if fresh else await _reuse(ctx, key, job)
    if hit is None and not fetched:
        await fetch()
    return Lookup(key=key, hit=hit, sha256=digest)


def _job_of(info: ObjectInfo) -> str:
    return info.key.rsplit("/", 1)[-1].removesuffix(".json")


async def _reuse(ctx: Context, key: str, job: Job) -> JobResultSummary | None:
    entries = await ctx.storage.list_objects(entry_prefix(key))
    if not entries:
        return None
    own = entry_key(key, job.job_id)
    if any(e.key == own for e in entries):
        # A redelivery of the job the entry was written for: its objects are in place already
        # (and S3 refuses to copy an object onto itself).
        try:
            meta = (await ctx.storage.stat(own)).metadata
        except ObjectNotFound:
            return None
        found = await _summary_of(ctx, job.job_id, meta.get(f"x-amz-meta-{SUMMARY_META}"))
        return None if found is None else _hit(found)
    newest = max(entries, key=lambda e: (e.last_modified is not None, e.last_modified, e.key))
    source_job = _job_of(newest)
    try:
        raw, meta = await ctx.storage.get_with_metadata(newest.key)
        entry = await _summary_of(ctx, source_job, meta.get(SUMMARY_META))
        if entry is None:
            return None
        if entry.page_count > ctx.settings.max_pages:
            return None  # the limit was lowered since: let the engine refuse the document
        for art in entry.artifacts:
            await ctx.storage.copy(
                artifact_key(source_job, art.name), artifact_key(job.job_id, art.name)
            )
        # The result last: a job's result exists only once its artifacts do.
        # Rewritten, not copied: the result names the job it answers.
        result = ExtractionResult.model_validate_json(raw)
        result.job_id = job.job_id
        await _put(ctx, key, job.job_id, entry, result.model_dump_json(by_alias=True).encode())
    except ObjectNotFound:
        log.info("cache entry %s: job %s's result is gone; extracting again", key, source_job)
        return None
    ctx.metrics.cache_hits.inc()
    log.info("job %s answered from the cache (result of job %s)", job.job_id, source_job)
    return _hit(entry)


async def _summary_of(ctx: Context, job_id: str, meta: str | None) -> CachedSummary | None:
    """The entry's summary, from its metadata or (too large for that) from `summary_key`."""
    try:
        if meta is not None:
            return CachedSummary.model_validate_json(base64.urlsafe_b64decode(meta))
        return CachedSummary.model_validate_json(await ctx.storage.get_bytes(summary_key(job_id)))
    except ObjectNotFound:
        return None
    except (ValidationError, ValueError):
        log.warning("the cache entry of job %s has no valid summary; extracting again", job_id)
        return None


def _hit(entry: CachedSummary) -> JobResultSummary:
    return JobResultSummary(
        page_count=entry.page_count,
        pages_extracted=entry.pages_extracted,
        artifacts=entry.artifacts,
        warnings=entry.warnings,
        cached=True,
    )


async def store(
    ctx: Context, key: str, job_id: str, summary: JobResultSummary, result_path: str
) -> str:
    """Store a finished extraction's result under `key` (its cache entry); returns its S3 key.
    Its artifacts must be stored already (a listed entry is complete)."""
    entry = CachedSummary(
        page_count=summary.page_count,
        pages_extracted=summary.pages_extracted,
        warnings=summary.warnings,
        artifacts=summary.artifacts,
    )
    return await _put(ctx, key, job_id, entry, result_path)


async def _put(
    ctx: Context, key: str, job_id: str, entry: CachedSummary, result: bytes | str
) -> str:
    """`result`: the document, or the path of a file holding it."""
    encoded = base64.urlsafe_b64encode(entry.model_dump_json().encode()).decode()
    if len(encoded) <= MAX_SUMMARY_META:
        metadata = {SUMMARY_META: encoded}
    else:
        metadata = {}
        await ctx.storage.put_bytes(summary_key(job_id), entry.model_dump_json().encode())
    target = entry_key(key, job_id)
    if isinstance(result, bytes):
        await ctx.storage.put_bytes(target, result, "application/json", metadata=metadata)
    else:
        await ctx.storage.put_file(target, result, "application/json", metadata)
    return target


async def store_result(
    ctx: Context, job: Job, out: WorkOutput, key: str
) -> tuple[JobResultSummary, str]:
    """A worker's outputs stored: the artifacts first, then the result under its cache key
    `key` (which makes it an entry); returns the job's summary and the result's key."""
    artifacts: list[Artifact] = []
    for art in out.artifacts:
        await ctx.storage.put_file(artifact_key(job.job_id, art.name), art.path, art.content_type)
        known = out.digests.get(art.path)
        if known is None:
            known = await asyncio.to_thread(file_digest, art.path)
        size, digest = known
        artifacts.append(
            Artifact(name=art.name, size=size, sha256=digest, content_type=art.content_type)
        )
    summary = JobResultSummary(
        page_count=out.page_count,
        pages_extracted=out.pages_extracted,
        artifacts=tuple(artifacts),
        warnings=out.warnings,
    )
    return summary, await store(ctx, key, job.job_id, summary, out.result_path)
