"""Turn one PDF file into an ExtractionResult plus artifact files; runs inside a worker process.

One pass over the selected pages does everything a page needs (text, OCR, Markdown records,
tables, images, renderings, metadata), so memory stays bounded by one page plus what the result
itself holds, and progress is reported as pages finish.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import pymupdf

from shared.errors import ErrorCode, PermanentError
from shared.extraction.base import (
    EXTRACTOR_VERSION,
    ArtifactFile,
    EngineOutput,
    ExtractLimits,
    ProgressFn,
)
from shared.extraction.figures import FigureFinder
from shared.extraction.hostile import (
    HeldDocument,
    MuPdfError,
    PageError,
    is_out_of_memory,
    open_pdf,
    precheck_rendering,
    quiet_mupdf,
    short_error,
    take_mupdf_messages,
)
from shared.extraction.images import EmbeddedImageWriter, PageImageWriter
from shared.extraction.layout import (
    MARKDOWN_ARTIFACT,
    layout_outputs,
    markdown_pages,
    wants_layout,
)
from shared.extraction.markdown import MarkdownBuilder, uri_links
from shared.extraction.metadata import MetadataCollector
from shared.extraction.modelpages import render_model_page
from shared.extraction.ocr import needs_ocr, ocr_dpi_for, ocr_textpage, require_tessdata
from shared.extraction.outline import OutlineItem, outline_items
from shared.extraction.tables import FoundTable, find_tables
from shared.models import LLM_OUTPUT, ExtractionResult, ExtractOptions, PageText

__all__ = [
    "EXTRACTOR_VERSION",
    "MARKDOWN_ARTIFACT",
    "ArtifactFile",
    "EngineOutput",
    "ExtractLimits",
    "HeldDocument",
    "ProgressFn",
    "extract_document",
    "parse_pages",
]

TEXT_FLAGS = pymupdf.TEXTFLAGS_TEXT
"""The flags of `page.get_text()`: the text output equals what a bare PyMuPDF loop gives."""

MARKDOWN_STATE = "markdown-state.json"
"""The Markdown of a page range, not yet rendered (`ExtractLimits.range_part`)."""
TABLES_ARTIFACT = "tables.zip"
MAX_MUPDF_WARNINGS = 20


def parse_pages(spec: str | None, page_count: int) -> list[int]:
    """0-based page indexes for a 1-based spec like "1-3,7"; out-of-range pages are dropped.

    Raises:
        PermanentError: INVALID_OPTIONS for a reversed or zero range, or a spec that selects
            no page of this document.
    """
    if spec is None:
        return list(range(page_count))
    wanted: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        start = int(first)
        end = int(last) if last else (page_count if "-" in part else start)
        if start < 1 or end < start:
            raise PermanentError(f"invalid page range {part!r}", ErrorCode.INVALID_OPTIONS)
        wanted.update(range(start - 1, min(end, page_count)))
    if not wanted:
        raise PermanentError(
            f"pages {spec!r} selects nothing in a {page_count}-page document",
            ErrorCode.INVALID_OPTIONS,
        )
    return sorted(wanted)


class _Extraction:
    """The state of one document's single pass over its pages."""

    def __init__(
        self,
        doc: pymupdf.Document,
        options: ExtractOptions,
        limits: ExtractLimits,
        out_dir: str,
    ) -> None:
        self.doc = doc
        self.options = options
        self.limits = limits
        self.out_dir = out_dir
        outputs = set(options.outputs)
        self.want_text = "text" in outputs
        self.want_markdown = "markdown" in outputs
        self.want_tables = "tables" in outputs
        self.want_layout = wants_layout(options)
        self.needs_text = self.want_text or self.want_layout
        self.ocr_mode = options.ocr if self.needs_text else "never"
        self.warnings: list[str] = []
        self.mupdf_messages: list[str] = []
        self.result = ExtractionResult(page_count=doc.page_count)
        self.tessdata: str | None = None
        boxes = "blocks" in outputs or "chunks" in outputs
        self.want_figures = boxes and self.want_layout
        self.figure_finder: FigureFinder | None = None
        """Made for the first native text page that needs figures, then used for the rest."""
        self.figures: list[tuple[float, float, float, float]] = []
        """The current page's figure candidates (native text pages only)."""
        self.markdown = MarkdownBuilder(boxes=boxes) if self.want_layout else None
        self.tables: list[FoundTable] = []
        self.metadata = MetadataCollector(limits.max_links) if "metadata" in outputs else None
        self.processed = 0
        self.from_first_page = True
        self.want_page_images = "page_images" in outputs
        self.want_images = "images" in outputs
        self.page_images: PageImageWriter | None = None
        self.images: EmbeddedImageWriter | None = None
        self.want_model_pages = LLM_OUTPUT in outputs
        self.model_pages: list[ArtifactFile] = []

    def run(self, progress: ProgressFn) -> EngineOutput:
        doc = self.doc
        indexes = parse_pages(self.options.pages, doc.page_count)
        self.from_first_page = indexes[:1] == [0]
        self._note_repair()
        self._prechecks(indexes)
        try:
            if self.want_page_images:
                self.page_images = PageImageWriter(
                    self.out_dir, self.options.image_dpi, self.limits.preview_long_edge
                )
            if self.want_images:
                self.images = EmbeddedImageWriter(self.out_dir, self.limits, self.warnings)
            self._pages(indexes, progress)
            return self._finish()
        except BaseException:
            self._abort()
            raise

    def _pages(self, indexes: list[int], progress: ProgressFn) -> None:
        total = len(indexes)
        failed = 0
        self.processed = 0
        for done, index in enumerate(indexes, start=1):
            try:
                page = self.doc.load_page(index)
                self._page(page)
            except PageError as exc:
                if is_out_of_memory(exc):
                    raise MemoryError(str(exc)) from exc
                failed += 1
                self.warnings.append(f"page {index + 1} could not be read: {short_error(exc)}")
            take_mupdf_messages(self.mupdf_messages)
            progress(done, total)
        if failed == total:
            raise PermanentError(
                "the PDF is damaged: none of the selected pages could be read",
                ErrorCode.PDF_DAMAGED,
            )
        self.processed = total - failed

    def _note_repair(self) -> None:
        # MuPDF repairs on open, or later when a page meets a broken object
        if self.doc.is_repaired and not any(w.startswith("repaired:") for w in self.warnings):
            self.warnings.insert(
                0,
                "repaired: the file is damaged; MuPDF rebuilt its structure, so some content "
                "may be missing",
            )

    def _abort(self) -> None:
        """Close and drop half-written artifacts of a failed extraction."""
        for writer in (self.page_images, self.images):
            if writer is not None:
                writer.discard()

    def _prechecks(self, indexes: list[int]) -> None:
        """Everything that can refuse the document before the first page is processed."""
        if self.ocr_mode == "always":
            self.tessdata = require_tessdata(self.options.ocr_language, self.limits.tessdata)
        if self.want_page_images:
            precheck_rendering(
                self.doc, indexes, self.options.image_dpi, self.limits, "page images"
            )
        if self.want_model_pages:
            precheck_rendering(
                self.doc, indexes, self.limits.llm_dpi, self.limits, "the vision model"
            )
        if self.ocr_mode == "always":
            for index in indexes:
                try:
                    page = self.doc.load_page(index)
                except PageError:
                    continue
                ocr_dpi_for(page, self.limits)

    def _page(self, page: pymupdf.Page) -> None:
        number = page.number + 1
        if self.metadata is not None:
            self.metadata.add_page(page)
        textpage, ocr = self._textpage(page) if self.needs_text else (None, False)
        found: list[FoundTable] = []
        if self.want_tables:
            cells = textpage if textpage is not None else page.get_textpage(flags=TEXT_FLAGS)
            found = find_tables(page, cells)
            self.tables.extend(found)
        if self.markdown is not None and textpage is not None:
            self.markdown.add_page(
                number,
                textpage,
                textpage.rect,
                uri_links(page),
                [(t.bbox, t.markdown()) for t in found],
                ocr=ocr,
                figures=() if ocr else self.figures,
            )
        if self.images is not None:
            self.images.add_page(self.doc, page)
        if self.page_images is not None:
            self.page_images.add(page)
        if self.want_model_pages:
            self.model_pages.append(render_model_page(page, self.limits.llm_dpi, self.out_dir))

    def _textpage(self, page: pymupdf.Page) -> tuple[pymupdf.TextPage, bool]:
        """The page's text layer, or its OCR when `ocr` says so, and whether it is OCR.

        Records the page's text for the `text` output.
        """
        textpage: pymupdf.TextPage | None = None
        text = ""
        ocr = self.ocr_mode == "always"
        self.figures = []
        if not ocr:
            if self.want_figures:
                # one run of the page for its text and its figures' boxes
                if self.figure_finder is None:
                    self.figure_finder = FigureFinder(TEXT_FLAGS)
                textpage, self.figures = self.figure_finder.textpage(page)
            else:
                textpage = page.get_textpage(flags=TEXT_FLAGS)
            # the `text` output, and the auto check, which needs the text only where an image
            # could be a scan (with figures too: a scan's blocks are its OCR)
            if self.want_text or (self.ocr_mode == "auto" and page.get_images()):
                text = textpage.extractText()
                ocr = self.ocr_mode == "auto" and needs_ocr(page, text)
        unavailable = False
        if ocr and self.ocr_mode == "auto" and self.tessdata is None:
            try:
                self.tessdata = require_tessdata(self.options.ocr_language, self.limits.tessdata)
            except PermanentError as exc:
                # `auto` keeps the text layer it has; only `ocr: always` needs Tesseract.
                if exc.code is not ErrorCode.OCR_UNAVAILABLE:
                    raise
                self.warnings.append(f"page {page.number + 1}: not OCRed: {exc.message}")
                ocr, unavailable = False, True
        if ocr:
            if self.tessdata is None:
                self.tessdata = require_tessdata(self.options.ocr_language, self.limits.tessdata)
            textpage = ocr_textpage(
                page, TEXT_FLAGS, self.options.ocr_language, self.tessdata, self.limits
            )
            text = textpage.extractText() if self.want_text else ""
        assert textpage is not None
        if self.want_text:
            self.result.pages.append(
                PageText(number=page.number + 1, text=text, ocr=ocr, ocr_unavailable=unavailable)
            )
        return textpage, ocr

    def _finish(self) -> EngineOutput:
        result = self.result
        artifacts: list[ArtifactFile] = []
        if self.markdown is not None and self.limits.range_part:
            path = os.path.join(self.out_dir, MARKDOWN_STATE)
            # the outline is whole-document: the range that starts the document brings it
            if self.from_first_page:
                self.markdown.outline = self._outline()
            state = self.markdown.state()
            Path(path).write_text(json.dumps(state), encoding="utf-8")
            artifacts.append(ArtifactFile(MARKDOWN_STATE, path, "application/json"))
        elif self.markdown is not None:
            self.markdown.outline = self._outline()
            layout = layout_outputs(self.markdown, self.options)
            if self.want_markdown:
                result.markdown = layout.markdown
                result.markdown_pages = markdown_pages(layout)
            for file in layout.files:
                path = os.path.join(self.out_dir, file.name)
                Path(path).write_bytes(file.data)
                artifacts.append(ArtifactFile(file.name, path, file.content_type))
        if self.want_tables:
            result.tables = [t.as_dict() for t in self.tables]
            artifacts.append(self._tables_artifact())
        if self.page_images is not None:
            artifacts.append(self.page_images.close())
        if self.images is not None:
            artifacts.append(self.images.close())
        artifacts.extend(self.model_pages)
        if self.metadata is not None:
            result.metadata = (
                self.metadata.page_parts()
                if self.limits.range_part and not self.from_first_page
                else self.metadata.build(self.doc)
            )
        self._note_repair()
        take_mupdf_messages(self.mupdf_messages)
        result.warnings = self.warnings + [
            f"mupdf: {m}" for m in self.mupdf_messages[:MAX_MUPDF_WARNINGS]
        ]
        return EngineOutput(result=result, artifacts=artifacts, pages_processed=self.processed)

    def _outline(self) -> list[OutlineItem]:
        """The PDF's outline: headings for the Markdown and the `blocks`, and their outline."""
        try:
            return outline_items(self.doc)
        except MuPdfError:
            return []

    def _tables_artifact(self) -> ArtifactFile:
        path = os.path.join(self.out_dir, TABLES_ARTIFACT)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            parts = []
            for table in self.tables:
                zf.writestr(f"{table.name}.csv", table.csv())
                parts.append(f"## Page {table.page}, table {table.index}\n\n{table.markdown()}")
            zf.writestr("tables.md", "\n".join(parts))
        return ArtifactFile(TABLES_ARTIFACT, path, "application/zip")


def extract_document(
    path: str,
    options: ExtractOptions,
    limits: ExtractLimits,
    out_dir: str,
    progress: ProgressFn,
    held: HeldDocument | None = None,
) -> EngineOutput:
    """Extract what `options` asks for from the PDF at `path`.

    Args:
        path: the PDF file (untrusted).
        options: outputs, page ranges, OCR mode and language, image resolution.
        limits: bounds checked before the per-page work.
        out_dir: an existing folder for the artifact files.
        progress: called as progress(pages_done, pages_total) after each page.
        held: where the document is taken from and left open (a page range of a fanned-out
            document, for the next range of it), else it is opened and closed here.

    Returns:
        The result and the artifact files written into `out_dir`.

    Raises:
        PermanentError: with a stable code for every input the engine refuses: EMPTY_FILE,
            FILE_TOO_LARGE, NOT_A_PDF, PDF_ENCRYPTED, PDF_DAMAGED, TOO_MANY_PAGES,
            PAGE_TOO_LARGE, OCR_UNAVAILABLE, INVALID_OPTIONS.
        MemoryError: MuPDF could not allocate memory (the worker's limit).
    """
    with quiet_mupdf():
        doc = open_pdf(path, limits) if held is None else held.get(path, limits)
        try:
            return _Extraction(doc, options, limits, out_dir).run(progress)
        except BaseException:
            if held is not None:
                held.release()  # what failed is not kept for another range
            raise
        finally:
            if held is None:
                doc.close()


SPLIT_SAMPLES = 5
"""Pages a document over the fan-out's page floor is sampled at to estimate its extraction."""


def page_count_above(
    path: str,
    limits: ExtractLimits,
    held: HeldDocument,
    above: int,
    options: ExtractOptions,
    min_cpu_s: float,
) -> int:
    """The page count of the PDF at `path` when it is over `above` and its extraction would
    take one worker at least `min_cpu_s` (`worth_splitting`), else 0; the document is opened
    into `held` (checked and scanned as `extract_document` opens it) and left there."""
    with quiet_mupdf():
        doc = held.get(path, limits)
        count: int = doc.page_count
        if count <= above:
            return 0
        return count if worth_splitting(doc, options, min_cpu_s) else 0


def worth_splitting(doc: pymupdf.Document, options: ExtractOptions, min_cpu_s: float) -> bool:
    """Whether extracting `doc` whole would take one worker at least `min_cpu_s` of CPU: OCR is
    to run (`always`, or `auto` on a sampled page without a text layer), or the text of
    `SPLIT_SAMPLES` pages spread over it, scaled to its page count, takes that long. Each sample
    is timed (this process's CPU time) the second time it is read: the first reading parses the
    fonts its page uses, which a whole extraction parses once for all its pages. A split costs
    its ranges, their parts and the merge (~0.25 CPU-s for a 495-page manual whose text takes
    ~0.6): worth it only for long extractions."""
    if min_cpu_s <= 0 or options.ocr == "always":
        return True
    count = doc.page_count
    picks = sorted({i * (count - 1) // (SPLIT_SAMPLES - 1) for i in range(SPLIT_SAMPLES)})
    readable = []
    for index in picks:
        try:
            page = doc[index]
            text = page.get_text(flags=TEXT_FLAGS)
        except PageError as exc:
            if is_out_of_memory(exc):
                raise MemoryError(str(exc)) from exc
            continue  # not a sample: the extraction reads it again and reports it
        if options.ocr == "auto" and needs_ocr(page, text):
            return True
        readable.append(index)
    if not readable:
        return False
    started = time.process_time()
    for index in readable:
        doc[index].get_text(flags=TEXT_FLAGS)
    per_page = (time.process_time() - started) / len(readable)
    return bool(per_page * count >= min_cpu_s)
