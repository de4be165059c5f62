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
from operator import itemgetter
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


UNRECORDED = ("begin_structure", "end_structure", "begin_layer", "end_layer")
"""Device calls that only mark where a structure element or an optional-content layer begins
and ends. The display list records them for its replays, but neither replay takes them (the
text device, with the engine's flags, has no such calls; the mark device neither), and a list
device that takes them makes MuPDF's interpreter look up a tagged PDF's structure tree for every
marked-content sequence: recording the census table's page cost 7.5 ms with them, 6.0 without.
Only what the text device lacks is left out (`FigureFinder` asks it), so the replays are the same;
clips, groups and masks, which decide what a replay culls, are recorded as before."""

_raw = mupdf._mupdf
"""The replay's callbacks use the C functions of MuPDF's bindings themselves: their Python
wrappers and `fz_rect`'s properties cost more than the bounds (most of a mark's time)."""
_bound_path = _raw.ll_fz_bound_path
_bound_shade = _raw.ll_fz_bound_shade
_x0, _y0, _x1, _y1 = (
    _raw.fz_rect_x0_get,
    _raw.fz_rect_y0_get,
    _raw.fz_rect_x1_get,
    _raw.fz_rect_y1_get,
)
_FULL = 4 * MAX_MARKS
"""Length of `_MarkDevice.marks` once MAX_MARKS are noted."""


class _MarkDevice(mupdf.FzDevice2):  # type: ignore[misc,name-defined]
    """Notes the boxes of what is drawn that is not text.

    Each callback notes its mark itself (no helper call): the replay calls one per path.
    """

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

    def _note(self, r: Any) -> None:
        marks = self.marks
        if len(marks) < _FULL:
            marks += (_x0(r), _y0(r), _x1(r), _y1(r))
            if len(marks) >= _FULL:
                self.cookie.set_abort()

    def _image(self, ctm: object) -> None:
        r = mupdf.fz_transform_rect(mupdf.FzRect(0, 0, 1, 1), mupdf.FzMatrix(ctm))
        self._note(r.internal())

    def fill_image(self, ctx: object, image: object, ctm: object, alpha: float, cp: object) -> None:
        if len(self.marks) < _FULL:
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
        if len(self.marks) < _FULL:
            self._image(ctm)

    def fill_shade(self, ctx: object, shade: object, ctm: object, alpha: float, cp: object) -> None:
        if len(self.marks) < _FULL:
            self._note(_bound_shade(shade, ctm))

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
        marks = self.marks
        if len(marks) < _FULL:
            r = _bound_path(path, None, ctm)
            marks += (_x0(r), _y0(r), _x1(r), _y1(r))
            if len(marks) >= _FULL:
                self.cookie.set_abort()

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
        marks = self.marks
        if len(marks) < _FULL:
            # the path itself: with the stroke, MuPDF adds the miter limit's worst case
            r = _bound_path(path, None, ctm)
            marks += (_x0(r), _y0(r), _x1(r), _y1(r))
            if len(marks) >= _FULL:
                self.cookie.set_abort()


class FigureFinder:
    """Text pages with their figure candidates, page after page of one document.

    What every page's replay takes alike (the options, the infinite clip, the identity matrix,
    the mark device) is made once: made per page, it cost about as much as the marks of a
    page with few drawings. The mark device is never closed between pages: closing a device
    ends it, and this one has nothing to flush; it is reset instead.
    """

    def __init__(self, flags: int) -> None:
        self._options = mupdf.FzStextOptions(flags)
        self._everywhere = mupdf.FzRect(mupdf.FzRect.Fixed_INFINITE)
        self._identity = mupdf.FzMatrix()
        self._cookie = mupdf.FzCookie()
        """The text replay's (never aborted)."""
        self._marks = _MarkDevice()
        probe = mupdf.fz_new_stext_device(
            mupdf.FzStextPage(mupdf.FzRect(0, 0, 1, 1)), self._options
        )
        self._unrecorded = tuple(
            name for name in UNRECORDED if getattr(probe.m_internal, name) is None
        )
        """The markers the text device (with these flags) does not take: not recorded."""
        mupdf.fz_close_device(probe)

    def textpage(self, page: pymupdf.Page) -> tuple[pymupdf.TextPage, list[Rect]]:
        """The page's text page (as `page.get_textpage(flags=flags)` makes it) and the boxes
        of its figure candidates (unrotated page space, like the text)."""
        rotation = page.rotation
        if rotation:
            page.set_rotation(0)  # as `get_textpage` does: text of the unrotated page
        marks = self._marks
        marks.marks = []
        marks.cookie = mupdf.FzCookie()
        try:
            fz = page.this
            bounds = mupdf.fz_bound_page(fz)
            listing = self._record(fz, bounds)
            stext = mupdf.FzStextPage(bounds)
            device = mupdf.fz_new_stext_device(stext, self._options)
            everywhere = self._everywhere
            mupdf.fz_run_display_list(listing, device, self._identity, everywhere, self._cookie)
            mupdf.fz_close_device(device)
            mupdf.fz_run_display_list(listing, marks, self._identity, everywhere, marks.cookie)
        finally:
            if rotation:
                page.set_rotation(rotation)
        textpage = pymupdf.TextPage(stext)
        textpage.parent = page
        return textpage, clusters(marks.marks, (bounds.x0, bounds.y0, bounds.x1, bounds.y1))

    def _record(self, fz: Any, bounds: Any) -> Any:
        """The page's display list, as `fz_new_display_list_from_page` records it but without
        the markers nobody replays (UNRECORDED)."""
        listing = mupdf.FzDisplayList(bounds)
        device = mupdf.fz_new_list_device(listing)
        for name in self._unrecorded:
            setattr(device.m_internal, name, None)
        try:
            # no cookie, as fz_new_display_list_from_page runs it
            mupdf.ll_fz_run_page(fz.m_internal, device.m_internal, self._identity.internal(), None)
            mupdf.fz_close_device(device)
        except BaseException:
            mupdf.fz_close_device(device)
            raise
        return listing


def textpage_with_figures(page: pymupdf.Page, flags: int) -> tuple[pymupdf.TextPage, list[Rect]]:
    """`FigureFinder(flags).textpage(page)`, for one page."""
    return FigureFinder(flags).textpage(page)


def clusters(marks: Sequence[float], page: Rect) -> list[Rect]:
    """Marks (x0, y0, x1, y1, flat) joined where they touch (within JOIN_GAP), clipped to the
    page; only clusters of figure size, without the page's background, top to bottom.

    Joining is a closure: clusters are merged while two of them touch, so the result does not
    depend on the order of the merges (a joined box only grows, and what touched it still
    does). Each mark, top to bottom, takes in every cluster it touches, again while it grows.
    """
    px0, py0, px1, py1 = page
    width = px1 - px0
    height = py1 - py0
    wide = PAGE_SHARE * width
    tall = PAGE_SHARE * height
    gap = JOIN_GAP
    boxes: list[tuple[float, float, float, float]] = []
    flat = iter(marks)
    for x0, y0, x1, y1 in zip(flat, flat, flat, flat, strict=False):  # whole marks only
        if x0 < px0:
            x0 = px0
        if y0 < py0:
            y0 = py0
        if x1 > px1:
            x1 = px1
        if y1 > py1:
            y1 = py1
        if x1 < x0 or y1 < y0:
            continue
        if x1 - x0 >= wide and y1 - y0 >= tall:
            continue  # a background, a scan
        boxes.append((x0, y0, x1, y1))
    if not boxes:
        return []
    boxes.sort(key=itemgetter(1))
    out: list[tuple[float, float, float, float]] = []
    for x0, y0, x1, y1 in boxes:
        grew = True
        while grew:
            grew = False
            keep: list[tuple[float, float, float, float]] = []
            for other in out:
                ox0, oy0, ox1, oy1 = other
                if x0 <= ox1 + gap and ox0 <= x1 + gap and y0 <= oy1 + gap and oy0 <= y1 + gap:
                    x0 = min(ox0, x0)
                    y0 = min(oy0, y0)
                    x1 = max(ox1, x1)
                    y1 = max(oy1, y1)
                    grew = True
                else:
                    keep.append(other)
            out = keep
        out.append((x0, y0, x1, y1))
    found = [
        b
        for b in out
        if b[2] - b[0] >= MIN_SIDE
        and b[3] - b[1] >= MIN_SIDE
        and not (b[2] - b[0] >= wide and b[3] - b[1] >= tall)
    ]
    found.sort(key=itemgetter(1, 0))
    return found
