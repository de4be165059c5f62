"""Each output of the extraction engine on generated PDFs whose content the test knows."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pymupdf
import pytest

from shared.errors import ErrorCode, PermanentError
from shared.extraction import (
    EXTRACTOR_VERSION,
    EngineOutput,
    ExtractLimits,
    extract_document,
    parse_pages,
)
from shared.models import ExtractOptions, Output
from tests.factories import CORPUS
from tests.unit import pdfgen

ALL_OUTPUTS: tuple[Output, ...] = (
    "text",
    "markdown",
    "metadata",
    "page_images",
    "images",
    "tables",
)


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pdfs")
    return {
        "text": pdfgen.text_pdf(d / "text.pdf", pages=5),
        "rich": pdfgen.rich_pdf(d / "rich.pdf"),
        "images": pdfgen.image_pdf(d / "images.pdf"),
    }


def run(
    path: Path,
    out_dir: Path,
    limits: ExtractLimits | None = None,
    progress: list[tuple[int, int]] | None = None,
    **options: object,
) -> EngineOutput:
    calls = progress if progress is not None else []
    out_dir.mkdir(parents=True, exist_ok=True)
    return extract_document(
        str(path),
        ExtractOptions.model_validate(options),
        limits or ExtractLimits(),
        str(out_dir),
        lambda done, total: calls.append((done, total)),
    )


def artifact(out: EngineOutput, name: str) -> Path:
    found = [a for a in out.artifacts if a.name == name]
    assert len(found) == 1, [a.name for a in out.artifacts]
    path = Path(found[0].path)
    assert path.is_file()
    return path


def test_text_per_page_with_known_words(pdfs: dict[str, Path], tmp_path: Path) -> None:
    progress: list[tuple[int, int]] = []
    out = run(pdfs["text"], tmp_path, progress=progress, outputs=["text"])
    result = out.result
    assert result.page_count == 5
    assert [p.number for p in result.pages] == [1, 2, 3, 4, 5]
    for page in result.pages:
        word = pdfgen.PAGE_WORDS[page.number - 1]
        assert f"page {page.number} with the code word {word}" in page.text
        assert page.ocr is False
    assert progress == [(n, 5) for n in range(1, 6)]
    assert result.markdown is None
    assert result.metadata is None
    assert result.tables is None
    assert out.artifacts == []
    assert result.warnings == []


def test_text_matches_a_bare_pymupdf_loop(pdfs: dict[str, Path], tmp_path: Path) -> None:
    out = run(pdfs["rich"], tmp_path, outputs=["text"])
    with pymupdf.open(pdfs["rich"]) as doc:
        assert [p.text for p in out.result.pages] == [page.get_text() for page in doc]


def test_markdown_output_and_artifact(pdfs: dict[str, Path], tmp_path: Path) -> None:
    out = run(pdfs["rich"], tmp_path, outputs=["markdown"])
    md = out.result.markdown
    assert md is not None
    assert md.startswith("# Extraction Guide\n"), md
    assert "\n## 1 Getting Started\n" in md
    assert "\n## 3 Price Table\n" in md
    assert "- first item of the list\n- second item of the list\n" in md
    assert "```\ndef hello():\n    return 42\n```" in md
    assert f"[online documentation]({pdfgen.LINK_URL})" in md
    # tables only when asked for: the cells are plain text here
    assert "|---|" not in md
    assert artifact(out, "document.md").read_text(encoding="utf-8") == md
    assert out.result.pages == []


def test_markdown_with_tables(pdfs: dict[str, Path], tmp_path: Path) -> None:
    out = run(pdfs["rich"], tmp_path, outputs=["markdown", "tables"])
    md = out.result.markdown
    assert md is not None
    table_md = "| Name | Qty | Price |\n|---|---|---|\n| apple | 3 | 1.20 |\n"
    assert table_md in md
    # the table sits between the text before and after it, and its cells are not repeated
    assert md.index("per unit.") < md.index(table_md) < md.index("End of the price list.")
    assert md.count("banana") == 1


def test_tables_as_markdown_and_csv(pdfs: dict[str, Path], tmp_path: Path) -> None:
    out = run(pdfs["rich"], tmp_path, outputs=["tables"])
    tables = out.result.tables
    assert tables is not None
    assert len(tables) == 1
    table = tables[0]
    assert table["page"] == 2
    assert table["index"] == 1
    assert table["rows"] == pdfgen.TABLE
    assert str(table["markdown"]).startswith("| Name | Qty | Price |\n|---|---|---|\n")
    assert list(csv.reader(io.StringIO(str(table["csv"])))) == pdfgen.TABLE
    with zipfile.ZipFile(artifact(out, "tables.zip")) as zf:
        assert sorted(zf.namelist()) == ["page-0002-table-1.csv", "tables.md"]
        rows = list(csv.reader(io.StringIO(zf.read("page-0002-table-1.csv").decode())))
        assert rows == pdfgen.TABLE


def test_metadata(pdfs: dict[str, Path], tmp_path: Path) -> None:
    out = run(pdfs["rich"], tmp_path, outputs=["metadata"])
    meta = out.result.metadata
    assert meta is not None
    assert meta["title"] == "Extraction Guide"
    assert meta["author"] == "pdfgen"
    assert meta["creation_date"] == "2024-01-02T03:04:05+01:00"
    assert meta["page_count"] == 2
    assert meta["pages"] == [
        {"number": 1, "width": 595.0, "height": 842.0, "rotation": 0},
        {"number": 2, "width": 595.0, "height": 842.0, "rotation": 0},
    ]
    assert meta["outline"] == [
        {"level": 1, "title": "Extraction Guide", "page": 1},
        {"level": 2, "title": "1 Getting Started", "page": 1},
        {"level": 2, "title": "2 Configuration", "page": 1},
        {"level": 2, "title": "3 Price Table", "page": 2},
    ]
    links = meta["links"]
    assert isinstance(links, list)
    assert len(links) == 1
    assert links[0]["uri"] == pdfgen.LINK_URL
    assert links[0]["page"] == 1
    name, data = pdfgen.ATTACHMENT
    assert meta["attachments"] == [
        {"name": name, "filename": name, "size": len(data), "description": name, "page": None}
    ]
    assert meta["has_javascript"] is False
    assert meta["has_launch_actions"] is False
    assert meta["repaired"] is False
    assert meta["encrypted"] is False
    permissions = meta["permissions"]
    assert isinstance(permissions, dict)
    assert all(permissions.values())
    json.dumps(meta)  # stored as JSON


def test_page_images(pdfs: dict[str, Path], tmp_path: Path) -> None:
    out = run(pdfs["text"], tmp_path, outputs=["page_images"], pages="2-3", image_dpi=72)
    with zipfile.ZipFile(artifact(out, "page_images.zip")) as zf:
        names = sorted(zf.namelist())
        assert names == [
            "full/page-0002.png",
            "full/page-0003.png",
            "manifest.json",
            "preview/page-0002.png",
            "preview/page-0003.png",
        ]
        full = pymupdf.Pixmap(zf.read("full/page-0002.png"))
        assert (full.width, full.height) == (595, 842)  # A4 at 72 dpi
        preview = pymupdf.Pixmap(zf.read("preview/page-0002.png"))
        assert max(preview.width, preview.height) == 512
        manifest = json.loads(zf.read("manifest.json"))
        assert [p["page"] for p in manifest["pages"]] == [2, 3]
        assert manifest["dpi"] == 72


def test_page_images_preview_of_a_small_page(pdfs: dict[str, Path], tmp_path: Path) -> None:
    # 300 pt at 36 dpi is 150 px: the preview is rendered, not scaled up
    out = run(pdfs["images"], tmp_path, outputs=["page_images"], pages="1", image_dpi=36)
    with zipfile.ZipFile(artifact(out, "page_images.zip")) as zf:
        assert pymupdf.Pixmap(zf.read("full/page-0001.png")).width == 150
        assert pymupdf.Pixmap(zf.read("preview/page-0001.png")).width == 512


def test_embedded_images_keep_pixels_and_format(pdfs: dict[str, Path], tmp_path: Path) -> None:
    out = run(pdfs["images"], tmp_path, outputs=["images"])
    with zipfile.ZipFile(artifact(out, "images.zip")) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        images = manifest["images"]
        # the PNG is on pages 1 and 3 but stored once
        assert [(i["format"], i["pages"]) for i in images] == [("png", [1, 3]), ("jpg", [2])]
        pix = pymupdf.Pixmap(zf.read(images[0]["name"]))
        assert (pix.width, pix.height) == (4, 3)
        for y, row in enumerate(pdfgen.KNOWN_PIXELS):
            for x, rgb in enumerate(row):
                assert tuple(pix.pixel(x, y))[:3] == rgb
        # the JPEG comes out byte for byte as it was stored
        assert zf.read(images[1]["name"]) == pdfgen.jpeg_bytes()


def test_images_limit_count(pdfs: dict[str, Path], tmp_path: Path) -> None:
    out = run(pdfs["images"], tmp_path, ExtractLimits(max_images=1), outputs=["images"])
    with zipfile.ZipFile(artifact(out, "images.zip")) as zf:
        assert len(json.loads(zf.read("manifest.json"))["images"]) == 1
    assert any("more than 1 images" in w for w in out.result.warnings)


def test_page_ranges_apply_to_every_output(pdfs: dict[str, Path], tmp_path: Path) -> None:
    progress: list[tuple[int, int]] = []
    out = run(pdfs["text"], tmp_path, progress=progress, outputs=ALL_OUTPUTS, pages="2,4-")
    result = out.result
    assert result.page_count == 5
    assert [p.number for p in result.pages] == [2, 4, 5]
    md = result.markdown or ""
    assert "bravo" in md
    assert "delta" in md
    assert "echo" in md
    assert "alpha" not in md
    assert "charlie" not in md
    meta = result.metadata or {}
    pages = meta["pages"]
    assert isinstance(pages, list)
    assert [p["number"] for p in pages] == [2, 4, 5]
    with zipfile.ZipFile(artifact(out, "page_images.zip")) as zf:
        assert sorted(n for n in zf.namelist() if n.startswith("full/")) == [
            "full/page-0002.png",
            "full/page-0004.png",
            "full/page-0005.png",
        ]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert out.pages_processed == 3


def test_page_ranges_for_images_and_tables(pdfs: dict[str, Path], tmp_path: Path) -> None:
    out = run(pdfs["images"], tmp_path / "a", outputs=["images"], pages="2")
    with zipfile.ZipFile(artifact(out, "images.zip")) as zf:
        assert [i["pages"] for i in json.loads(zf.read("manifest.json"))["images"]] == [[2]]
    out = run(pdfs["rich"], tmp_path / "b", outputs=["tables"], pages="1")
    assert out.result.tables == []


@pytest.mark.parametrize(
    ("spec", "count", "expected"),
    [
        (None, 3, [0, 1, 2]),
        ("1-3,7", 10, [0, 1, 2, 6]),
        ("2-", 4, [1, 2, 3]),
        ("3,1,3", 5, [0, 2]),
        ("2-99", 3, [1, 2]),
    ],
)
def test_parse_pages(spec: str | None, count: int, expected: list[int]) -> None:
    assert parse_pages(spec, count) == expected


@pytest.mark.parametrize("spec", ["0-2", "5-3", "9"])
def test_parse_pages_refuses(spec: str) -> None:
    with pytest.raises(PermanentError) as info:
        parse_pages(spec, 4)
    assert info.value.code is ErrorCode.INVALID_OPTIONS


def test_seed_method_alias_runs(pdfs: dict[str, Path], tmp_path: Path) -> None:
    out = run(pdfs["text"], tmp_path, method="preview_and_native", pages="1")
    assert [p.number for p in out.result.pages] == [1]
    assert {a.name for a in out.artifacts} == {"page_images.zip"}
    assert out.result.metadata is not None


def test_extractor_version_is_a_string() -> None:
    assert EXTRACTOR_VERSION
    assert isinstance(EXTRACTOR_VERSION, str)


def test_the_engine_measures_characters_without_quad_corrections(tmp_path: Path) -> None:
    """Set by the engine itself (it was a side effect of the tests' pymupdf4llm, so production
    ran otherwise); the text is the same either way, only the boxes and the CPU differ."""
    # In a process of its own, where no pymupdf4llm ran first (as in production).
    probe = (
        "import shared.extraction, pymupdf, sys; "
        "print(pymupdf.TOOLS.unset_quad_corrections(), sys.modules['pymupdf4llm'] is not None)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
    assert pymupdf.TOOLS.unset_quad_corrections() is True
    files = [pdfgen.structured_pdf(tmp_path / "s.pdf"), *sorted(CORPUS.glob("*.pdf"))]
    try:
        for path in files:
            with pymupdf.open(path) as doc:
                if doc.needs_pass:
                    continue
                for page in doc:
                    pymupdf.TOOLS.unset_quad_corrections(False)
                    corrected = page.get_text()
                    pymupdf.TOOLS.unset_quad_corrections(True)
                    assert page.get_text() == corrected, (path, page.number)
    finally:
        pymupdf.TOOLS.unset_quad_corrections(True)
