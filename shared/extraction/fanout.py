"""Page-range fan-out, the pure part: the ranges of a document, the part each range leaves,
and merging the parts in page order into one result. No broker, storage or job record here:
shared/jobs/fanout.py runs the ranges and the merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.extraction import ExtractLimits
from shared.extraction.layout import (
    LayoutOutputs,
    markdown_pages,
)
from shared.extraction.markdown import MarkdownBuilder
from shared.extraction.metadata import merge_page_parts
from shared.models import (
    ExtractionResult,
    Frozen,
    PageText,
)

FANOUT_OUTPUTS = frozenset({"text", "markdown", "metadata", "blocks", "chunks"})
"""Outputs a merge can rebuild from the parts; jobs asking for more run whole."""


class RangePart(Frozen):
    """What one range task leaves at `parts_prefix(job_id)`: its pages' ExtractionResult."""

    first: int
    last: int
    pages_processed: int
    result: ExtractionResult
    markdown_state: dict[str, Any] | None = None
    """The range's Markdown, not yet rendered (`MarkdownBuilder.state()`)."""


def parts_prefix(job_id: str) -> str:
    return f"results/{job_id}/parts/"


def part_key(job_id: str, first: int, last: int) -> str:
    return f"{parts_prefix(job_id)}{first:06d}-{last:06d}.json"


EMPTY_PART_RESULT = ExtractionResult(page_count=0)


def ranges(page_count: int, size: int) -> list[tuple[int, int]]:
    """1-based inclusive (first, last) ranges of at most `size` pages covering the document."""
    return [(a, min(a + size - 1, page_count)) for a in range(1, page_count + 1, size)]


def read_part(
    first: int, last: int, processed: int, result_path: str, state_path: str | None
) -> RangePart:
    raw = Path(result_path).read_bytes()
    markdown = Path(state_path).read_bytes() if state_path else None
    return RangePart(
        first=first,
        last=last,
        pages_processed=processed,
        result=ExtractionResult.model_validate_json(raw),
        markdown_state=json.loads(markdown) if markdown else None,
    )


def _merged_markdown(parts: list[RangePart]) -> str | None:
    """The parts' Markdown as one document, from their builder states; when a part has none (a
    rolling upgrade: written by a version that rendered its range), each part's own Markdown
    joined in page order, so no range's Markdown is lost."""
    parts = [p for p in parts if not _past_the_end(p)]
    states = [p.markdown_state for p in parts if p.markdown_state is not None]
    if len(states) == len(parts):
        # Rendered as one document: headings, running heads and body size are whole-document.
        return MarkdownBuilder.from_states(states).render() if states else None
    pieces = [
        p.result.markdown
        if p.result.markdown is not None
        else MarkdownBuilder.from_states([p.markdown_state]).render()
        if p.markdown_state is not None
        else None
        for p in parts
    ]
    if all(piece is None for piece in pieces):
        return None
    joined = "\n\n".join(piece.strip("\n") for piece in pieces if piece and piece.strip())
    return joined + "\n" if joined else ""


def _past_the_end(part: RangePart) -> bool:
    """An empty part (the page count was estimated high): it has no Markdown to give."""
    return part.pages_processed == 0 and part.markdown_state is None and not part.result.pages


def builder_states(parts: list[RangePart]) -> list[dict[str, Any]] | None:
    """The parts' builder states in page order; None when a part has none (written by a
    version that rendered its range: `_merged_markdown` joins the Markdown instead)."""
    live = [p for p in sorted(parts, key=lambda p: p.first) if not _past_the_end(p)]
    states = [p.markdown_state for p in live if p.markdown_state is not None]
    return states if states and len(states) == len(live) else None


def merge_parts(parts: list[RangePart], layout: LayoutOutputs | None = None) -> ExtractionResult:
    """One result from the parts, in page order; the first part's metadata (whole-document)
    takes the per-page metadata of the others. `layout`: the parts' Markdown as
    `merged_outputs` rendered it (else rendered here)."""
    parts = sorted(parts, key=lambda p: p.first)
    head = parts[0].result
    pages: list[PageText] = [page for part in parts for page in part.result.pages]
    tables = [t for p in parts for t in (p.result.tables or [])]
    warnings = list(dict.fromkeys(w for p in parts for w in p.result.warnings))
    return ExtractionResult(
        job_id=head.job_id,
        page_count=head.page_count,
        pages=pages,
        markdown=layout.markdown if layout is not None else _merged_markdown(parts),
        # Joined Markdown (parts of other versions) has no page spans: the whole is shown.
        markdown_pages=markdown_pages(layout) if layout is not None else None,
        metadata=merge_page_parts(
            head.metadata,
            (p.result.metadata for p in parts[1:] if p.result.metadata is not None),
            ExtractLimits().max_links,
        )
        if head.metadata is not None
        else None,
        tables=tables if head.tables is not None else None,
        warnings=warnings,
    )


def parse_parts(raws: list[bytes]) -> list[RangePart]:
    return [RangePart.model_validate_json(raw) for raw in raws]
