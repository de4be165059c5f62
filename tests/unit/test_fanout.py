"""Range planning and merging of page-range parts, without a broker."""

from __future__ import annotations

from handlers.fanout import RangePart, _range_outputs, merge_parts, ranges
from shared.models import ExtractionResult, Output, PageText


def _part(first: int, last: int, **extra: object) -> RangePart:
    pages = [PageText(number=n, text=f"p{n}") for n in range(first, last + 1)]
    result = ExtractionResult(page_count=7, pages=pages, markdown=f"md {first}-{last}\n", **extra)
    return RangePart(first=first, last=last, pages_processed=len(pages), result=result)


def test_ranges_cover_the_document() -> None:
    assert ranges(7, 3) == [(1, 3), (4, 6), (7, 7)]
    assert ranges(6, 3) == [(1, 3), (4, 6)]


def test_merge_orders_pages_and_keeps_whole_document_metadata() -> None:
    first = _part(1, 3, metadata={"title": "T"}, warnings=["w"])
    merged = merge_parts([_part(7, 7, warnings=["w", "x"]), first, _part(4, 6)])
    assert [p.number for p in merged.pages] == list(range(1, 8))
    assert merged.markdown == "md 1-3\n\nmd 4-6\n\nmd 7-7\n"
    assert merged.metadata == {"title": "T"}
    assert merged.warnings == ["w", "x"]
    assert merged.page_count == 7


def test_only_the_first_range_builds_the_metadata() -> None:
    outputs: tuple[Output, ...] = ("text", "markdown", "metadata")
    assert _range_outputs(outputs, 1) == outputs
    assert _range_outputs(outputs, 101) == ("text", "markdown")
    assert _range_outputs(("metadata",), 101) == ("metadata",)
