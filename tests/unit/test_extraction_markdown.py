"""Our Markdown converter: headings, lists, code, links, reading order, running heads."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pymupdf
import pytest

from shared.extraction import markdown
from shared.extraction.engine import TEXT_FLAGS
from shared.extraction.markdown import MarkdownBuilder, document_markdown, headings, uri_links
from tests.unit import pdfgen


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("md")
    return {
        "manual": pdfgen.manual_pdf(d / "manual.pdf"),
        "links": pdfgen.links_pdf(d / "links.pdf"),
        "two_column": pdfgen.two_column_pdf(d / "columns.pdf"),
        "rich": pdfgen.rich_pdf(d / "rich.pdf"),
        "text": pdfgen.text_pdf(d / "text.pdf", pages=2),
    }


def md_of(path: Path, pages: list[int] | None = None) -> str:
    with pymupdf.open(path) as doc:
        return document_markdown(doc, pages or range(doc.page_count), TEXT_FLAGS)


@pytest.fixture(scope="module")
def manual(files: dict[str, Path]) -> str:
    return md_of(files["manual"])


def test_heading_levels_follow_font_size_then_weight(manual: str) -> None:
    assert manual.startswith("# Chapter One Overview\n\n## 1.1 Section Heading 1\n")
    assert "\n### Subsection Topic 1\n" in manual
    assert "\n## 4.1 Section Heading 4\n" in manual


def test_section_number_apart_from_its_title(manual: str) -> None:
    # "3.2.1" and its title are two MuPDF blocks on one baseline; body font, not bold
    for n in range(1, 5):
        assert f"\n### {n}.2.1 Plain Numbered Title {n}\n" in manual


def test_running_heads_and_page_numbers_are_dropped(manual: str) -> None:
    assert "ACME Widget Manual" not in manual
    assert not re.search(r"^\d+$", manual, re.M)


def test_hyphenated_line_break_is_joined(manual: str) -> None:
    assert "an extraordinary word broken over two lines." in manual


def test_sentence_split_over_two_blocks_is_one_paragraph() -> None:
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 60), "Title", fontsize=18)
    page.insert_text(
        (72, 100), "A sentence that runs all the way to the right margin and then", fontsize=11
    )
    page.insert_text(
        (72, 140), "goes on after a gap that makes MuPDF start a new block.", fontsize=11
    )
    page.insert_text((72, 180), "Separate paragraph.", fontsize=11)
    try:
        md = document_markdown(doc, [0], TEXT_FLAGS)
    finally:
        doc.close()
    assert md == (
        "# Title\n\nA sentence that runs all the way to the right margin and then goes on "
        "after a gap that makes MuPDF start a new block.\n\nSeparate paragraph.\n"
    )


def test_numbered_list(manual: str) -> None:
    assert "\n1. unpack the box\n2. plug it in\n\n```" in manual


def test_code_across_blocks_keeps_columns(manual: str) -> None:
    assert "```\nwidget --start\nwidget --stop        # halts it\n```" in manual


def test_markdown_syntax_in_text_is_escaped(manual: str) -> None:
    assert "\n\\# Not a heading, a line that starts with a hash.\n" in manual


def test_body_paragraph_is_one_line(manual: str) -> None:
    assert f"\n{pdfgen.BODY}\n" in manual


def test_links(files: dict[str, Path]) -> None:
    md = md_of(files["links"])
    assert "Read the [handbook](https://example.com/handbook) online today." in md
    assert "Visit <https://example.org/start> now." in md
    # a javascript: URI never becomes a clickable link
    assert "Do not click this trap please." in md
    assert "javascript" not in md


def test_untrusted_text_cannot_inject_html_or_links() -> None:
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "<img src=x onerror=alert(1)> and [click](javascript:alert(2))")
    try:
        md = document_markdown(doc, [0], TEXT_FLAGS)
    finally:
        doc.close()
    assert md == "\\<img src=x onerror=alert(1)> and \\[click](javascript:alert(2))\n"


def test_uri_links_lists_external_links_only(files: dict[str, Path]) -> None:
    with pymupdf.open(files["links"]) as doc:
        found = uri_links(doc[0])
    assert [uri for _, uri in found] == [
        "https://example.com/handbook",
        "https://example.org/start",
        "javascript:alert(1)",
    ]


def test_two_columns_are_read_one_after_the_other(files: dict[str, Path]) -> None:
    md = md_of(files["two_column"])
    assert md.startswith("# Two Column Report\n")
    left = md.index("Leftcolumn text starts here.")
    right = md.index("Rightcolumn text starts here.")
    assert left < right
    # the left column is one paragraph: not interleaved with the right one
    assert "Rightcolumn" not in md[left : md.index("\n", left)]


def test_table_header_row_is_not_a_heading(files: dict[str, Path]) -> None:
    md = md_of(files["rich"])
    assert "# Name" not in md
    assert "\n## 3 Price Table\n" in md
    # without `tables`, each row is a line of text
    assert "\nName Qty Price\n" in md
    assert "\napple 3 1.20\n" in md


def test_page_range_builds_levels_from_its_own_pages(files: dict[str, Path]) -> None:
    md = md_of(files["manual"], [1, 2])
    # the running head repeats on both pages: dropped even in a two-page selection
    assert md.startswith("# 2.1 Section Heading 2\n")
    assert "Chapter One" not in md
    assert "ACME" not in md


def test_dict_fallback_gives_the_same_markdown(
    files: dict[str, Path], manual: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(textpage: pymupdf.TextPage) -> list[markdown.Block]:
        raise ValueError("no JSON today")

    monkeypatch.setattr(markdown, "_json_blocks", broken)
    assert md_of(files["manual"]) == manual


def test_ocr_text_is_never_code(files: dict[str, Path]) -> None:
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "recognised words in a monospaced font", fontname="cour")
    textpage = page.get_textpage(flags=TEXT_FLAGS)
    as_text = MarkdownBuilder()
    as_text.add_page(1, textpage, textpage.rect)
    as_ocr = MarkdownBuilder()
    as_ocr.add_page(1, textpage, textpage.rect, ocr=True)
    doc.close()
    assert as_text.render().startswith("```\n")
    assert as_ocr.render() == "recognised words in a monospaced font\n"


def test_empty_pages_give_empty_markdown() -> None:
    assert MarkdownBuilder().render() == ""
    doc = pymupdf.open()
    doc.new_page()
    try:
        assert document_markdown(doc, [0], TEXT_FLAGS) == ""
    finally:
        doc.close()


def test_headings_helper() -> None:
    md = "# One\n\ntext\n\n## **Two**\n\n####### seven is no heading\n#nospace\n"
    assert headings(md) == ["One", "Two"]


def test_each_pages_markdown_is_known_and_ranges_merge_to_the_same_spans(
    tmp_path: Path,
) -> None:
    from shared.extraction import ExtractLimits, extract_document
    from shared.extraction.engine import MARKDOWN_STATE
    from shared.extraction.layout import merged_outputs
    from shared.models import ExtractOptions
    from tests.factories import make_pdf

    texts = ["alpha is page one", "", "charlie is page three", "delta is four"]
    pdf = tmp_path / "four.pdf"
    pdf.write_bytes(make_pdf(texts))
    opts = ExtractOptions(outputs=("markdown",))
    out = tmp_path / "one"
    out.mkdir()
    result = extract_document(str(pdf), opts, ExtractLimits(), str(out), lambda d, t: None).result
    md, spans = result.markdown, result.markdown_pages
    assert md is not None
    assert spans is not None
    assert md == (out / "document.md").read_text(encoding="utf-8")  # the Markdown as it was
    assert [s.number for s in spans] == [1, 2, 3, 4]
    for span, text in zip(spans, texts, strict=True):
        assert md[span.start : span.end].strip() == text
    assert spans[0].start == 0
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))
    assert spans[-1].end == len(md)
    # Split into ranges (fan-out), the merged Markdown has the same spans.
    states = []
    for n, pages in enumerate(("1-2", "3-")):
        part = tmp_path / f"part{n}"
        part.mkdir()
        extract_document(
            str(pdf),
            ExtractOptions(outputs=("markdown",), pages=pages),
            ExtractLimits(range_part=True),
            str(part),
            lambda d, t: None,
        )
        states.append(json.loads((part / MARKDOWN_STATE).read_text(encoding="utf-8")))
    merged = merged_outputs(states, opts)
    assert merged.markdown == md
    assert [(s.number, s.start, s.end) for s in merged.pages] == [
        (s.number, s.start, s.end) for s in spans
    ]
