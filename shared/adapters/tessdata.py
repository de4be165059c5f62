"""Where Tesseract's language data is, and which languages it has: plain file look-ups, so the
ingress (its /readyz) and the CLI ask without loading MuPDF (shared/extraction/ocr.py uses them)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

TESSDATA_GLOBS = (
    "/usr/share/tesseract-ocr/*/tessdata",
    "/usr/share/tesseract-ocr/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
    "/opt/homebrew/share/tessdata",
)


def find_tessdata(explicit: str | None = None) -> str | None:
    """The Tesseract language data folder, or None.

    Order: `explicit` (from settings; no fallback when given), $TESSDATA_PREFIX, then the places
    Debian, Ubuntu and Homebrew install it. MuPDF has Tesseract built in, so the data files are
    all it needs; no `tesseract` executable is run.
    """
    if explicit is not None:
        return explicit if Path(explicit).is_dir() else None
    env = os.environ.get("TESSDATA_PREFIX")
    if env and Path(env).is_dir():
        return env
    for pattern in TESSDATA_GLOBS:
        found = sorted(p for p in glob.glob(pattern) if Path(p, "eng.traineddata").is_file())
        if found:
            return found[-1]
    return None


def ocr_languages(explicit: str | None = None) -> list[str]:
    """The languages OCR can read on this machine ([] when Tesseract's data is missing)."""
    folder = find_tessdata(explicit)
    if folder is None:
        return []
    return sorted(p.name.removesuffix(".traineddata") for p in Path(folder).glob("*.traineddata"))
