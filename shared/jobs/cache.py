"""The result cache: the same PDF bytes with the same options reuse a stored result.

A finished extraction writes a small manifest, `cache/{key}.json`, naming the objects that hold
its result. A later job with the same key copies those objects server-side into its own keys
(no worker, no download of the PDF when its sha256 is known) and points the manifest at itself,
so the entry lives as long as its newest job. A manifest whose objects retention has deleted is
a miss, and the extraction that follows writes a fresh one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import ConfigDict, Field, ValidationError

from shared.adapters.digests import file_digest
from shared.adapters.storage import ObjectNotFound
from shared.errors import TransientError
from shared.extraction.base import EXTRACTOR_VERSION
from shared.jobs.records import artifact_key, result_key
from shared.models import (
    Artifact,
    ExtractionResult,
    ExtractOptions,
    Frozen,
    Job,
    JobResultSummary,
)
from shared.runtime.context import Context

log = logging.getLogger(__name__)

CACHE_PREFIX = "cache/"


def manifest_key(key: str) -> str:
    return f"{CACHE_PREFIX}{key}.json"


class CacheManifest(Frozen):
    """What `cache/{key}.json` holds: where one job stored the result for this key."""

    schema_: Literal["pdfrelay.cache/1"] = Field(default="pdfrelay.cache/1", alias="schema")
    job_id: str
    result_key: str
    result_size: int
    result_sha256: str
    page_count: int
    pages_extracted: int
    warnings: tuple[str, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    """Stored at `artifact_key(job_id, name)`."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


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
    """The job's cache key (also after a miss: `remember` stores the new result under it)."""
    hit: JobResultSummary | None
    """The job's result, already copied into its own keys; None: extract."""


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
    hit = None if job.options.force_refresh else await _reuse(ctx, key, job)
    if hit is None and not fetched:
        await fetch()
    return Lookup(key=key, hit=hit)


async def _reuse(ctx: Context, key: str, job: Job) -> JobResultSummary | None:
    try:
        raw = await ctx.storage.get_bytes(manifest_key(key))
    except ObjectNotFound:
        return None
    try:
        entry = CacheManifest.model_validate_json(raw)
    except ValidationError:
        log.warning("cache entry %s is not a manifest; extracting again", key)
        return None
    if entry.page_count > ctx.settings.max_pages:
        return None  # the limit was lowered since: let the engine refuse the document
    if entry.job_id == job.job_id:
        # A redelivery of the job the entry was written for: its objects are in place already
        # (and S3 refuses to copy an object onto itself).
        try:
            await ctx.storage.stat(entry.result_key)
        except ObjectNotFound:
            return None
        return _summary(entry)
    try:
        for art in entry.artifacts:
            await ctx.storage.copy(
                artifact_key(entry.job_id, art.name), artifact_key(job.job_id, art.name)
            )
        # The result last: a job's result.json exists only once its artifacts do.
        # Rewritten, not copied: the result names the job it answers.
        result = ExtractionResult.model_validate_json(await ctx.storage.get_bytes(entry.result_key))
        result.job_id = job.job_id
        await ctx.storage.put_bytes(
            result_key(job.job_id),
            result.model_dump_json(by_alias=True).encode(),
            "application/json",
        )
    except ObjectNotFound:
        log.info("cache entry %s: job %s's result is gone; extracting again", key, entry.job_id)
        return None
    # Point the entry at the newest copy, so it outlives the job it was first made for.
    newest = {"job_id": job.job_id, "result_key": result_key(job.job_id)}
    await _write(ctx, key, entry.model_copy(update=newest))
    ctx.metrics.cache_hits.inc()
    log.info("job %s answered from the cache (result of job %s)", job.job_id, entry.job_id)
    return _summary(entry)


def _summary(entry: CacheManifest) -> JobResultSummary:
    return JobResultSummary(
        page_count=entry.page_count,
        pages_extracted=entry.pages_extracted,
        artifacts=entry.artifacts,
        warnings=entry.warnings,
        cached=True,
    )


async def remember(
    ctx: Context,
    key: str,
    job_id: str,
    summary: JobResultSummary,
    result_path: str,
    digest_of_result: tuple[int, str] | None = None,
) -> None:
    """Record a finished extraction's stored result under `key` (replacing any older entry);
    `digest_of_result`: its (size, sha256) when the worker computed them already."""
    if digest_of_result is None:
        digest_of_result = await asyncio.to_thread(file_digest, result_path)
    size, digest = digest_of_result
    entry = CacheManifest(
        job_id=job_id,
        result_key=result_key(job_id),
        result_size=size,
        result_sha256=digest,
        page_count=summary.page_count,
        pages_extracted=summary.pages_extracted,
        warnings=summary.warnings,
        artifacts=summary.artifacts,
    )
    await _write(ctx, key, entry)


async def _write(ctx: Context, key: str, entry: CacheManifest) -> None:
    try:
        await ctx.storage.put_bytes(
            manifest_key(key), entry.model_dump_json(by_alias=True).encode()
        )
    except TransientError as exc:
        # The job's own result is stored; without the entry a later job merely extracts again.
        log.warning("cache entry %s not written: %s", key, exc.message)
