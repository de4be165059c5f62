"""The `blocks` and `chunks` outputs on the real corpus: their CPU against the Markdown's, the
outline recall of the blocks' headings, and chunk statistics.

Run: .venv/bin/python -m tests.perf.bench_blocks [--pages N|all] [--repeat R] [--max-chars C]

For every PDF of the corpus that opens (all pages by default, `ocr: never`):
  * `md s`       CPU seconds of our engine with outputs=["markdown"];
  * `blk+chk s`  CPU seconds with outputs=["markdown", "blocks", "chunks"];
  * `ratio`      blocks+chunks over Markdown: the median of the runs' ratios (each blocks run
                 over the Markdown run next to it). The budget, the issue's limit, is 1.3x for
                 every document and for the whole corpus (its sums); the last lines give the
                 largest ratio and the documents over the budget;
  * `recall`     outline recall of the `heading` blocks (the same measure as bench_markdown:
                 share of the PDF's outline titles pointing into those pages found among them);
  * `figs`, `capt` figure blocks, and those linked to a caption;
  * chunks: count, size in characters (median, p90, max), the share over the budget, and the
    share crossing a section (a heading other than its first block: tiny sections joined).

Times are CPU seconds of this process (time.process_time), medians of --repeat runs, each
opening the document afresh; the Markdown and blocks runs alternate, so that the load of a
shared machine weighs on both alike, and the ratio pairs each run with its neighbour (steadier
than the ratio of the medians when the load drifts).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymupdf

from shared.extraction import ExtractLimits, extract_document
from shared.models import ExtractOptions
from tests.perf.bench_markdown import CORPUS, recall

LIMIT = 1.3


@dataclass
class Row:
    name: str
    pages: int
    toc: int
    md_s: float
    blocks_s: float
    ratio: float
    recall: float
    headings: int
    figures: int
    captioned: int
    chunks: int
    median: float
    p90: float
    biggest: int
    over: float
    crossing: float


def run(
    path: Path, pages: str, outputs: Sequence[str], max_chars: int, *, read: bool = True
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        options = ExtractOptions.model_validate(
            {
                "outputs": list(outputs),
                "pages": pages,
                "ocr": "never",
                "chunking": {"max_chars": max_chars},
            }
        )
        extract_document(str(path), options, ExtractLimits(), out, lambda done, total: None)
        found: dict[str, Any] = {}
        doc = Path(out, "document.json")
        if read and doc.exists():
            found["doc"] = json.loads(doc.read_text(encoding="utf-8"))
            lines = Path(out, "chunks.jsonl").read_text(encoding="utf-8").splitlines()
            found["chunks"] = [json.loads(line) for line in lines]
    return found


def cpu(
    path: Path, pages: str, variants: Sequence[Sequence[str]], repeat: int, chars: int
) -> list[list[float]]:
    """CPU seconds of each run of each variant of outputs, the variants' runs interleaved (the
    neighbours' load then weighs on each alike)."""
    runs: list[list[float]] = [[] for _ in variants]
    for _ in range(repeat):
        for times, outputs in zip(runs, variants, strict=True):
            start = time.process_time()
            run(path, pages, outputs, chars, read=False)
            times.append(time.process_time() - start)
    return runs


def bench(path: Path, sample: int | None, repeat: int, max_chars: int) -> Row | None:
    try:
        with pymupdf.open(path) as doc:
            if doc.needs_pass:
                return None
            count = doc.page_count
            toc = doc.get_toc(simple=True)
    except (RuntimeError, ValueError):
        return None
    n = count if sample is None else min(sample, count)
    spec = f"1-{n}"
    titles = [title for _, title, page in toc if 1 <= page <= n]
    both = ("markdown", "blocks", "chunks")
    md_runs, blocks_runs = cpu(path, spec, [("markdown",), both], repeat, max_chars)
    ratios = [b / m for m, b in zip(md_runs, blocks_runs, strict=True) if m > 0]
    found = run(path, spec, both, max_chars)
    blocks = found["doc"]["blocks"]
    kinds = {b["id"]: b for b in blocks}
    heads = [b["text"] for b in blocks if b["kind"] == "heading"]
    chunks = found["chunks"]
    sizes = sorted(c["chars"] for c in chunks) or [0]
    crossing = sum(
        1 for c in chunks if any(kinds[i]["kind"] == "heading" for i in c["block_ids"][1:])
    )
    return Row(
        name=path.name,
        pages=n,
        toc=len(titles),
        md_s=statistics.median(md_runs),
        blocks_s=statistics.median(blocks_runs),
        ratio=statistics.median(ratios) if ratios else float("nan"),
        recall=recall(titles, heads),
        headings=len(heads),
        figures=sum(1 for b in blocks if b["kind"] == "figure"),
        captioned=sum(1 for b in blocks if b["kind"] == "figure" and b.get("caption")),
        chunks=len(chunks),
        median=statistics.median(sizes),
        p90=sizes[int(0.9 * (len(sizes) - 1))],
        biggest=sizes[-1],
        over=sum(1 for s in sizes if s > max_chars) / max(len(chunks), 1),
        crossing=crossing / max(len(chunks), 1),
    )


def print_table(rows: Sequence[Row], max_chars: int) -> bool:
    print(f"chunks: max_chars {max_chars}; CPU limit {LIMIT}x the Markdown output")
    print(
        f"{'document':<34}{'pages':>6}{'toc':>5}{'md s':>8}{'blk+chk s':>10}{'ratio':>7}"
        f"{'recall':>8}{'heads':>6}{'figs':>6}{'capt':>5}{'chunks':>7}{'med':>6}{'p90':>6}{'max':>6}"
        f"{'over':>6}{'cross':>7}"
    )
    for r in rows:
        rec = "-" if r.recall != r.recall else f"{r.recall:.2f}"
        print(
            f"{r.name:<34}{r.pages:>6}{r.toc:>5}{r.md_s:>8.3f}{r.blocks_s:>10.3f}{r.ratio:>7.2f}"
            f"{rec:>8}{r.headings:>6}{r.figures:>6}{r.captioned:>5}{r.chunks:>7}{r.median:>6.0f}{r.p90:>6}{r.biggest:>6}"
            f"{r.over:>6.2f}{r.crossing:>7.2f}"
        )
    md = sum(r.md_s for r in rows)
    both = sum(r.blocks_s for r in rows)
    ratio = both / md if md > 0 else float("nan")
    print(
        f"{'corpus':<34}{sum(r.pages for r in rows):>6}{'':>5}{md:>8.3f}{both:>10.3f}{ratio:>7.2f}"
    )
    verdict = "within" if ratio <= LIMIT else "OVER"
    print(f"blocks+chunks / markdown CPU: {ratio:.2f} ({verdict} {LIMIT}x)")
    worst = max(rows, key=lambda r: r.ratio, default=None)
    over = [r.name for r in rows if not r.ratio <= LIMIT]
    if worst is not None:
        print(f"per document: max {worst.ratio:.2f} ({worst.name})")
    print(f"over {LIMIT}x: {', '.join(over) if over else 'none'}")
    return ratio <= LIMIT and not over


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pages", default="all", help="first N pages per document, or 'all'")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--max-chars", type=int, default=2000)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("docs", nargs="*")
    args = parser.parse_args(argv)
    sample = None if args.pages == "all" else int(args.pages)
    paths = [args.corpus / d for d in args.docs] or sorted(args.corpus.glob("*.pdf"))
    rows = [row for p in paths if (row := bench(p, sample, args.repeat, args.max_chars))]
    print_table(rows, args.max_chars)


if __name__ == "__main__":
    main()
