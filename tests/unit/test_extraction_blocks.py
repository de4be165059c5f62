"""The `blocks` (document.json) and `chunks` (chunks.jsonl) outputs on PDFs of known structure."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pymupdf
import pytest
from pydantic import ValidationError

from shared.extraction import ExtractLimits, extract_document, figures
from shared.extraction.chunks import approx_tokens
from shared.extraction.document import ChunkModel, DocumentModel
from shared.extraction.engine import MARKDOWN_STATE
from shared.extraction.figures import clusters, textpage_with_figures
from shared.extraction.jsonwrite import chunks_jsonl, document_json, plain_floats
from shared.extraction.layout import merged_outputs
from shared.extraction.outline import outline_items
from shared.models import ChunkOptions, ExtractOptions
from tests.unit.pdfgen import (
    A4,
    DRAWING_BOX,
    FIGURE_CAPTIONS,
    FOOTNOTE,
    HEBREW,
    IMAGE_BOX,
    PLAIN_DECOY,
    PLAIN_OUTLINE,
    PLAIN_TITLE,
    RTL_MARKS,
    RUNNING_HEAD,
    STRUCTURE_HEADINGS,
    figures_pdf,
    long_table_pdf,
    plain_outline_pdf,
    rtl_columns_pdf,
    structured_pdf,
    table_across_pages_pdf,
)

Out = dict[str, Any]


def run(path: Path, out: Path, **options: Any) -> Out:
    """document.md, document.json and chunks.jsonl of one pass, as strings and parsed."""
    out.mkdir(exist_ok=True)
    opts = ExtractOptions(**({"outputs": ("blocks", "chunks", "tables")} | options))
    extract_document(str(path), opts, ExtractLimits(), str(out), lambda d, t: None)
    found: Out = {"md": (out / "document.md").read_text(encoding="utf-8")}
    if (out / "document.json").exists():
        found["json"] = (out / "document.json").read_text(encoding="utf-8")
        found["doc"] = json.loads(found["json"])
    if (out / "chunks.jsonl").exists():
        found["jsonl"] = (out / "chunks.jsonl").read_text(encoding="utf-8")
        found["chunks"] = [json.loads(line) for line in found["jsonl"].splitlines()]
    return found


@pytest.fixture(scope="module")
def pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return structured_pdf(tmp_path_factory.mktemp("blocks") / "structured.pdf")


@pytest.fixture(scope="module")
def one(pdf: Path) -> Out:
    return run(pdf, pdf.parent / "one", chunking={"max_chars": 500})


def blocks(out: Out, kind: str | None = None) -> list[Out]:
    found: list[Out] = out["doc"]["blocks"]
    return [b for b in found if kind is None or b["kind"] == kind]


def by_text(out: Out, start: str) -> Out:
    return next(b for b in blocks(out) if b["text"].startswith(start))


def test_the_document_validates_against_its_schema(one: Out) -> None:
    model = DocumentModel.model_validate_json(one["json"])
    assert model.schema_ == "pdfrelay.document/1"
    assert [p.number for p in model.pages] == [1, 2, 3, 4, 5, 6]
    assert (model.pages[0].width, model.pages[0].height) == (595.0, 842.0)
    for chunk in one["jsonl"].splitlines():
        ChunkModel.model_validate_json(chunk)
    schema = DocumentModel.model_json_schema(by_alias=True)
    assert schema["$id"] == "pdfrelay.document/1"


def test_headings_with_their_levels_and_pages(one: Out) -> None:
    found = {b["text"]: (b["level"], b["page"]) for b in blocks(one, "heading")}
    pages = dict(zip(STRUCTURE_HEADINGS, (1, 1, 1, 2, 3, 4, 5, 5), strict=True))
    assert found == {t: (level, pages[t]) for t, level in STRUCTURE_HEADINGS.items()}


def test_running_heads_and_page_footers_are_marked_not_mixed_in(one: Out) -> None:
    heads = blocks(one, "page_header")
    feet = blocks(one, "page_footer")
    assert [(b["page"], b["text"]) for b in heads] == [(n, RUNNING_HEAD) for n in range(1, 7)]
    assert [(b["page"], b["text"]) for b in feet] == [(n, f"Page {n}") for n in range(1, 7)]
    assert all(b["md"] is None and b["section"] == [] for b in heads + feet)
    assert RUNNING_HEAD not in one["md"]
    assert "Page 3" not in one["md"]
    assert all(RUNNING_HEAD not in b["text"] for b in blocks(one, "paragraph"))


def test_list_footnote_table_caption_and_section_paths(one: Out) -> None:
    items = blocks(one, "list_item")
    assert [b["text"][2:] for b in items] == ["first item of the list", "second item of the list"]
    assert all(b["page"] == 1 for b in items)
    assert [b["text"] for b in blocks(one, "footnote")] == [FOOTNOTE]
    (table,) = blocks(one, "table")
    assert table["page"] == 3
    assert table["text"].startswith("| Name | Qty | Price |")
    assert [b["text"] for b in blocks(one, "caption")] == ["Table 1: Prices per unit"]
    assert by_text(one, "The quick brown fox jumps over the lazy owl")["section"] == [
        "1 Introduction",
        "1.1 Scope",
        "1.1.1 Details",
    ]
    assert by_text(one, "1.1.1 Details")["section"] == ["1 Introduction", "1.1 Scope"]
    assert by_text(one, "2 Columns")["section"] == []
    assert table["section"] == ["3 Tables"]
    assert items[0]["section"][-1] == "1.1.1 Details"


def test_two_columns_in_reading_order(one: Out) -> None:
    order = [b["id"] for b in blocks(one)]
    left = by_text(one, "Leftcolumn")
    right = by_text(one, "Rightcolumn")
    assert order.index(left["id"]) < order.index(right["id"])
    assert left["bbox"][2] < 300 < right["bbox"][0]
    page2 = one["doc"]["pages"][1]
    assert page2["blocks"] == [b["id"] for b in blocks(one) if b["page"] == 2]


def test_right_to_left_text_keeps_its_logical_order(one: Out) -> None:
    block = by_text(one, HEBREW[:4])
    assert block["text"] == HEBREW
    assert block["kind"] == "paragraph"
    assert block["section"] == ["4 Right to Left"]


def test_every_bbox_contains_its_glyphs(pdf: Path, one: Out) -> None:
    doc = pymupdf.open(pdf)
    try:
        for block in blocks(one):
            x0, y0, x1, y1 = block["bbox"]
            words = doc[block["page"] - 1].get_text("words")
            text = block["text"]
            if block["kind"] == "table":
                text = text.replace("|", " ").replace("---", " ")
            inside = {
                w[4]
                for w in words
                if x0 - 1 <= (w[0] + w[2]) / 2 <= x1 + 1 and y0 - 1 <= (w[1] + w[3]) / 2 <= y1 + 1
            }
            assert inside, block
            for word in text.split()[:20]:
                if word.isascii() and word.isalnum():
                    assert word in inside or any(word in w for w in inside), (word, block)
    finally:
        doc.close()


def test_md_spans_locate_each_markdown_block(one: Out) -> None:
    md = one["md"]
    for block in blocks(one):
        if block["md"] is None:
            continue
        start, end = block["md"]
        piece = md[start:end]
        if block["kind"] == "heading":
            assert piece == "#" * block["level"] + " " + block["text"]
        elif block["kind"] in ("paragraph", "caption", "footnote", "table"):
            assert piece == block["text"]
        else:
            assert piece.endswith(block["text"][2:])
        assert md[end : end + 1] in ("\n", "")


def test_the_markdown_is_the_markdown_output_byte_for_byte(pdf: Path, one: Out) -> None:
    alone = run(pdf, pdf.parent / "md", outputs=("markdown", "tables"))
    assert alone["md"] == one["md"]
    assert "json" not in alone
    assert "jsonl" not in alone


def check_chunks(out: Out, budget: int, *, tokens: bool = False, overlap: int = 0) -> None:
    md = out["md"]
    kinds = {b["id"]: b for b in blocks(out)}
    for chunk in out["chunks"]:
        start, end = chunk["span"]
        assert md[start:end] == chunk["text"]
        size = approx_tokens(chunk["text"]) if tokens else chunk["chars"]
        assert size <= budget + overlap, chunk
        ids = chunk["block_ids"]
        assert ids
        assert all(i in kinds for i in ids)
        assert chunk["pages"] == sorted({kinds[i]["page"] for i in ids})
        # a heading only ever opens a chunk (or follows a tiny section it is a child of)
        for n, i in enumerate(ids[1:], start=1):
            if kinds[i]["kind"] == "heading":
                before = kinds[ids[0]]["md"][0]
                assert kinds[i]["md"][0] - before < budget // 8 + 40, chunk
                assert kinds[i]["level"] > kinds[ids[n - 1]].get("level", 0) or 0
        if any(kinds[i]["kind"] == "table" for i in ids):
            assert chunk["kind"] == "table"
            assert all(kinds[i]["kind"] in ("table", "heading", "caption") for i in ids)
        # no piece of a paragraph ends mid-sentence when the paragraph had a sentence end
        last = kinds[ids[-1]]
        if last["kind"] == "paragraph" and end < last["md"][1]:
            assert chunk["text"].rstrip()[-1] in ".!?;:", chunk["text"][-40:]


def test_chunks_stay_in_their_section_and_budget(one: Out) -> None:
    check_chunks(one, 500)
    assert all(c["overlap"] == 0 for c in one["chunks"])
    paths = {tuple(c["heading_path"]) for c in one["chunks"]}
    assert ("1 Introduction", "1.1 Scope", "1.1.1 Details") in paths
    assert ("5 Long Section", "5.1 Many Paragraphs") in paths
    table = next(c for c in one["chunks"] if c["kind"] == "table")
    assert "Table 1: Prices per unit" in table["text"]  # its caption goes with it
    assert table["parts"][0]["page"] == 3
    assert len(table["parts"][0]["bbox"]) == 4


def test_chunks_by_tokens_with_overlap(pdf: Path) -> None:
    out = run(pdf, pdf.parent / "tok", chunking={"max_tokens": 80, "overlap": 20})
    check_chunks(out, 80, tokens=True, overlap=20)
    chunks = out["chunks"]
    assert all(c["tokens"] == approx_tokens(c["text"]) for c in chunks)
    overlapped = [c for c in chunks if c["overlap"]]
    assert overlapped
    for prev, chunk in itertools.pairwise(chunks):
        if not chunk["overlap"]:
            continue
        assert prev["span"][0] <= chunk["span"][0] < prev["span"][1]
        assert chunk["text"][0].isalnum()  # from a word start


def test_a_large_table_is_split_between_rows_with_its_header(tmp_path: Path) -> None:
    out = run(long_table_pdf(tmp_path / "t.pdf"), tmp_path / "o", chunking={"max_chars": 300})
    check_chunks(out, 300)
    tables = [c for c in out["chunks"] if c["kind"] == "table"]
    assert len(tables) >= 3
    assert tables[0]["table_header"] is None
    for chunk in tables[1:]:
        assert chunk["table_header"] == "| Item | Count | Price |\n|---|---|---|"
        assert chunk["text"].startswith("| item")
        assert len(chunk["table_header"]) + 1 + chunk["chars"] <= 300
    rows = [line for c in tables for line in c["text"].splitlines() if line.startswith("| item")]
    assert len(rows) == 30
    assert len(set(rows)) == 30


def test_page_range_ids_and_pages_are_the_documents(pdf: Path) -> None:
    out = run(pdf, pdf.parent / "range", pages="2-3")
    assert {b["page"] for b in blocks(out)} == {2, 3}
    assert blocks(out)[0]["id"].startswith("p2.")


def test_ranges_merge_byte_for_byte_as_one_pass(pdf: Path, one: Out) -> None:
    states = []
    for n, pages in enumerate(("1-2", "3-4", "5-")):
        out = pdf.parent / f"part{n}"
        out.mkdir()
        opts = ExtractOptions(
            outputs=("blocks", "chunks", "tables"), pages=pages, chunking={"max_chars": 500}
        )
        limits = ExtractLimits(range_part=True)
        extract_document(str(pdf), opts, limits, str(out), lambda d, t: None)
        # through JSON, as the parts travel
        states.append(json.loads((out / MARKDOWN_STATE).read_text(encoding="utf-8")))
    opts = ExtractOptions(outputs=("blocks", "chunks", "tables"), chunking={"max_chars": 500})
    files = {f.name: f.data.decode() for f in merged_outputs(states, opts).files}
    assert files["document.md"] == one["md"]
    assert files["document.json"] == one["json"]
    assert files["chunks.jsonl"] == one["jsonl"]


@pytest.mark.parametrize(
    "chunking",
    [
        {"max_chars": 10},
        {"max_tokens": 5},
        {"max_chars": 500, "max_tokens": 100},
        {"max_chars": 500, "overlap": 300},
        {"overlap": -1},
        {"max_words": 100},
    ],
)
def test_bad_chunking_options_are_refused(chunking: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        ExtractOptions(outputs=("chunks",), chunking=chunking)


def test_chunking_defaults() -> None:
    assert ChunkOptions().budget == 2000
    assert ChunkOptions(max_tokens=300).budget == 300


def test_approx_tokens_counts_words_symbols_and_cjk() -> None:
    assert approx_tokens("the cat sat.") == 4
    assert approx_tokens("extraction") == 3
    assert approx_tokens("中文字") == 3
    assert approx_tokens("") == 0


def test_the_schemas_are_printed_by_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from infra.cli import main

    assert main(["schema", "document"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["$id"] == "pdfrelay.document/1"
    assert "heading" in document["$defs"]["BlockKind"]["enum"]
    assert main(["schema", "chunk"]) == 0
    assert json.loads(capsys.readouterr().out)["$id"] == "pdfrelay.chunk/1"


def test_broker_requests_take_the_chunking_options() -> None:
    from shared.models import ExtractRequest

    request = ExtractRequest.model_validate(
        {
            "schema": "pdfrelay.extract-request/1",
            "source": {"url": "https://example.com/a.pdf"},
            "options": {"outputs": ["blocks", "chunks"], "chunking": {"max_tokens": 256}},
        }
    )
    assert request.options.chunking.budget == 256
    with pytest.raises(ValidationError):
        ExtractRequest.model_validate(
            {
                "schema": "pdfrelay.extract-request/1",
                "source": {"url": "https://example.com/a.pdf"},
                "options": {"outputs": ["chunks"], "chunking": {"max_chars": 1}},
            }
        )


def test_a_table_over_a_page_break_is_one_table_chunk(tmp_path: Path) -> None:
    pdf = table_across_pages_pdf(tmp_path / "t.pdf")
    whole = run(pdf, tmp_path / "whole", chunking={"max_chars": 2000})
    tables = blocks(whole, "table")
    assert [b["page"] for b in tables] == [1, 2]
    (chunk,) = [c for c in whole["chunks"] if c["kind"] == "table"]
    assert chunk["block_ids"] == [b["id"] for b in tables]
    assert chunk["pages"] == [1, 2]
    assert "| part1 |" in chunk["text"]
    assert "| part16 |" in chunk["text"]
    assert chunk["heading_path"] == ["Stock List"]
    check_chunks(whole, 2000)
    # cut at the page break: the continuation carries the first part's header rows
    cut = run(pdf, tmp_path / "cut", chunking={"max_chars": 250})
    check_chunks(cut, 250)
    parts = [c for c in cut["chunks"] if c["kind"] == "table"]
    assert [c["pages"] for c in parts] == [[1], [2]]
    assert parts[1]["table_header"] == "| Part | Count | Price |\n|---|---|---|"


# --- figures and the outline as a heading signal


@pytest.fixture(scope="module")
def figs(tmp_path_factory: pytest.TempPathFactory) -> Out:
    path = figures_pdf(tmp_path_factory.mktemp("figures") / "figures.pdf")
    found = run(path, path.parent / "one", outputs=("blocks", "chunks"))
    found["path"] = path
    return found


def near(box: list[float], expected: tuple[float, ...], tol: float = 1.5) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(box, expected, strict=True))


def test_figures_are_blocks_with_their_boxes_and_captions(figs: Out) -> None:
    DocumentModel.model_validate_json(figs["json"])
    image, drawing = blocks(figs, "figure")
    assert near(image["bbox"], IMAGE_BOX)
    assert near(drawing["bbox"], DRAWING_BOX)
    below, above = (by_text(figs, caption) for caption in FIGURE_CAPTIONS)
    # the caption below the image, the caption above the drawing: linked both ways
    assert (image["caption"], below["figure"]) == (below["id"], image["id"])
    assert (drawing["caption"], above["figure"]) == (above["id"], drawing["id"])
    for figure in (image, drawing):
        assert figure["md"] is None
        assert (figure["text"], figure["page"]) == ("", 1)
        assert figure["section"] == ["1 Figures"]
    order = [b["id"] for b in blocks(figs)]
    assert order.index(image["id"]) < order.index(below["id"])
    assert order.index(above["id"]) < order.index(drawing["id"])
    # the ruled table of page 2 is text in a drawing, not a figure
    assert all(b["page"] == 1 for b in blocks(figs, "figure"))


def test_a_figure_goes_with_its_captions_chunk(figs: Out) -> None:
    for figure in blocks(figs, "figure"):
        (chunk,) = [c for c in figs["chunks"] if figure["id"] in c["block_ids"]]
        assert figure["caption"] in chunk["block_ids"]
        assert {"block": figure["id"], "page": 1, "bbox": figure["bbox"]} in chunk["parts"]
        ChunkModel.model_validate(chunk)


def test_figures_leave_the_markdown_alone_and_the_outline_heads_it(
    figs: Out, tmp_path: Path
) -> None:
    alone = run(figs["path"], tmp_path / "md", outputs=("markdown",))
    assert alone["md"] == figs["md"]
    assert f"\n## {PLAIN_TITLE}\n" in figs["md"]


def test_an_outline_title_in_body_type_is_a_heading_with_the_outlines_level(figs: Out) -> None:
    title = by_text(figs, PLAIN_TITLE)
    assert (title["kind"], title["level"], title["page"]) == ("heading", 2, 2)
    assert title["section"] == ["1 Figures"]
    assert by_text(figs, "The quick brown hen")["section"] == ["1 Figures", PLAIN_TITLE]
    (chunk,) = [c for c in figs["chunks"] if title["id"] in c["block_ids"]]
    assert chunk["block_ids"][0] == title["id"]
    assert chunk["heading_path"] == ["1 Figures", PLAIN_TITLE]


def test_figures_merge_byte_for_byte_as_one_pass(figs: Out, tmp_path: Path) -> None:
    states = []
    for pages in ("1", "2"):
        out = tmp_path / pages
        out.mkdir()
        opts = ExtractOptions(outputs=("blocks", "chunks"), pages=pages)
        extract_document(
            str(figs["path"]), opts, ExtractLimits(range_part=True), str(out), lambda d, t: None
        )
        states.append(json.loads((out / MARKDOWN_STATE).read_text(encoding="utf-8")))
    files = {
        f.name: f.data.decode()
        for f in merged_outputs(states, ExtractOptions(outputs=("blocks", "chunks"))).files
    }
    assert files["document.json"] == figs["json"]
    assert files["chunks.jsonl"] == figs["jsonl"]


def test_figure_marks_are_joined_and_filtered() -> None:
    page = (0.0, 0.0, 600.0, 800.0)
    marks = [
        (0.0, 0.0, 600.0, 800.0),  # the page's background
        (10.0, 10.0, 15.0, 15.0),  # a bullet
        (100.0, 100.0, 150.0, 130.0),
        (153.0, 120.0, 200.0, 160.0),  # touches the previous one: one figure
        (100.0, 500.0, 700.0, 501.0),  # a rule, clipped to the page, too thin
    ]
    flat = [v for mark in marks for v in mark]
    assert clusters(flat, page) == [(100.0, 100.0, 200.0, 160.0)]


def _fixpoint_clusters(marks: list[float], page: tuple[float, float, float, float]) -> Any:
    """The plain definition: clip, then join any two touching boxes until none touch."""
    px0, py0, px1, py1 = page
    boxes = []
    for i in range(0, len(marks) - 3, 4):
        x0, y0, x1, y1 = marks[i : i + 4]
        x0, y0, x1, y1 = max(x0, px0), max(y0, py0), min(x1, px1), min(y1, py1)
        share = figures.PAGE_SHARE
        full = x1 - x0 >= share * (px1 - px0) and y1 - y0 >= share * (py1 - py0)
        if x1 >= x0 and y1 >= y0 and not full:
            boxes.append([x0, y0, x1, y1])
    gap = figures.JOIN_GAP
    merged = True
    while merged:
        merged = False
        for a, b in itertools.combinations(boxes, 2):
            if (
                a[0] <= b[2] + gap
                and b[0] <= a[2] + gap
                and a[1] <= b[3] + gap
                and b[1] <= a[3] + gap
            ):
                a[:] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                boxes.remove(b)
                merged = True
                break
    side = figures.MIN_SIDE
    kept = [b for b in boxes if b[2] - b[0] >= side and b[3] - b[1] >= side]
    share = figures.PAGE_SHARE
    kept = [b for b in kept if not (b[2] - b[0] >= share * px1 and b[3] - b[1] >= share * py1)]
    return sorted((tuple(b) for b in kept), key=lambda b: (b[1], b[0]))


def test_figure_clusters_do_not_depend_on_the_order_of_the_joins() -> None:
    rnd = random.Random(17)
    page = (0.0, 0.0, 600.0, 800.0)
    for _ in range(300):
        marks: list[float] = []
        for _ in range(rnd.randint(0, 40)):
            x, y = rnd.uniform(-20, 620), rnd.uniform(-20, 820)
            marks += [x, y, x + rnd.uniform(0, 120), y + rnd.uniform(0, 120)]
        assert clusters(marks, page) == _fixpoint_clusters(marks, page)


def test_one_figure_finder_for_many_pages_gives_what_a_fresh_one_gives(tmp_path: Path) -> None:
    doc = pymupdf.open(structured_pdf(tmp_path / "s.pdf"))
    figs = pymupdf.open(figures_pdf(tmp_path / "f.pdf"))
    try:
        pages = [d[i] for d in (doc, figs, doc) for i in range(d.page_count)]
        finder = figures.FigureFinder(pymupdf.TEXTFLAGS_TEXT)
        for page in pages:
            textpage, found = finder.textpage(page)
            fresh_page, fresh = textpage_with_figures(page, pymupdf.TEXTFLAGS_TEXT)
            assert found == fresh
            assert textpage.extractJSON() == fresh_page.extractJSON()
        assert finder.textpage(figs[0])[1]
    finally:
        doc.close()
        figs.close()


def test_the_text_page_with_figures_is_the_plain_text_page(tmp_path: Path) -> None:
    doc = pymupdf.open(figures_pdf(tmp_path / "f.pdf"))
    try:
        page = doc[0]
        page.set_rotation(90)
        textpage, found = textpage_with_figures(page, pymupdf.TEXTFLAGS_TEXT)
        assert page.rotation == 90
        plain = page.get_textpage(flags=pymupdf.TEXTFLAGS_TEXT)
        assert textpage.extractJSON() == plain.extractJSON()
        assert any(near(list(box), IMAGE_BOX) for box in found)  # unrotated, like the text
    finally:
        doc.close()


def test_the_mark_replay_stops_at_max_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = pymupdf.open()
    page = doc.new_page(width=A4[0], height=A4[1])
    page.insert_text((72, 60), "Above the marks", fontsize=11)
    for i in range(figures.MAX_MARKS):  # each filled and stroked: 2 marks
        x, y = 72 + (i % 50) * 6, 100 + (i // 50) * 6
        page.draw_rect(pymupdf.Rect(x, y, x + 4, y + 4), color=(0, 0, 0), fill=(0.5, 0.5, 0.5))
    page.insert_text((72, 500), "Below the marks", fontsize=11)
    calls = 0
    for name in ("fill_path", "stroke_path"):
        noted = getattr(figures._MarkDevice, name)

        def counted(device: Any, *args: Any, noted: Any = noted) -> None:
            nonlocal calls
            calls += 1
            noted(device, *args)

        monkeypatch.setattr(figures._MarkDevice, name, counted)
    try:
        textpage, found = textpage_with_figures(page, pymupdf.TEXTFLAGS_TEXT)
        assert textpage.extractText() == "Above the marks\nBelow the marks\n"
    finally:
        doc.close()
    assert calls == figures.MAX_MARKS  # not 2 * MAX_MARKS: the replay was cut short
    # the first MAX_MARKS marks: the top half of the squares
    assert found == [(72.0, 100.0, 370.0, 100.0 + 6 * (figures.MAX_MARKS // 100 - 1) + 4)]


def test_a_right_to_left_two_column_page_reads_its_right_column_first(tmp_path: Path) -> None:
    out = run(rtl_columns_pdf(tmp_path / "rtl.pdf"), tmp_path / "out", outputs=("blocks",))
    marks = [b["text"][:2] for b in blocks(out) if b["text"][:2] in RTL_MARKS]
    assert marks == list(RTL_MARKS)
    at = [out["md"].index(f"{mark} ") for mark in RTL_MARKS]
    assert at == sorted(at)  # the Markdown too


# --- the outline alone finds the headings, in the Markdown and the blocks alike


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Out:
    path = plain_outline_pdf(tmp_path_factory.mktemp("plain") / "plain.pdf")
    found = run(path, path.parent / "one", outputs=("markdown", "blocks", "chunks"))
    found["path"] = path
    return found


def markdown_headings(md: str) -> list[tuple[int, str]]:
    return [
        (len(line) - len(line.lstrip("#")), line.lstrip("# "))
        for line in md.splitlines()
        if line.startswith("#")
    ]


def test_outline_titles_set_as_body_text_are_the_markdowns_headings(
    plain: Out, tmp_path: Path
) -> None:
    expected = [(level, title) for level, title, _ in PLAIN_OUTLINE]
    alone = run(plain["path"], tmp_path / "md", outputs=("markdown",))
    assert markdown_headings(alone["md"]) == expected
    assert alone["md"] == plain["md"]
    # the decoy on page 3 (its entry points at page 1) stays a paragraph
    assert f"\n\n{PLAIN_DECOY}\n\n" in alone["md"]


def test_blocks_take_the_markdowns_outline_headings(plain: Out) -> None:
    heads = [(b["level"], b["text"], b["page"]) for b in blocks(plain, "heading")]
    assert heads == PLAIN_OUTLINE
    for block in blocks(plain, "heading"):
        start, end = block["md"]
        assert plain["md"][start:end] == f"{'#' * block['level']} {block['text']}"
    decoy = [b for b in blocks(plain) if b["text"] == PLAIN_DECOY and b["page"] == 3]
    assert [b["kind"] for b in decoy] == ["paragraph"]
    assert decoy[0]["section"] == ["Running the service"]


@pytest.mark.parametrize("outputs", [("markdown",), ("markdown", "blocks", "chunks")])
def test_outline_headings_merge_byte_for_byte_as_one_pass(
    plain: Out, tmp_path: Path, outputs: tuple[str, ...]
) -> None:
    states = []
    for pages in ("1", "2-3"):  # the outline comes with the range of page 1 only
        out = tmp_path / pages
        out.mkdir()
        opts = ExtractOptions(outputs=outputs, pages=pages)
        extract_document(
            str(plain["path"]), opts, ExtractLimits(range_part=True), str(out), lambda d, t: None
        )
        states.append(json.loads((out / MARKDOWN_STATE).read_text(encoding="utf-8")))
    assert ["outline" in state for state in states] == [True, False]
    files = {
        f.name: f.data.decode()
        for f in merged_outputs(states, ExtractOptions(outputs=outputs)).files
    }
    assert files["document.md"] == plain["md"]
    if "blocks" in outputs:
        assert files["document.json"] == plain["json"]
        assert files["chunks.jsonl"] == plain["jsonl"]


def test_the_outline_is_read_as_get_toc_gives_it(plain: Out) -> None:
    with pymupdf.open(plain["path"]) as doc:
        assert outline_items(doc) == [tuple(item) for item in doc.get_toc(simple=True)]
        assert outline_items(doc) == PLAIN_OUTLINE


STDLIB_DOCUMENT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""How document.json was written before orjson: `document_json` must give these bytes."""


def test_document_json_is_what_the_standard_encoder_writes(one: Out, figs: Out) -> None:
    for out in (one, figs):
        assert out["json"] == STDLIB_DOCUMENT.encode(out["doc"])


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 1e-4, 3.0517578125e-05, -2e-7, 287.40000000000003, 1e15, 1.5e17, 2**70],
)
def test_document_json_writes_any_number_as_the_standard_encoder(value: float) -> None:
    doc = {
        "schema": "pdfrelay.document/1",
        "pages": [{"number": 1, "width": 612.0, "height": 792.0, "blocks": ["p1.b0"]}],
        "outline": [],
        "blocks": [{"id": "p1.b0", "bbox": [value, 1.0, 2.5, 3.25], "text": 'é\u2028\x1f"'}],
    }
    assert document_json(doc) == STDLIB_DOCUMENT.encode(doc).encode()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_document_json_writes_non_finite_boxes_as_the_standard_encoder(value: float) -> None:
    doc = {"schema": "s", "pages": [], "outline": [], "blocks": [{"bbox": [value, 0, 1, 1]}]}
    assert document_json(doc) == STDLIB_DOCUMENT.encode(doc).encode()


STDLIB_CHUNK = json.JSONEncoder(ensure_ascii=False)
"""How a line of chunks.jsonl was written before orjson: `chunks_jsonl` must give these."""


def stdlib_jsonl(chunks: list[Out]) -> str:
    return "".join(STDLIB_CHUNK.encode(chunk) + "\n" for chunk in chunks)


def test_chunks_jsonl_is_what_the_standard_encoder_writes(one: Out, figs: Out) -> None:
    for out in (one, figs):
        assert out["jsonl"] == stdlib_jsonl(out["chunks"])


def a_chunk(**changes: Any) -> Out:
    chunk: Out = {
        "id": "c0",
        "kind": "table",
        "text": '| a | b |\n|---|---|\n| "text": -1, x: y |',
        "heading_path": ['1 "Quoted", a: b', "é\u2028\x1f"],
        "pages": [1, 2],
        "parts": [
            {"block": "p1.b0", "page": 1, "bbox": [72.0, 287.40000000000003, 540.5, 300.0]},
            {"block": "p2.b3", "page": 2, "bbox": [0.0, -0.0, 1e-4, 12.25]},
        ],
        "block_ids": ["p1.b0", "p2.b3"],
        "span": [0, 42],
        "overlap": 0,
        "chars": 42,
        "tokens": 17,
        "table_header": '| "text": -1 |\n|---|',
    }
    return chunk | changes


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"table_header": None, "tokens": None, "kind": "text"},
        {"block_ids": ["p1.b0, x", "p2:b3"]},  # a comma and a colon in an id
        {"id": 'c"0\\'},
        {"parts": [], "pages": [], "block_ids": []},
        {"parts": [{"block": "p1.b0", "page": 1, "bbox": [3.0517578125e-05, 1.0, 2.0, 3.0]}]},
        {"parts": [{"block": "p1.b0", "page": 1, "bbox": [float("nan"), 1.0, 2.0, 3.0]}]},
        {"parts": [{"block": "p1.b0", "page": 1, "bbox": [1.0, 2.0]}]},
        {"span": [0, 2**70]},
        {"pages": [1.5]},
    ],
)
def test_chunks_jsonl_writes_any_chunk_as_the_standard_encoder(changes: Out) -> None:
    chunks = [a_chunk(**changes), a_chunk(id="c1")]
    assert chunks_jsonl(chunks) == stdlib_jsonl(chunks)
    if plain_floats(part["bbox"] for chunk in chunks for part in chunk["parts"]):
        assert chunks_jsonl(chunks, True) == stdlib_jsonl(chunks)


def test_the_text_output_is_the_same_with_blocks(pdf: Path, figs: Out, tmp_path: Path) -> None:
    for path in (pdf, figs["path"]):
        texts = []
        for outputs in (["text"], ["text", "blocks", "chunks"]):
            out = extract_document(
                str(path),
                ExtractOptions.model_validate({"outputs": outputs}),
                ExtractLimits(),
                str(tmp_path),
                lambda d, t: None,
            )
            texts.append([(p.number, p.text, p.ocr) for p in out.result.pages])
        assert texts[0] == texts[1]
        assert any(text.strip() for _, text, _ in texts[1])


def test_the_figure_search_leaves_out_only_markers_and_keeps_the_text(tmp_path: Path) -> None:
    doc = pymupdf.open()
    try:
        page = doc.new_page(width=A4[0], height=A4[1])
        shown = doc.add_ocg("shown", on=True)
        hidden = doc.add_ocg("hidden", on=False)
        page.insert_text((72, 72), "In a visible layer", fontsize=11, oc=shown)
        page.insert_text((72, 100), "In a hidden layer", fontsize=11, oc=hidden)
        page.draw_rect(pymupdf.Rect(72, 120, 200, 200), color=(0, 0, 0), oc=shown)
        page.insert_text((72, 240), "In no layer", fontsize=11)
        finder = figures.FigureFinder(pymupdf.TEXTFLAGS_TEXT)
        assert set(finder._unrecorded) <= set(figures.UNRECORDED)
        textpage, found = finder.textpage(page)
        plain = page.get_textpage(flags=pymupdf.TEXTFLAGS_TEXT)
        assert textpage.extractJSON() == plain.extractJSON()
        assert found == [(72.0, 120.0, 200.0, 200.0)]
    finally:
        doc.close()
