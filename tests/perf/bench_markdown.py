"""Our Markdown against pymupdf4llm on real manuals: pages per second and outline recall.

Run: .venv/bin/python -m tests.perf.bench_markdown [--pages N|all] [--layout] [--repeat R]

For every manual with an outline in the corpus, on the same pages (the first N, default 30):
  * `get_text()`        a bare PyMuPDF loop, the floor of any text extraction;
  * `text pipeline`     our engine with outputs=["text"] (must stay >= 0.9 of the bare loop);
  * `ours md`           our engine with outputs=["markdown"] (ocr: never, document.md written);
  * `4llm`              pymupdf4llm.to_markdown without its layout model (its fastest mode and
                        the ~5 pages/s yardstick of issue 4); `--layout` adds the default mode
                        of pymupdf4llm >= 0.2, which runs an ONNX layout model;
and the outline recall: the share of the PDF's own outline (TOC) titles pointing into those
pages that appear among the Markdown's headings, compared after normalisation (case, accents,
punctuation, leading section numbers), the same way for both.

Times are CPU seconds of this process (time.process_time), so that other work on a shared
machine does not count; pymupdf4llm's layout mode runs ONNX threads, whose CPU time counts too.
Every measurement opens the document afresh (cold caches, as a worker does) and is the median
of --repeat runs (default 3; pymupdf4llm's runs take minutes); the layout mode runs once.
pymupdf4llm is the yardstick only; the product never imports it.
"""

from __future__ import annotations

import argparse
import importlib
import re
import statistics
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pymupdf

from shared.extraction import ExtractLimits, extract_document
from shared.extraction.markdown import headings
from shared.models import ExtractOptions

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
MANUALS = (
    "en-beamer-userguide.pdf",
    "en-metapost-manual.pdf",
    "de-texlive-anleitung.pdf",
    "ru-texlive-guide.pdf",
)


@dataclass
class Row:
    name: str
    pages: int
    toc: int
    text_ps: float
    pipeline_ps: float
    ours_ps: float
    llm_ps: float
    ours_recall: float
    llm_recall: float
    ours_headings: int
    llm_headings: int
    layout_ps: float | None = None
    layout_recall: float | None = None


def normalise(title: str) -> str:
    """Lower case, no accents/ligatures/punctuation/spaces, no leading section number."""
    text = unicodedata.normalize("NFKD", title.replace("**", "").replace("_", " "))
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = "".join(c for c in text if c.isalnum())
    return re.sub(r"^\d+", "", text)


def recall(titles: Sequence[str], found_headings: Sequence[str]) -> float:
    """Share of `titles` that match a heading (equal, or one containing the other with at
    least half the length: "Chapter 3 Curves" matches "Curves", a wrapped title's first
    line matches the title)."""
    wanted = [t for t in (normalise(t) for t in titles) if t]
    if not wanted:
        return float("nan")
    heads = {h for h in (normalise(h) for h in found_headings) if h}
    hits = 0
    for title in wanted:
        if title in heads or any(
            (title in h or h in title) and min(len(h), len(title)) >= 0.5 * max(len(h), len(title))
            for h in heads
        ):
            hits += 1
    return hits / len(wanted)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    # CPU time of this process: the machine is shared, wall time measures the neighbours
    start = time.process_time()
    value = fn()
    return time.process_time() - start, value


def median_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    runs = [timed(fn) for _ in range(repeat)]
    return statistics.median(t for t, _ in runs), runs[-1][1]


def bare_text(path: Path, indexes: Sequence[int]) -> int:
    with pymupdf.open(path) as doc:
        return sum(len(doc[i].get_text()) for i in indexes)


def engine(path: Path, pages: str, outputs: tuple[str, ...]) -> str:
    with tempfile.TemporaryDirectory() as out:
        result = extract_document(
            str(path),
            ExtractOptions.model_validate({"outputs": outputs, "pages": pages, "ocr": "never"}),
            ExtractLimits(),
            out,
            lambda done, total: None,
        ).result
    return result.markdown or ""


def _yardstick() -> ModuleType:
    """pymupdf4llm with PyMuPDF's layout add-on, also in a process where the engine was imported
    first (shared/extraction/__init__.py keeps both out of PyMuPDF there)."""
    for name in ("pymupdf.layout", "pymupdf4llm"):
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]
    importlib.import_module("pymupdf.layout")  # activates the layout model pymupdf4llm uses
    return importlib.import_module("pymupdf4llm")


def llm_markdown(path: Path, indexes: Sequence[int], layout: bool) -> str:
    pymupdf4llm = _yardstick()
    pymupdf4llm.use_layout(layout)
    with pymupdf.open(path) as doc:
        kwargs: dict[str, object] = {"show_progress": False}
        if layout:
            kwargs["use_ocr"] = False
        md: str = pymupdf4llm.to_markdown(doc, pages=list(indexes), **kwargs)
    return md


def bench(path: Path, sample: int | None, repeat: int, layout: bool) -> Row:
    with pymupdf.open(path) as doc:
        count = doc.page_count
        toc = doc.get_toc(simple=True)
    n = count if sample is None else min(sample, count)
    indexes = list(range(n))
    spec = f"1-{n}"
    titles = [title for _, title, page in toc if 1 <= page <= n]

    t_text, _ = median_time(lambda: bare_text(path, indexes), repeat)
    t_pipe, _ = median_time(lambda: engine(path, spec, ("text",)), repeat)
    t_ours, ours = median_time(lambda: engine(path, spec, ("markdown",)), repeat)
    t_llm, llm = median_time(lambda: llm_markdown(path, indexes, layout=False), repeat)
    ours_heads = headings(str(ours))
    llm_heads = headings(str(llm))
    row = Row(
        name=path.name,
        pages=n,
        toc=len(titles),
        text_ps=n / t_text,
        pipeline_ps=n / t_pipe,
        ours_ps=n / t_ours,
        llm_ps=n / t_llm,
        ours_recall=recall(titles, ours_heads),
        llm_recall=recall(titles, llm_heads),
        ours_headings=len(ours_heads),
        llm_headings=len(llm_heads),
    )
    if layout:
        t_lay, lay = timed(lambda: llm_markdown(path, indexes, layout=True))
        row.layout_ps = n / t_lay
        row.layout_recall = recall(titles, headings(str(lay)))
    return row


def print_table(rows: Sequence[Row], layout: bool) -> None:
    head = (
        f"{'document':<26}{'pages':>6}{'toc':>5}{'get_text':>10}{'text pipe':>10}"
        f"{'(ratio)':>8}{'ours md':>9}{'4llm':>7}{'speed x':>9}"
        f"{'recall ours':>12}{'recall 4llm':>12}{'headings o/4':>13}"
    )
    if layout:
        head += f"{'4llm-layout':>12}{'x':>6}{'recall':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        line = (
            f"{r.name:<26}{r.pages:>6}{r.toc:>5}{r.text_ps:>10.0f}{r.pipeline_ps:>10.0f}"
            f"{r.pipeline_ps / r.text_ps:>8.2f}{r.ours_ps:>9.0f}{r.llm_ps:>7.2f}"
            f"{r.ours_ps / r.llm_ps:>8.0f}x{r.ours_recall:>12.0%}{r.llm_recall:>12.0%}"
            f"{f'{r.ours_headings}/{r.llm_headings}':>13}"
        )
        if layout and r.layout_ps is not None:
            line += (
                f"{r.layout_ps:>12.2f}{r.ours_ps / r.layout_ps:>5.0f}x"
                f"{(r.layout_recall or 0.0):>8.0%}"
            )
        print(line)
    pages = sum(r.pages for r in rows)

    def total(rate: Callable[[Row], float]) -> float:
        # pages per second over all documents: total pages / total seconds
        return pages / sum(r.pages / rate(r) for r in rows)

    toc = sum(r.toc for r in rows)
    ours_hits = sum(r.ours_recall * r.toc for r in rows if r.toc)
    llm_hits = sum(r.llm_recall * r.toc for r in rows if r.toc)
    text, pipe, ours, llm = (
        total(lambda r: r.text_ps),
        total(lambda r: r.pipeline_ps),
        total(lambda r: r.ours_ps),
        total(lambda r: r.llm_ps),
    )
    print("-" * len(head))
    print(
        f"{'all':<26}{pages:>6}{toc:>5}{text:>10.0f}{pipe:>10.0f}{pipe / text:>8.2f}"
        f"{ours:>9.0f}{llm:>7.2f}{ours / llm:>8.0f}x{ours_hits / toc:>12.0%}"
        f"{llm_hits / toc:>12.0%}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pages", default="30", help="first N pages per document, or 'all'")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--layout", action="store_true", help="also pymupdf4llm's layout mode")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("docs", nargs="*", default=list(MANUALS))
    args = parser.parse_args(argv)
    sample = None if args.pages == "all" else int(args.pages)
    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)
    rows = []
    for name in args.docs:
        rows.append(bench(args.corpus / name, sample, args.repeat, args.layout))
        print(f"  done {name}", flush=True)
    print()
    pages = "all pages" if sample is None else f"first {sample} pages"
    runs = "1 run" if args.repeat == 1 else f"median of {args.repeat} runs"
    print(
        f"pages per CPU second ({runs}); {pages} of each manual; pymupdf4llm "
        f"{pymupdf_version()} without its layout model (4llm-layout: with it); ocr: never"
    )
    print_table(rows, args.layout)


def pymupdf_version() -> str:
    try:
        return str(_yardstick().__version__)
    except ImportError:  # pragma: no cover - the yardstick is a test extra
        return "?"


if __name__ == "__main__":
    main()
