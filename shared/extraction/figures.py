"""Where a page's figures are: images, shadings and vector drawings, found in the same run of the
page that makes its text, for the `blocks` output.

Asking MuPDF for image positions separately (`page.get_image_info()`) runs the page's content a
second time (about 0.6x the text extraction on the beamer guide), and keeping images in the text
page changes MuPDF's text blocks. Instead the page is recorded once into a display list, which is
replayed into the structured-text device (the same text page, character for character, as
`page.get_textpage` gives) and into a small device that only notes the boxes of images, shadings
and paths; the replay calls Python only for those. The boxes are then joined into clusters, and a
cluster large enough, not the page's background and not mostly text (a ruled table, a shaded
code listing) is a figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pymupdf

from shared.extraction.markdown import Rect

mupdf = pymupdf.mupdf

MAX_MARKS = 800
"""Marks (images, shadings, paths) noted per page: joining them is quadratic at worst, and the
marks beyond (a map, a plot of a million points) rarely widen the figures the first ones give.
With that many, the replay into the mark device stops (Python is called no more)."""
JOIN_GAP = 6.0
"""Marks closer than this (points) are one figure."""
MIN_SIDE = 36.0
"""A figure is at least this wide and tall (points): smaller marks are icons, bullets, rules."""
PAGE_SHARE = 0.85
"""A mark covering this share of the page's width and height is its background."""


class _MarkDevice(mupdf.FzDevice2):  # type: ignore[misc,name-defined]
    """Notes the boxes of what is drawn that is not text."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[float] = []
        """x0, y0, x1, y1 of each mark, flat (floats are not tracked by the cyclic collector)."""
        self.cookie = mupdf.FzCookie()
        """The replay's: aborted once MAX_MARKS are noted."""
        self.use_virtual_fill_image()
        self.use_virtual_fill_image_mask()
        self.use_virtual_fill_shade()
        self.use_virtual_fill_path()
        self.use_virtual_stroke_path()

    def _full(self) -> bool:
        return len(self.marks) >= 4 * MAX_MARKS

    def _mark(self, r: Any) -> None:
        self.marks += (r.x0, r.y0, r.x1, r.y1)
        if len(self.marks) >= 4 * MAX_MARKS:
            self.cookie.set_abort()

    def _image(self, ctm: object) -> None:
        if not self._full():
            self._mark(mupdf.fz_transform_rect(mupdf.FzRect(0, 0, 1, 1), mupdf.FzMatrix(ctm)))

    def fill_image(self, ctx: object, image: object, ctm: object, alpha: float, cp: object) -> None:
        self._image(ctm)

    def fill_image_mask(
        self,
        ctx: object,
        image: object,
        ctm: object,
        cs: object,
        color: object,
        alpha: float,
        cp: object,
    ) -> None:
        self._image(ctm)

    def fill_shade(self, ctx: object, shade: object, ctm: object, alpha: float, cp: object) -> None:
        if not self._full():
            self._mark(mupdf.ll_fz_bound_shade(shade, ctm))

    def fill_path(
        self,
        ctx: object,
        path: object,
        even_odd: int,
        ctm: object,
        cs: object,
        color: object,
        alpha: float,
        cp: object,
    ) -> None:
        if not self._full():
            self._mark(mupdf.ll_fz_bound_path(path, None, ctm))

    def stroke_path(
        self,
        ctx: object,
        path: object,
        stroke: object,
        ctm: object,
        cs: object,
        color: object,
        alpha: float,
        cp: object,
    ) -> None:
        if not self._full():
            # the path itself: with the stroke, MuPDF adds the miter limit's worst case
            self._mark(mupdf.ll_fz_bound_path(path, None, ctm))


def textpage_with_figures(page: pymupdf.Page, flags: int) -> tuple[pymupdf.TextPage, list[Rect]]:
    """The page's text page (as `page.get_textpage(flags=flags)` makes it) and the boxes of
    its figure candidates (unrotated page space, like the text)."""
    rotation = page.rotation
    if rotation:
        page.set_rotation(0)  # as `get_textpage` does: text of the unrotated page
    try:
        fz = page.this
        listing = mupdf.fz_new_display_list_from_page(fz)
        stext = mupdf.FzStextPage(mupdf.fz_bound_page(fz))
        device = mupdf.fz_new_stext_device(stext, mupdf.FzStextOptions(flags))
        everywhere = mupdf.FzRect(mupdf.FzRect.Fixed_INFINITE)
        mupdf.fz_run_display_list(listing, device, mupdf.FzMatrix(), everywhere, mupdf.FzCookie())
        mupdf.fz_close_device(device)
        marks = _MarkDevice()
        mupdf.fz_run_display_list(listing, marks, mupdf.FzMatrix(), everywhere, marks.cookie)
        mupdf.fz_close_device(marks)
        bounds = mupdf.fz_bound_page(fz)
    finally:
        if rotation:
            page.set_rotation(rotation)
    textpage = pymupdf.TextPage(stext)
    textpage.parent = page
    return textpage, clusters(marks.marks, (bounds.x0, bounds.y0, bounds.x1, bounds.y1))


def clusters(marks: Sequence[float], page: Rect) -> list[Rect]:
    """Marks (x0, y0, x1, y1, flat) joined where they touch (within JOIN_GAP), clipped to the
    page; only clusters of figure size, without the page's background, top to bottom."""
    px0, py0, px1, py1 = page
    width = px1 - px0
    height = py1 - py0
    boxes: list[list[float]] = []
    for i in range(0, len(marks) - 3, 4):
        x0, y0, x1, y1 = marks[i : i + 4]
        x0, y0, x1, y1 = max(x0, px0), max(y0, py0), min(x1, px1), min(y1, py1)
        if x1 < x0 or y1 < y0:
            continue
        if x1 - x0 >= PAGE_SHARE * width and y1 - y0 >= PAGE_SHARE * height:
            continue  # a background, a scan
        boxes.append([x0, y0, x1, y1])
    if not boxes:
        return []
    boxes.sort(key=lambda b: b[1])
    merged = True
    while merged:  # few marks per page: the simple fixpoint is fast enough
        merged = False
        out: list[list[float]] = []
        for box in boxes:
            for other in out:
                if (
                    box[0] <= other[2] + JOIN_GAP
                    and other[0] <= box[2] + JOIN_GAP
                    and box[1] <= other[3] + JOIN_GAP
                    and other[1] <= box[3] + JOIN_GAP
                ):
                    other[0] = min(other[0], box[0])
                    other[1] = min(other[1], box[1])
                    other[2] = max(other[2], box[2])
                    other[3] = max(other[3], box[3])
                    merged = True
                    break
            else:
                out.append(box)
        boxes = out
    found = [
        (b[0], b[1], b[2], b[3])
        for b in boxes
        if b[2] - b[0] >= MIN_SIDE
        and b[3] - b[1] >= MIN_SIDE
        and not (b[2] - b[0] >= PAGE_SHARE * width and b[3] - b[1] >= PAGE_SHARE * height)
    ]
    found.sort(key=lambda b: (b[1], b[0]))
    return found
