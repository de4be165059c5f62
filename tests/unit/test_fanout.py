"""Range planning and merging of page-range parts, without a broker."""

from __future__ import annotations

from shared.extraction.fanout import RangePart, builder_states, merge_parts, ranges
from shared.extraction.metadata import merge_page_parts
from shared.models import ExtractionResult, PageText


def _part(first: int, last: int, **extra: object) -> RangePart:
    numbers = range(first, last + 1)
    pages = [PageText(number=n, text=f"p{n}") for n in numbers]
    result = ExtractionResult(page_count=7, pages=pages, **extra)
    markdown = {
        "sizes": [[11.0, 2 * len(pages)]],
        "pages": [{"number": n, "paras": [{"kind": "p", "text": f"md {n}"}]} for n in numbers],
    }
    return RangePart(
        first=first, last=last, pages_processed=len(pages), result=result, markdown_state=markdown
    )


def test_ranges_cover_the_document() -> None:
    assert ranges(7, 3) == [(1, 3), (4, 6), (7, 7)]
    assert ranges(6, 3) == [(1, 3), (4, 6)]


def test_merge_orders_pages_markdown_and_warnings() -> None:
    first = _part(1, 3, warnings=["w"])
    merged = merge_parts([_part(7, 7, warnings=["w", "x"]), first, _part(4, 6)])
    assert [p.number for p in merged.pages] == list(range(1, 8))
    assert merged.markdown == "".join(f"md {n}\n\n" for n in range(1, 8)).rstrip("\n") + "\n"
    assert merged.metadata is None
    assert merged.warnings == ["w", "x"]
    assert merged.page_count == 7


def test_merge_adds_the_per_page_metadata_of_the_other_ranges() -> None:
    whole = {
        "title": "T",
        "pages": [{"number": 1}],
        "links": [{"page": 1}],
        "links_truncated": False,
        "internal_link_count": 1,
        "attachments": [{"name": "embedded.txt"}],
    }
    later = {
        "pages": [{"number": 2}],
        "links": [{"page": 2}, {"page": 2}],
        "links_dropped": 0,
        "internal_link_count": 2,
        "annotation_attachments": [{"name": "note.txt", "page": 2}],
    }
    merged = merge_parts([_part(2, 2, metadata=later), _part(1, 1, metadata=whole)]).metadata
    assert merged == {
        "title": "T",
        "pages": [{"number": 1}, {"number": 2}],
        "links": [{"page": 1}, {"page": 2}, {"page": 2}],
        "links_truncated": False,
        "internal_link_count": 3,
        "attachments": [{"name": "embedded.txt"}, {"name": "note.txt", "page": 2}],
    }
    assert whole["pages"] == [{"number": 1}]  # the first part's own metadata is left alone
    capped = merge_page_parts(whole, [later], max_links=2)
    assert capped["links"] == [{"page": 1}, {"page": 2}]
    assert capped["links_truncated"] is True


def test_merge_joins_per_part_markdown_when_a_part_has_no_state() -> None:
    # A rolling upgrade: the middle range was written by a version that rendered its Markdown
    # and kept no builder state; the other two by this one (state, no rendered Markdown).
    old = _part(4, 6).model_copy(update={"markdown_state": None})
    old = old.model_copy(update={"result": old.result.model_copy(update={"markdown": "old 4-6\n"})})
    merged = merge_parts([_part(7, 7), old, _part(1, 3)])
    assert merged.markdown == "md 1\n\nmd 2\n\nmd 3\n\nold 4-6\n\nmd 7\n"
    assert [p.number for p in merged.pages] == list(range(1, 8))


def test_merge_without_markdown_has_none() -> None:
    parts = [_part(1, 3).model_copy(update={"markdown_state": None}), _part(4, 6)]
    parts[1] = parts[1].model_copy(update={"markdown_state": None})
    assert merge_parts(parts).markdown is None


def test_builder_states_skip_empty_parts_and_need_every_range() -> None:
    empty = RangePart(first=8, last=9, pages_processed=0, result=ExtractionResult(page_count=7))
    parts = [_part(4, 6), empty, _part(1, 3)]
    states = builder_states(parts)
    assert states is not None
    assert [s["pages"][0]["number"] for s in states] == [1, 4]
    old = _part(7, 7).model_copy(update={"markdown_state": None})
    assert builder_states([*parts, old]) is None  # a part from a version that rendered it
