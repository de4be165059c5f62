"""Hostile input: every file ends with its stable error code or a clean success."""

from __future__ import annotations

import random
import re
import zlib
from pathlib import Path

import pytest

from shared.errors import ErrorCode, PermanentError
from shared.extraction import EngineOutput, ExtractLimits, HeldDocument, extract_document, inflate
from shared.extraction.hostile import open_pdf, scan_actions
from shared.extraction.inflate import check_inflated, inflated_bytes, stream_starts
from shared.models import ExtractOptions, Output
from tests.factories import CORPUS
from tests.unit import pdfgen
from tests.unit.test_extraction_outputs import ALL_OUTPUTS


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    empty = d / "empty.pdf"
    empty.write_bytes(b"")
    rich = pdfgen.rich_pdf(d / "rich.pdf")
    return {
        "rich": rich,
        "empty": empty,
        "random": pdfgen.random_bytes(d / "random.pdf"),
        "html": pdfgen.html_renamed(d / "page.pdf"),
        "png": pdfgen.png_renamed(d / "image.pdf"),
        "truncated": pdfgen.truncated_pdf(rich, d / "truncated.pdf"),
        "cut_header": pdfgen.truncated_pdf(rich, d / "cut.pdf", keep=0.004),
        "broken_xref": pdfgen.broken_xref_pdf(d / "xref.pdf"),
        "encrypted": pdfgen.encrypted_pdf(d / "locked.pdf", user_pw="user-secret"),
        "owner_only": pdfgen.encrypted_pdf(d / "owner.pdf", user_pw=None),
        "blank_pages": pdfgen.blank_pages_pdf(d / "blank.pdf", 2000),
        "huge_page": pdfgen.huge_mediabox_pdf(d / "huge.pdf"),
        "bomb": pdfgen.bomb_pdf(d / "bomb.pdf"),
        "actions": pdfgen.actions_pdf(d / "actions.pdf"),
        "cycle": pdfgen.page_tree_cycle_pdf(d / "cycle.pdf"),
        "broken_content": pdfgen.broken_content_pdf(d / "content.pdf"),
    }


def run(
    path: Path,
    out_dir: Path,
    outputs: tuple[Output, ...] = ALL_OUTPUTS,
    limits: ExtractLimits | None = None,
    **options: object,
) -> EngineOutput:
    out_dir.mkdir(parents=True, exist_ok=True)
    return extract_document(
        str(path),
        ExtractOptions.model_validate({"outputs": outputs, "ocr": "never", **options}),
        limits or ExtractLimits(),
        str(out_dir),
        lambda done, total: None,
    )


def refused(path: Path, out_dir: Path, **kwargs: object) -> PermanentError:
    with pytest.raises(PermanentError) as info:
        run(path, out_dir, **kwargs)  # type: ignore[arg-type]
    message = info.value.message
    assert str(path) not in message
    assert str(out_dir) not in message
    return info.value


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("empty", ErrorCode.EMPTY_FILE),
        ("random", ErrorCode.NOT_A_PDF),
        ("html", ErrorCode.NOT_A_PDF),
        ("png", ErrorCode.NOT_A_PDF),
        ("encrypted", ErrorCode.PDF_ENCRYPTED),
        ("cycle", ErrorCode.PDF_DAMAGED),
        ("cut_header", ErrorCode.PDF_DAMAGED),
    ],
)
def test_refused_with_stable_code(
    files: dict[str, Path], tmp_path: Path, name: str, code: ErrorCode
) -> None:
    assert refused(files[name], tmp_path).code is code


def test_png_is_named_in_the_message(files: dict[str, Path], tmp_path: Path) -> None:
    assert "PNG" in refused(files["png"], tmp_path).message


def test_file_size_limit(files: dict[str, Path], tmp_path: Path) -> None:
    error = refused(files["rich"], tmp_path, limits=ExtractLimits(max_file_bytes=100))
    assert error.code is ErrorCode.FILE_TOO_LARGE


def test_truncated_file_is_repaired(files: dict[str, Path], tmp_path: Path) -> None:
    out = run(files["truncated"], tmp_path)
    assert out.result.warnings[0].startswith("repaired:")
    assert "Extraction Guide" in out.result.pages[0].text
    assert (out.result.metadata or {})["repaired"] is True


def test_broken_xref_is_repaired(
    files: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = run(files["broken_xref"], tmp_path)
    assert [p.text.strip() for p in out.result.pages] == ["repaired file words"]
    assert out.result.warnings[0].startswith("repaired:")
    # MuPDF's complaints become warnings, not stderr noise in the worker's log
    assert any(w.startswith("mupdf: ") for w in out.result.warnings)
    captured = capfd.readouterr()
    assert "repair" not in captured.err
    assert "repair" not in captured.out


def test_broken_content_stream_keeps_what_it_can(files: dict[str, Path], tmp_path: Path) -> None:
    out = run(files["broken_content"], tmp_path, ("text", "markdown"))
    assert [p.text.strip() for p in out.result.pages] == ["good page words", "broken page words"]
    assert "good page words" in (out.result.markdown or "")
    assert any("Missing" in w for w in out.result.warnings if w.startswith("mupdf: "))
    assert out.pages_processed == 2


def test_owner_password_only_opens_and_reports_permissions(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = run(files["owner_only"], tmp_path, ("text", "metadata"))
    assert "secret words inside" in out.result.pages[0].text
    meta = out.result.metadata or {}
    assert meta["encrypted"] is True
    permissions = meta["permissions"]
    assert isinstance(permissions, dict)
    assert permissions["print"] is True
    assert permissions["copy"] is False
    assert permissions["modify"] is False


def test_thousands_of_blank_pages_over_the_limit(files: dict[str, Path], tmp_path: Path) -> None:
    error = refused(files["blank_pages"], tmp_path, limits=ExtractLimits(max_pages=1000))
    assert error.code is ErrorCode.TOO_MANY_PAGES
    assert "2000" in error.message


def test_thousands_of_blank_pages_within_the_limit(files: dict[str, Path], tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    out = extract_document(
        str(files["blank_pages"]),
        ExtractOptions(outputs=("text", "markdown", "metadata")),
        ExtractLimits(),
        str(tmp_path),
        lambda done, total: calls.append((done, total)),
    )
    assert out.result.page_count == 2000
    assert len(out.result.pages) == 2000
    assert all(p.text == "" and not p.ocr for p in out.result.pages)
    assert out.result.markdown == ""
    assert len(calls) == 2000
    assert calls[-1] == (2000, 2000)


def test_huge_media_box(files: dict[str, Path], tmp_path: Path) -> None:
    # text needs no rendering: a clean success
    out = run(files["huge_page"], tmp_path / "text", ("text", "metadata", "images"))
    assert "giant page words" in out.result.pages[0].text
    # rendering is refused before any pixel is allocated
    error = refused(files["huge_page"], tmp_path / "img", outputs=("page_images",))
    assert error.code is ErrorCode.PAGE_TOO_LARGE


def test_decompression_bomb(files: dict[str, Path], tmp_path: Path) -> None:
    assert files["bomb"].stat().st_size < 5_000
    # text, Markdown and metadata never decode the image
    out = run(files["bomb"], tmp_path / "a", ("text", "markdown", "metadata", "tables"))
    assert "bomb page words" in out.result.pages[0].text
    # the image output skips it with a warning
    out = run(files["bomb"], tmp_path / "b", ("images",))
    assert any("40000x40000" in w for w in out.result.warnings)
    # rendering the page would decode it: refused up front
    error = refused(files["bomb"], tmp_path / "c", outputs=("page_images",))
    assert error.code is ErrorCode.PAGE_TOO_LARGE
    assert "40000x40000" in error.message


def test_javascript_and_launch_actions_are_reported_not_run(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = run(files["actions"], tmp_path)
    assert "actions page words" in out.result.pages[0].text
    meta = out.result.metadata or {}
    assert meta["has_javascript"] is True
    assert meta["has_launch_actions"] is True
    assert meta["actions"] == {"javascript": 2, "launch": 1, "uri": 1}
    links = meta["links"]
    assert isinstance(links, list)
    assert {link["uri"] for link in links} == {
        "file:calc.exe#page=1",
        "https://tracker.invalid/ping",
    }


def test_scan_actions_on_a_clean_file(files: dict[str, Path]) -> None:
    import pymupdf

    with pymupdf.open(files["rich"]) as doc:
        counts, complete = scan_actions(doc)
    assert complete is True
    assert "javascript" not in counts
    assert "launch" not in counts


def test_every_hostile_file_then_a_good_one(files: dict[str, Path], tmp_path: Path) -> None:
    """The engine keeps working after each bad file (no state leaks between documents)."""
    codes = []
    for index, path in enumerate(files.values()):
        try:
            run(path, tmp_path / f"h{index}", ("text", "metadata"))
            codes.append("ok")
        except PermanentError as exc:
            codes.append(str(exc.code))
        out = run(files["rich"], tmp_path / f"g{index}", ("text",))
        assert "Extraction Guide" in out.result.pages[0].text
    assert set(codes) <= {"ok", *(code.value for code in ErrorCode)}
    assert codes.count("ok") >= 8


def test_a_decompression_bomb_fails_with_decompression_limit(tmp_path: Path) -> None:
    """Issue 14 #11: the inflated bytes of a document are bounded by a setting."""
    bomb = pdfgen.bomb_pdf(tmp_path / "bomb.pdf", side=20_000)  # ~50 MB inflated, stacked Flate
    assert bomb.stat().st_size < 64 * 1024
    with pytest.raises(PermanentError) as err:
        open_pdf(str(bomb), ExtractLimits(max_inflated_bytes=16 * 1024 * 1024))
    assert err.value.code is ErrorCode.DECOMPRESSION_LIMIT
    open_pdf(str(bomb), ExtractLimits(max_inflated_bytes=1024 * 1024 * 1024)).close()


STREAM_KEYWORD = re.compile(rb"(?<!end)stream\r?\n")
"""What the decompression scan took for the start of a stream's data before it used `find`."""


def test_the_scan_finds_every_stream_the_regular_expression_found() -> None:
    """`stream_starts` (C-speed `find`) sees the same streams as the regex it replaced: at the
    file's start, after `end` or not, with CR LF, LF or neither, back to back, in binary."""
    pieces = [b"stream", b"end", b"\r", b"\n", b"e", b"nd", b"s", b"tream", b"x", b"\x00"]
    rnd = random.Random(20)
    samples = [b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 14))) for _ in range(5000)]
    samples += [b"stream\n", b"dstream\n", b"endstream\n", b"streamstream\r\n", b"stream\r"]
    for data in samples:
        assert list(stream_starts(data)) == [m.end() for m in STREAM_KEYWORD.finditer(data)], data


def test_zlib_ng_counts_what_the_standard_zlib_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan inflates with zlib-ng: every stream of the corpus, a stacked bomb and a broken
    stream count the same bytes as with the standard library's zlib."""
    bomb = pdfgen.bomb_pdf(tmp_path / "bomb.pdf", side=8_000)
    broken = tmp_path / "broken.pdf"
    packed = zlib.compress(random.Random(5).randbytes(300_000))
    broken.write_bytes(b"stream\n" + packed[:150_000] + b"garbage\nendstream")
    files = [*sorted(CORPUS.glob("*.pdf")), bomb, broken]  # the corpus: where it is beside us
    budget = 1 << 30
    fast = [inflated_bytes(str(f), budget) for f in files]
    monkeypatch.setattr(inflate, "zlib", zlib)
    monkeypatch.setattr(inflate, "_ZLIB_ERROR", zlib.error)
    assert fast == [inflated_bytes(str(f), budget) for f in files]
    assert fast[-2] >= 8_000 * 8_000 // 8  # the bomb's 1-bit pixels, through both layers
    assert fast[-1] > 0  # a broken stream: what came before the damage


def test_a_bomb_inside_another_stream_s_span_is_counted(tmp_path: Path) -> None:
    """A stream whose `/Length` ends early can hide the next object's stream before any
    `endstream`: the scan looks for stream keywords everywhere, not only after an endstream."""
    bomb = zlib.compress(bytes(32 * 1024 * 1024), 9)
    data = (
        b"stream\r\nabc\n1 0 obj << /Length 3 >>\nstream\nabc\n"
        b"2 0 obj << /Filter /FlateDecode >>\nstream\r\n" + bomb + b"\nendstream\nendobj\n"
    )
    path = tmp_path / "hidden.pdf"
    path.write_bytes(b"%PDF-1.4\n" + data)
    with pytest.raises(PermanentError) as err:
        check_inflated(str(path), 16 * 1024 * 1024)
    assert err.value.code is ErrorCode.DECOMPRESSION_LIMIT
    check_inflated(str(path), 64 * 1024 * 1024)
    # the very first bytes of a file can be a stream's data too
    path.write_bytes(b"stream\n" + bomb + b"\nendstream")
    with pytest.raises(PermanentError):
        check_inflated(str(path), 16 * 1024 * 1024)


def test_a_held_document_still_bounds_decompression_and_serves_only_its_file(
    tmp_path: Path,
) -> None:
    """A worker's document kept open between ranges (`HeldDocument`): the range that bounds
    decompression is refused even when a range without the bound opened the file first, and
    what is held is only ever the file now at the path."""
    bomb = pdfgen.bomb_pdf(tmp_path / "bomb.pdf", side=20_000)  # ~50 MB inflated
    held = HeldDocument()
    doc = held.get(str(bomb), ExtractLimits(max_inflated_bytes=None))
    assert held.holds(str(bomb))
    assert held.get(str(bomb), ExtractLimits(max_inflated_bytes=None)) is doc
    with pytest.raises(PermanentError) as err:
        held.get(str(bomb), ExtractLimits(max_inflated_bytes=16 * 1024 * 1024))
    assert err.value.code is ErrorCode.DECOMPRESSION_LIMIT
    assert not held.is_open  # a refusal keeps nothing open
    rich = pdfgen.rich_pdf(tmp_path / "rich.pdf")
    doc = held.get(str(rich), ExtractLimits())
    assert not held.holds(str(bomb))
    with pytest.raises(PermanentError) as err:
        held.get(str(rich), ExtractLimits(max_pages=doc.page_count - 1))
    assert err.value.code is ErrorCode.TOO_MANY_PAGES
    doc = held.get(str(rich), ExtractLimits())
    rich.write_bytes(bomb.read_bytes())  # another file at the same path
    assert not held.holds(str(rich))
    assert held.get(str(rich), ExtractLimits(max_inflated_bytes=None)) is not doc
    held.release()
    assert not held.is_open
