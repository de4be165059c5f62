"""Worker CPU: what pdfrelay's extraction side spends on the 7 manuals of `peer`, text only,
next to the bare `page.get_text()` loop, with no broker, S3 or HTTP in the way.

`python -m tests.perf worker [--repeat 3] [--nice 0]`. Two views, both in CPU seconds (not wall
clock: the machine is shared), each the median of `--repeat` runs:

- **pool**: the extract handler's part of the work as it runs it — the `WorkerPool` (2 workers,
  forkserver) on every whole document with `split_above` (the worker answers with the page
  count of a document above the fan-out threshold instead of extracting it), then on the
  100-page ranges of those, all submitted at once. CPU of this process's tree without this
  process: the forkserver and the workers (start, pipe, result JSON, digests, store shrink,
  everything), i.e. the benchmark's "workers" figure of `peer`.
- **phases**, in this process, one document after another: the bare loop; the decompression
  scan; the engine with the scan off; the engine over the fan-out's ranges.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pymupdf

from shared.extraction import ExtractLimits, HeldDocument, extract_document
from shared.extraction.fanout import ranges
from shared.extraction.inflate import check_inflated
from shared.extraction.pool import STORE_SHRINK_PERCENT, WorkerPool, WorkRequest
from shared.models import ExtractOptions
from shared.settings import Settings
from tests.perf.bench_core import CORPUS, WORKERS, say
from tests.perf.bench_peer import JOINED, REAL_MANUALS
from tests.perf.bench_throughput import concatenate
from tests.perf.harness import cpu_seconds, load_average

OPTIONS = ExtractOptions(outputs=["text"])


def build(work: Path) -> list[str]:
    """The 7 manuals of `peer`: 3 joined ones and the corpus's 4."""
    files = []
    for name, parts in JOINED.items():
        path = work / name
        concatenate([CORPUS / p for p in parts], path)
        files.append(str(path))
    return files + [str(CORPUS / m) for m in REAL_MANUALS]


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _one_document(pool: WorkerPool, settings: Settings, path: str, tmp: str) -> None:
    """As handlers/extract.py and shared/jobs/fanout.py run one document (text only): the whole
    document with `split_above` (the worker answers with its page count when it is to be split),
    then its ranges."""
    limits = ExtractLimits(max_inflated_bytes=settings.max_inflated_bytes)
    req = WorkRequest(
        path,
        tempfile.mkdtemp(dir=tmp),
        OPTIONS,
        limits,
        split_above=settings.fanout_min_pages,
        split_min_cpu_s=settings.fanout_min_cpu_s,
    )
    out = await pool.run(req, lambda d, t: None)
    if not out.split:
        return
    part = replace(limits, range_part=True, max_inflated_bytes=None)  # scanned by the probe
    runs = []
    for first, last in ranges(out.page_count, settings.fanout_range_pages):
        options = OPTIONS.model_copy(update={"pages": f"{first}-{last}"})
        req = WorkRequest(path, tempfile.mkdtemp(dir=tmp), options, part)
        runs.append(pool.run(req, lambda d, t: None, background=True))
    await asyncio.gather(*runs)


async def pool_run(files: Sequence[str], nice: int) -> tuple[float, float, float]:
    """(CPU s of this process's tree without itself, of which reaped children, wall s)."""
    settings = Settings()
    pool = WorkerPool(WORKERS, timeout_s=600, memory_mb=4096, nice=nice)
    await pool.start()
    try:
        with tempfile.TemporaryDirectory(prefix="pdfrelay-bench-worker-") as tmp:
            # Warm: both workers started, PyMuPDF's first-use costs paid.
            await asyncio.gather(
                *(_one_document(pool, settings, files[-1], tmp) for _ in range(WORKERS))
            )
            tree, own, kids = cpu_seconds(os.getpid()), _own_cpu(), _children_cpu()
            started = time.perf_counter()
            await asyncio.gather(*(_one_document(pool, settings, f, tmp) for f in files))
            wall = time.perf_counter() - started
            spent = cpu_seconds(os.getpid()) - tree - (_own_cpu() - own)
            return spent, _children_cpu() - kids, wall
    finally:
        pool.kill_all()


def bare(path: str) -> None:
    with pymupdf.open(path, filetype="pdf") as doc:
        for page in doc:
            page.get_text()


def _engine(
    path: str, options: ExtractOptions, limits: ExtractLimits, held: HeldDocument | None = None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = extract_document(path, options, limits, tmp, lambda d, t: None, held)
        out.result.model_dump_json(by_alias=True)
    if held is None:
        pymupdf.TOOLS.store_shrink(STORE_SHRINK_PERCENT)  # as a worker after each document
    gc.collect()


def engine(path: str) -> None:
    _engine(path, OPTIONS, ExtractLimits(max_inflated_bytes=None))


def engine_ranges(path: str, keep: bool = False) -> None:
    """The engine over the fan-out's ranges of `path` (its whole when it is not split), each
    range opened afresh (or, with `keep`, one after another in one open document)."""
    settings = Settings()
    count = _page_count(path)
    if count <= settings.fanout_min_pages:
        engine(path)
        return
    limits = ExtractLimits(max_inflated_bytes=None, range_part=True)
    held = HeldDocument() if keep else None
    for first, last in ranges(count, settings.fanout_range_pages):
        _engine(path, OPTIONS.model_copy(update={"pages": f"{first}-{last}"}), limits, held)
    if held is not None:
        held.release()
        pymupdf.TOOLS.store_shrink(100)


def _page_count(path: str) -> int:
    with pymupdf.open(path) as doc:
        return int(doc.page_count)


def scan(path: str) -> None:
    check_inflated(path, Settings().max_inflated_bytes)


PHASES: dict[str, Callable[[str], None]] = {
    "bare loop": bare,
    "decompression scan": scan,
    "engine (no scan)": engine,
    "engine over the ranges": engine_ranges,
    "the same, one open document": lambda path: engine_ranges(path, keep=True),
}


def phases(files: Sequence[str]) -> dict[str, dict[str, float]]:
    """CPU s by phase and file."""
    spent: dict[str, dict[str, float]] = {name: {} for name in PHASES}
    for path in files:
        for name, fn in PHASES.items():
            started = time.process_time()
            fn(path)
            spent[name][path] = time.process_time() - started
    return spent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf worker", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--nice", type=int, default=0, help="the pool's worker niceness")
    parser.add_argument("--pool-only", action="store_true", help="skip the in-process phases")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="pdfrelay-bench-worker-") as tmp:
        files = build(Path(tmp))
        say(f"worker CPU, 7 manuals; load average {load_average()}")
        for path in files:
            bare(path)  # warm this process
        gc.freeze()  # as a worker does: `gc.collect()` after a document then costs nothing
        runs = [phases(files) for _ in range(0 if args.pool_only else args.repeat)]
        pools = [asyncio.run(pool_run(files, args.nice)) for _ in range(args.repeat)]
        say(f"load average after {load_average()}")
        split = [f for f in files if _page_count(f) > Settings().fanout_min_pages]
    pool_s = statistics.median(p[0] for p in pools)
    if not runs:
        say(f"\npool CPU s {pool_s:.3f}, wall s {statistics.median(p[2] for p in pools):.2f}")
        return 0
    med = {k: statistics.median(sum(r[k].values()) for r in runs) for k in PHASES}
    base = med["bare loop"]
    say(f"\nin this process, CPU s (median of {args.repeat}), / bare loop:")
    for name, value in med.items():
        say(f"  {name:28} {value:6.3f}  {value / base:5.2f}x")

    def over_split(name: str) -> float:
        return statistics.median(sum(r[name][f] for f in split) for r in runs)

    whole = over_split("engine (no scan)")
    say(
        f"  the {len(split)} fanned-out documents: ranges / unsplit "
        f"{over_split('engine over the ranges') / whole:.2f}x opened afresh, "
        f"{over_split('the same, one open document') / whole:.2f}x in one open document"
    )
    counters = statistics.median(p[1] for p in pools)
    say(
        f"\npool (workers, forkserver, any other child), CPU s: {pool_s:.3f} "
        f"({pool_s / base:.2f}x the bare loop; runs {', '.join(f'{p[0]:.3f}' for p in pools)}), "
        f"of which reaped children {counters:.3f}; wall clock "
        f"{statistics.median(p[2] for p in pools):.2f} s (niceness {args.nice})"
    )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
