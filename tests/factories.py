"""Test PDFs with content the tests know."""

from __future__ import annotations

from pathlib import Path

import pymupdf


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A PDF with one page per string, each string written as the page's text."""
    doc = pymupdf.open()
    for text in pages:
        page = doc.new_page(width=595, height=842)
        page.insert_text((72, 72), text, fontsize=11)
    if title:
        doc.set_metadata({"title": title})
    data: bytes = doc.tobytes()
    doc.close()
    return data


CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
"""The real PDFs beside the checkout (../shared/corpus), where they are: tests that use them
also run on what they find there, and on their own generated files."""
