"""The PDF's outline (bookmarks) as a heading signal, for the Markdown and the `blocks` alike.

A paragraph that is, on its page, the title of an outline entry pointing at that page is a
heading of the entry's level, however it is set: the one implementation both outputs use
(`MarkdownBuilder` decides its heading levels with it, and the blocks take the Markdown's).
Titles are compared with case, spacing and a leading section number ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pymupdf

OutlineItem = tuple[int, str, int]
"""(level, title, page) as `Document.get_toc(simple=True)` gives them."""

OutlineTitles = dict[int, tuple[int, dict[str, int]]]
"""page: (length of its longest title key, {title key: level})."""

MAX_TITLE = 200
"""Longer outline titles (a whole sentence as a bookmark) are not matched."""
MAX_LINES = 3
"""A paragraph of more lines is no title."""

_NUMBER_LEAD = re.compile(r"^(?:\d{1,3}(?:\.\d{1,3})*|[A-Z]|[IVX]{1,5})[.:)]?\s+(?=\w)")
_LINK_MD = re.compile(
    r"\[((?:[^\]\\]|\\.)*)\]\([^)\s]*\)|<((?:https?|ftp)://[^>\s]*|mailto:[^>\s]*)>"
)


def _link_text(m: re.Match[str]) -> str:
    anchor = m.group(1)
    return anchor if anchor is not None else m.group(2).removeprefix("mailto:")


def plain_text(text: str) -> str:
    """A paragraph's inline Markdown (escapes, links) back to its printed text."""
    if "\\" not in text and "<" not in text and "](" not in text:
        return text
    if "](" in text or "<" in text:
        text = _LINK_MD.sub(_link_text, text)
    return text.replace("\\<", "<").replace("\\[", "[").replace("\\]", "]")


def outline_items(doc: pymupdf.Document) -> list[OutlineItem]:
    """The document's outline as `doc.get_toc(simple=True)` gives it, read from the outline
    PyMuPDF loaded when it opened the document (`get_toc` loads it, and the metadata, again);
    depth-first, without recursion (a hostile outline may nest deeply)."""
    found: list[OutlineItem] = []
    stack: list[tuple[Any, int]] = [(doc.outline, 1)]
    while stack:
        item, level = stack.pop()
        if not item or not item.this.m_internal:
            continue
        page = -1
        if not item.is_external and item.uri:
            page = item.page + 1 if item.page != -1 else doc.resolve_link(item.uri)[0] + 1
        found.append((level, str(item.title or " "), int(page)))
        stack.append((item.next, level))
        stack.append((item.down, level + 1))  # popped first: the children come first
    return found


def title_key(text: str) -> str:
    """An outline title or a paragraph, compared: case, spacing and a leading number ignored."""
    text = " ".join(text.split()).casefold()
    return _NUMBER_LEAD.sub("", text, count=1) if text[:1].isalnum() else text


def outline_titles(outline: Sequence[OutlineItem]) -> OutlineTitles:
    """The outline entries that point at a page, by page (levels clamped to 1..6; the first
    entry of a title on a page gives its level)."""
    found: dict[int, dict[str, int]] = {}
    for level, title, page in outline:
        key = title_key(title)
        if page >= 1 and key and len(key) <= MAX_TITLE:
            found.setdefault(page, {}).setdefault(key, max(1, min(int(level), 6)))
    return {page: (max(map(len, keys)), keys) for page, keys in found.items()}


def outline_level(text: str, lines: int, on_page: tuple[int, dict[str, int]]) -> int:
    """The outline level of a paragraph (its inline Markdown `text`, its line count) that is
    the title of an entry of its page (`on_page`: that page's `outline_titles`), or 0."""
    if lines > MAX_LINES:
        return 0
    longest, keys = on_page
    # a leading number and Markdown escapes are all the key can lose: longer is no title
    if len(text) > longest + 24:
        return 0
    return keys.get(title_key(plain_text(text)), 0)
