"""Tables found by PyMuPDF's `find_tables()`, as Markdown and CSV."""

from __future__ import annotations

import contextlib
import csv
import io
from dataclasses import dataclass
from typing import Any

import pymupdf

Rect = tuple[float, float, float, float]


@dataclass(frozen=True)
class FoundTable:
    page: int
    """1-based page number."""
    index: int
    """1-based position of the table on its page."""
    bbox: Rect
    rows: list[list[str]]
    """Every row, the header row (if the table has one) first."""
    header_is_row: bool
    """The header is the table's first row (else MuPDF found it above the table)."""

    @property
    def name(self) -> str:
        return f"page-{self.page:04d}-table-{self.index}"

    def markdown(self) -> str:
        return rows_to_markdown(self.rows)

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows(self.rows)
        return out.getvalue()

    def as_dict(self) -> dict[str, object]:
        return {
            "page": self.page,
            "index": self.index,
            "name": self.name,
            "bbox": [round(v, 2) for v in self.bbox],
            "row_count": len(self.rows),
            "column_count": max((len(r) for r in self.rows), default=0),
            "rows": self.rows,
            "markdown": self.markdown(),
            "csv": self.csv(),
        }


def _cell(value: object) -> str:
    return "" if value is None else " ".join(str(value).split())


def rows_to_markdown(rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table; the first row is the header."""
    if not rows:
        return ""
    width = max(len(r) for r in rows)

    def fmt(row: list[str]) -> str:
        cells = [c.replace("|", "\\|").replace("<", "\\<").replace("[", "\\[") for c in row] + [
            ""
        ] * (width - len(row))
        return "| " + " | ".join(cells) + " |"

    lines = [fmt(rows[0]), "|" + "---|" * width]
    lines.extend(fmt(r) for r in rows[1:])
    return "\n".join(lines) + "\n"


def _cell_text(textpage: pymupdf.TextPage, rect: object) -> str:
    if rect is None:
        return ""
    x0, y0, x1, y1 = (float(v) for v in rect)  # type: ignore[attr-defined]
    inset = 0.5
    # MuPDF's own copy (C); the table module's text joins glyphs of odd heights (the "." of
    # Helvetica) onto a separate line: "1.20" came out as "120\n."
    text: str = pymupdf.mupdf.fz_copy_rectangle(
        textpage.this, pymupdf.mupdf.FzRect(x0 + inset, y0 + inset, x1 - inset, y1 - inset), 0
    )
    return " ".join(text.split())


def _find(page: pymupdf.Page) -> Any:
    # PyMuPDF prints a recommendation of its layout package on the first call: not for logs
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            # the layout model (pymupdf_layout, ONNX) costs about a second per page: not ours
            return page.find_tables(use_layout=False)
        except TypeError:  # PyMuPDF before use_layout
            return page.find_tables()


def find_tables(page: pymupdf.Page, textpage: pymupdf.TextPage) -> list[FoundTable]:
    """The tables MuPDF finds on `page` (ruled, or aligned text), in its order.

    Cell text comes from `textpage` (the page's text layer or its OCR).
    """
    found: list[FoundTable] = []
    for index, table in enumerate(_find(page).tables, start=1):
        rows = [[_cell_text(textpage, cell) for cell in row.cells] for row in table.rows]
        header = table.header
        names = [_cell(n) for n in (header.names if header is not None else [])]
        external = bool(header is not None and header.external and any(names))
        if external:
            rows.insert(0, names)
        rows = [r for r in rows if any(r)]
        if not rows:
            continue
        bbox = tuple(float(v) for v in table.bbox)
        found.append(
            FoundTable(
                page=page.number + 1,
                index=index,
                bbox=(bbox[0], bbox[1], bbox[2], bbox[3]),
                rows=rows,
                header_is_row=not external,
            )
        )
    return found
