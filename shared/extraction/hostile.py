"""Opening untrusted PDFs: stable error codes, and resource limits checked before any page work."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pymupdf

from shared.errors import ErrorCode, PermanentError
from shared.extraction.base import ExtractLimits
from shared.extraction.inflate import check_inflated

PDF_MAGIC = b"%PDF-"
HEADER_WINDOW = 1024
"""Readers accept the header anywhere in the first 1024 bytes; so do we, and nowhere else."""

MAX_MUPDF_MESSAGES = 50

MuPdfError = (RuntimeError, ValueError, IndexError, pymupdf.mupdf.FzErrorBase)
"""What PyMuPDF raises for broken content or arguments it refuses (open, xref access)."""

PageError = (RuntimeError, pymupdf.mupdf.FzErrorBase)
"""What MuPDF raises while loading or processing a broken page. Narrower than MuPdfError, so
that a ValueError from our own code is a crash to fix, not a page quietly skipped."""

_NOT_PDF_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"PK\x03\x04": "a ZIP archive (or an Office document)",
    b"%!PS": "a PostScript file",
}


def is_out_of_memory(exc: BaseException) -> bool:
    """MuPDF reports a failed allocation as an ordinary error; the pool must see MemoryError."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return "malloc" in text or "out of memory" in text or "cannot allocate" in text


_QUOTED_PATH = re.compile(r"""(['"])/[^'"]*\1""")


def short_error(exc: BaseException, path: str | None = None) -> str:
    """A one-line description of a MuPDF error that carries no server path."""
    text = " ".join(str(exc).split())
    if path:
        text = text.replace(path, "the file")
    text = _QUOTED_PATH.sub("the file", text)
    text = text.removeprefix("code=").lstrip("0123456789: ")
    return text[:200] or type(exc).__name__


def sniff(path: str, limits: ExtractLimits) -> None:
    """Refuse what is not a PDF before MuPDF sees it (MuPDF repairs HTML into a 1-page PDF).

    Raises:
        PermanentError: EMPTY_FILE, FILE_TOO_LARGE or NOT_A_PDF.
    """
    size = os.path.getsize(path)
    if size == 0:
        raise PermanentError("the file is empty", ErrorCode.EMPTY_FILE)
    if limits.max_file_bytes is not None and size > limits.max_file_bytes:
        raise PermanentError(
            f"the file has {size} bytes, more than the limit of {limits.max_file_bytes}",
            ErrorCode.FILE_TOO_LARGE,
        )
    with open(path, "rb") as fh:
        head = fh.read(HEADER_WINDOW)
    if PDF_MAGIC not in head:
        kind = next((k for sig, k in _NOT_PDF_SIGNATURES.items() if head.startswith(sig)), None)
        stripped = head.lstrip().lower()
        if kind is None and stripped.startswith((b"<!doctype html", b"<html", b"<?xml")):
            kind = "an HTML or XML document"
        detail = f" (it looks like {kind})" if kind else ""
        raise PermanentError(f"the file is not a PDF: no %PDF- header{detail}", ErrorCode.NOT_A_PDF)


def open_pdf(path: str, limits: ExtractLimits) -> pymupdf.Document:
    """Open an untrusted file as a PDF, or fail with a stable code.

    Raises:
        PermanentError: EMPTY_FILE, FILE_TOO_LARGE, NOT_A_PDF, DECOMPRESSION_LIMIT, PDF_DAMAGED,
            PDF_ENCRYPTED or TOO_MANY_PAGES.
    """
    sniff(path, limits)
    check_inflated(path, limits.max_inflated_bytes)
    try:
        # filetype="pdf": never let MuPDF guess (it opens images, HTML, EPUB, XPS as documents)
        doc = pymupdf.open(path, filetype="pdf")
    except MuPdfError as exc:
        if is_out_of_memory(exc):
            raise MemoryError(str(exc)) from exc
        raise PermanentError(
            f"the PDF is damaged and cannot be opened: {short_error(exc, path)}",
            ErrorCode.PDF_DAMAGED,
        ) from exc
    try:
        if not doc.is_pdf:
            raise PermanentError("the file is not a PDF", ErrorCode.NOT_A_PDF)
        if doc.needs_pass:
            raise PermanentError(
                "the PDF is encrypted and needs a password to open", ErrorCode.PDF_ENCRYPTED
            )
        check_page_count(doc, limits)
    except PermanentError:
        doc.close()
        raise
    except MuPdfError as exc:
        doc.close()
        if is_out_of_memory(exc):
            raise MemoryError(str(exc)) from exc
        raise PermanentError(
            f"the PDF is damaged: {short_error(exc, path)}", ErrorCode.PDF_DAMAGED
        ) from exc
    except BaseException:
        doc.close()
        raise
    return doc


def check_page_count(doc: pymupdf.Document, limits: ExtractLimits) -> None:
    """Raises PermanentError: PDF_DAMAGED without pages, TOO_MANY_PAGES over the limit."""
    count = doc.page_count
    if count <= 0:
        raise PermanentError("the PDF has no pages", ErrorCode.PDF_DAMAGED)
    if count > limits.max_pages:
        raise PermanentError(
            f"the PDF has {count} pages, more than the limit of {limits.max_pages}",
            ErrorCode.TOO_MANY_PAGES,
        )


FileIdentity = tuple[str, int, int, int, int]


def file_identity(path: str) -> FileIdentity:
    """(path, device, inode, size, mtime): another file at the same path is another document."""
    st = os.stat(path)
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class HeldDocument:
    """One open document a worker keeps between page ranges of it (shared/extraction/fanout.py).

    A range opened afresh parses again every font and resource its pages use, and MuPDF's store
    is emptied after every document: measured, the ranges of a 495-page manual cost 1.17x its
    unsplit extraction that way, 1.05x when a worker's next range of the same file finds it
    open. Only the same file (`file_identity`) is served from it; every request still passes
    `sniff` and the decompression bound its limits ask for (the first range bounds the file).
    """

    def __init__(self) -> None:
        self._key: FileIdentity | None = None
        self._doc: pymupdf.Document | None = None

    @property
    def is_open(self) -> bool:
        return self._doc is not None

    def holds(self, path: str) -> bool:
        """Whether the document held is the file now at `path`."""
        if self._doc is None:
            return False
        try:
            return file_identity(path) == self._key
        except OSError:
            return False

    def get(self, path: str, limits: ExtractLimits) -> pymupdf.Document:
        """The file at `path` opened (see `open_pdf`), the one held when it is that file."""
        if self._doc is not None and self.holds(path):
            try:
                sniff(path, limits)
                check_inflated(path, limits.max_inflated_bytes)
                check_page_count(self._doc, limits)
            except BaseException:
                self.release()
                raise
            return self._doc
        self.release()
        key = file_identity(path)
        self._doc = open_pdf(path, limits)
        self._key = key
        return self._doc

    def release(self) -> None:
        """Close the document held, if any."""
        doc, self._doc, self._key = self._doc, None, None
        if doc is not None:
            doc.close()


def render_pixels(rect: pymupdf.Rect, dpi: float) -> int:
    """Pixels of the page `rect` rendered at `dpi`."""
    zoom = dpi / 72.0
    width = float(abs(rect.width))
    height = float(abs(rect.height))
    return math.ceil(width * zoom) * math.ceil(height * zoom)


def largest_image(page: pymupdf.Page) -> tuple[int, int]:
    """(width, height) of the largest image the page would decode when rendered, from the
    image dictionaries alone (nothing is decoded)."""
    best = (0, 0)
    for item in page.get_images(full=True):
        width, height = int(item[2]), int(item[3])
        if width * height > best[0] * best[1]:
            best = (width, height)
    return best


def check_render(page: pymupdf.Page, dpi: float, limits: ExtractLimits, purpose: str) -> None:
    """Refuse to render a page whose pixmap or whose images would exceed the limits.

    Raises:
        PermanentError: PAGE_TOO_LARGE.
    """
    number = page.number + 1
    pixels = render_pixels(page.rect, dpi)
    if pixels > limits.max_page_pixels:
        raise PermanentError(
            f"page {number} would render to {pixels} pixels at {dpi:g} dpi for {purpose}, "
            f"more than the limit of {limits.max_page_pixels}",
            ErrorCode.PAGE_TOO_LARGE,
        )
    width, height = largest_image(page)
    if width * height > limits.max_image_pixels:
        raise PermanentError(
            f"page {number} contains an image of {width}x{height} pixels, more than the "
            f"decoded image limit of {limits.max_image_pixels}",
            ErrorCode.PAGE_TOO_LARGE,
        )


def precheck_rendering(
    doc: pymupdf.Document, indexes: Sequence[int], dpi: float, limits: ExtractLimits, purpose: str
) -> None:
    """Check every selected page against the render limits before any page is rendered.

    Pages that cannot even be loaded are left to the per-page loop, which reports them.

    Raises:
        PermanentError: PAGE_TOO_LARGE.
    """
    for index in indexes:
        try:
            page = doc.load_page(index)
        except MuPdfError as exc:
            if is_out_of_memory(exc):
                raise MemoryError(str(exc)) from exc
            continue
        check_render(page, dpi, limits, purpose)


_ACTION_KINDS = {
    "JavaScript": "javascript",
    "Launch": "launch",
    "URI": "uri",
    "GoToR": "remote_goto",
    "GoToE": "embedded_goto",
    "SubmitForm": "submit_form",
    "ImportData": "import_data",
    "Rendition": "rendition",
    "Sound": "sound",
    "Movie": "movie",
}
_ACTION = re.compile(rb"/S\s*/(" + "|".join(_ACTION_KINDS).encode() + rb")(?![A-Za-z0-9#])")
_JS_KEY = re.compile(rb"/JS(?![A-Za-z0-9#])")

MAX_XREFS_SCANNED = 200_000
_SCAN_CHUNK = 5000


def _count_actions(source: bytes, counts: dict[str, int]) -> None:
    found = _ACTION.findall(source)
    for kind in found:
        name = _ACTION_KINDS[kind.decode()]
        counts[name] = counts.get(name, 0) + 1
    if b"/JavaScript" not in source:
        # a /JS entry without its /S /JavaScript: malformed, still script
        js = len(_JS_KEY.findall(source))
        if js:
            counts["javascript"] = counts.get("javascript", 0) + js


def scan_actions(doc: pymupdf.Document) -> tuple[dict[str, int], bool]:
    """Count the actions the PDF carries, by kind, reading object dictionaries only.

    Actions sit in their own objects or inline in annotations (/A), form fields and pages
    (/AA), outline items and the catalog (/OpenAction): every dictionary and array object is
    printed by MuPDF (in C, streams not decoded) and searched. Nothing is executed or
    fetched: MuPDF's JavaScript engine is never enabled, and URIs and launch targets are only
    counted. Returns (counts, complete), complete being False when the document has more
    objects than are scanned.
    """
    mupdf = pymupdf.mupdf
    counts: dict[str, int] = {}
    pdf = mupdf.pdf_document_from_fz_document(doc.this)
    total = mupdf.pdf_xref_len(pdf)
    last = min(total, MAX_XREFS_SCANNED)
    for start in range(1, last, _SCAN_CHUNK):
        buf = mupdf.fz_new_buffer(1 << 16)
        out = mupdf.FzOutput(buf)
        for xref in range(start, min(start + _SCAN_CHUNK, last)):
            try:
                obj = mupdf.pdf_load_object(pdf, xref)
                if mupdf.pdf_is_dict(obj) or mupdf.pdf_is_array(obj):
                    mupdf.pdf_print_obj(out, obj, 1, 0)
                    mupdf.fz_write_byte(out, 10)
            except MuPdfError as exc:
                if is_out_of_memory(exc):
                    raise MemoryError(str(exc)) from exc
                continue
        out.fz_close_output()
        _count_actions(mupdf.fz_buffer_extract(buf), counts)
    return counts, last == total


@contextmanager
def quiet_mupdf() -> Iterator[None]:
    """Keep MuPDF's own error and warning chatter off stderr while a document is processed.

    The messages stay in PyMuPDF's store; `take_mupdf_messages` turns them into warnings.
    """
    tools = pymupdf.TOOLS
    errors = tools.mupdf_display_errors()
    warnings = tools.mupdf_display_warnings()
    tools.mupdf_display_errors(False)
    tools.mupdf_display_warnings(False)
    tools.reset_mupdf_warnings()
    try:
        yield
    finally:
        tools.mupdf_display_errors(errors)
        tools.mupdf_display_warnings(warnings)


def take_mupdf_messages(into: list[str]) -> None:
    """Move MuPDF's stored messages into `into` (deduplicated, bounded) and clear the store."""
    text = pymupdf.TOOLS.mupdf_warnings(reset=True)
    if not text:
        return
    seen = set(into)
    for line in text.splitlines():
        line = line.strip()
        if not line or line in seen:
            continue
        if len(into) >= MAX_MUPDF_MESSAGES:
            return
        into.append(line[:300])
        seen.add(line)
