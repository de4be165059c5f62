"""Page renderings for a vision model (output `llm`): one PNG per page, written by the worker
as artifacts the extract handler hands to the `pdfrelay.llm` queue (shared/jobs/llm.py)."""

from __future__ import annotations

import os
import re

import pymupdf

from shared.extraction.base import ArtifactFile

MODEL_PAGE_PREFIX = "llm-page-"
"""Artifact names `llm-page-00001.png`: not stored as job artifacts (shared/jobs/llm.py)."""
_NAME = re.compile(rf"^{MODEL_PAGE_PREFIX}(\d+)\.png$")


def model_page_name(number: int) -> str:
    return f"{MODEL_PAGE_PREFIX}{number:05d}.png"


def model_page_number(name: str) -> int | None:
    """The page number of a model page artifact's name; None for any other artifact."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def render_model_page(page: pymupdf.Page, dpi: int, out_dir: str) -> ArtifactFile:
    """Render `page` at `dpi` as a PNG in `out_dir` (the caller checked the render limits)."""
    zoom = dpi / 72.0
    pixmap = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
    name = model_page_name(page.number + 1)
    path = os.path.join(out_dir, name)
    pixmap.save(path, output="png")
    return ArtifactFile(name, path, "image/png")
