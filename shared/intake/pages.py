"""The `pages` option: a linear parser, so a hostile spec costs no more than its length.

A spec is comma-separated ranges of 1-based pages: `7`, `1-3`, or `5-` (to the end). Blanks
around numbers are allowed. The spec, its parts and its numbers are bounded, so it is refused
at the door (INVALID_OPTIONS) instead of failing in a worker.
"""

from __future__ import annotations

MAX_SPEC_CHARS = 1024
"""Longest `pages` spec accepted (blanks included)."""
MAX_PAGE_NUMBER = 1_000_000
"""Largest page number a spec may name (far above any `max_pages`)."""
_MAX_DIGITS = len(str(MAX_PAGE_NUMBER))

PageRange = tuple[int, int | None]
"""(first, last) 1-based and inclusive; last None runs to the end of the document."""


class PagesSpecError(ValueError):
    """The spec is not valid; the message says where."""


def parse_spec(spec: str) -> tuple[PageRange, ...]:
    """The ranges of `spec`, in order.

    Raises:
        PagesSpecError: empty, too long, a non-digit, a zero, a reversed range or a number
            larger than MAX_PAGE_NUMBER.
    """
    if len(spec) > MAX_SPEC_CHARS:
        raise PagesSpecError(f"pages must be at most {MAX_SPEC_CHARS} characters")
    ranges: list[PageRange] = []
    for part in spec.split(","):
        first, dash, last = part.partition("-")
        start = _number(first, part)
        if not dash:
            ranges.append((start, start))
            continue
        if last.strip() == "":
            ranges.append((start, None))
            continue
        end = _number(last, part)
        if end < start:
            raise PagesSpecError(f"page range {part.strip()!r} is reversed")
        ranges.append((start, end))
    return tuple(ranges)


def _number(text: str, part: str) -> int:
    digits = text.strip(" \t")
    if not digits or not digits.isascii() or not digits.isdigit():
        raise PagesSpecError(f'pages must look like "1-3,7" (bad part {part.strip()[:20]!r})')
    if len(digits.lstrip("0")) > _MAX_DIGITS or int(digits) > MAX_PAGE_NUMBER:
        raise PagesSpecError(f"page numbers must be at most {MAX_PAGE_NUMBER}")
    value = int(digits)
    if value < 1:
        raise PagesSpecError("page numbers start at 1")
    return value
