"""Throughput benchmark (issue 9): the pipeline on a mix of large and small real PDFs next to a
bare two-process PyMuPDF loop over the same files, with the defaults (a document is split only
when its extraction is long enough), page-range fan-out on every large document, and off; and how
long small jobs submitted right behind a large one take.

Everything runs for real, as in the core benchmark: moto's S3 server, a RabbitMQ vhost of our
own, `pdfrelay run ingress` and `pdfrelay run extract` as separate processes. The extract handler
is restarted for each mode and round (fan-out on every large document:
`PDFRELAY_FANOUT_MIN_CPU_S=0`; off: `PDFRELAY_FANOUT_MIN_PAGES` very large), the
modes alternate so that the machine's load drifts over both alike, and every job is submitted
with `force_refresh`, so the result cache answers none of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import aiohttp
import pymupdf

from shared.adapters.topology import topology_for
from shared.settings import Settings
from tests.perf.bench_core import (
    CORPUS,
    PIPELINE_FILES,
    TARGET_RATIO,
    WORKERS,
    BareRun,
    Corpus,
    CpuMeter,
    PipelineRun,
    bare_extract,
    follow,
    grid,
    parse_time,
    percentile,
    pipeline_round,
    progress,
    run_bare,
    say,
    services,
    settings_env,
    upload,
    warm_pool,
)
from tests.perf.harness import (
    Handler,
    MotoServer,
    count_events,
    find_pid_by_comm,
    free_port,
    http_session,
    load_average,
    run_handler,
    wait_consumers,
    wait_ready,
)

# Small real PDFs of the corpus with a text layer (1-2 pages; no scans, nothing encrypted).
SMALL_FILES = (
    "en-openoffice-form-test.pdf",
    "en-us-census-table-indesign.pdf",
    "en-image-gallery.pdf",
)
LARGE_PARTS = (*PIPELINE_FILES, *PIPELINE_FILES, "en-metapost-manual.pdf")
"""The text manuals concatenated into one large document (1,104 pages)."""
JOB_OPTIONS = {"outputs": ["text"], "force_refresh": True}
"""Plain text, as the bare loop (and the issue's Celery pipeline); no result cache."""
FANOUT_OFF = {"PDFRELAY_FANOUT_MIN_PAGES": str(10**9)}
ROUND_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Mode:
    label: str
    env: dict[str, str]


FANOUT_ALWAYS = {"PDFRELAY_FANOUT_MIN_CPU_S": "0"}
"""Every document over the page floor split, however quick its extraction would be."""
MODES = (
    Mode("defaults", {}),
    Mode("fan-out on every large document", FANOUT_ALWAYS),
    Mode("fan-out off", FANOUT_OFF),
)


@dataclass(frozen=True)
class Mix:
    corpus: Corpus
    """Every file in submission order: the small ones, the manuals, the large document last."""
    large: str
    generated: list[str]
    """The generated one-page PDFs (the small jobs submitted behind the large one)."""


@dataclass
class Behind:
    """Small jobs submitted right after a large one: seconds from each one's submit to its end."""

    small_s: list[float]
    large_s: float
    failures: list[str]


@dataclass
class ModeFigures:
    runs: list[PipelineRun] = field(default_factory=list)
    bare: list[BareRun] = field(default_factory=list)
    behind: list[Behind] = field(default_factory=list)

    @property
    def pages_per_s(self) -> float:
        return statistics.median(r.pages_per_s for r in self.runs)


# --- inputs -------------------------------------------------------------------------------------


def concatenate(parts: Sequence[Path], out: Path) -> None:
    """One PDF of all `parts`' pages, in order."""
    doc = pymupdf.open()
    try:
        for part in parts:
            with pymupdf.open(part) as src:
                doc.insert_pdf(src)
        doc.save(out, garbage=1)
    finally:
        doc.close()


def one_page_pdf(out: Path, number: int) -> None:
    """A one-page PDF with a text layer: an invoice-like page, different for every `number`."""
    doc = pymupdf.open()
    try:
        page = doc.new_page()
        lines = [
            f"Invoice {number:05d}",
            "",
            *(f"item {i}: {i * number % 97} EUR" for i in range(30)),
        ]
        page.insert_text((72, 72), "\n".join(lines), fontsize=11)
        doc.save(out)
    finally:
        doc.close()


def page_count(path: Path) -> int:
    with pymupdf.open(path) as doc:
        return int(doc.page_count)


def build_mix(work: Path, generated: int) -> Mix:
    """The large document and the generated one-page PDFs in `work`; the rest from the corpus."""
    large = work / "large-manuals.pdf"
    concatenate([CORPUS / name for name in LARGE_PARTS], large)
    pages_dir = work / "one-page"
    pages_dir.mkdir()
    singles = [pages_dir / f"invoice-{i:03d}.pdf" for i in range(generated)]
    for i, path in enumerate(singles):
        one_page_pdf(path, i + 1)
    manuals = [CORPUS / name for name in PIPELINE_FILES]
    ordered = [*singles, *(CORPUS / name for name in SMALL_FILES), *manuals, large]
    files = [str(p) for p in ordered]
    return Mix(
        corpus=Corpus(
            files=files,
            page_counts={p: page_count(Path(p)) for p in files},
            blobs={p: Path(p).read_bytes() for p in files},
        ),
        large=str(large),
        generated=[str(p) for p in singles],
    )


# --- the pipeline -------------------------------------------------------------------------------


@dataclass
class Pipeline:
    """An ingress that stays; extract handlers come and go (one per mode and round)."""

    amqp_url: str
    base_url: str
    settings: dict[str, str]
    work: Path
    trace_dir: Path
    ingress: Handler
    moto_pid: int
    session: aiohttp.ClientSession
    events: Counter[str]

    @contextlib.asynccontextmanager
    async def extract(self, mode: Mode, mix: Mix) -> AsyncIterator[CpuMeter]:
        """`pdfrelay run extract` in `mode`, ready and warmed up; yields a meter of its CPU."""
        topology = topology_for(Settings(namespace=self.settings["PDFRELAY_NAMESPACE"]))
        with run_handler("extract", {**self.settings, **mode.env}, self.work) as extract:
            await wait_consumers(self.amqp_url, topology.extract, extract)
            meter = CpuMeter(
                {
                    "workers": (extract.pid, True),
                    "handler": (extract.pid, False),
                    "ingress": (self.ingress.pid, False),
                    "moto S3": (self.moto_pid, False),
                    "broker": (find_pid_by_comm("beam.smp"), False),
                }
            )
            # A few small jobs first, untimed: the worker processes of a fresh handler start.
            await self.round(mix.generated[: WORKERS * 2], mix, meter)
            yield meter
            extract.check_alive()

    async def round(self, files: Sequence[str], mix: Mix, meter: CpuMeter) -> PipelineRun:
        corpus = mix.corpus
        async with asyncio.timeout(ROUND_TIMEOUT_S):
            run = await pipeline_round(
                self.session,
                self.base_url,
                files,
                corpus.blobs,
                corpus.page_counts,
                self.trace_dir,
                meter,
                self.events,
                JOB_OPTIONS,
            )
        # The tree's time includes the handler process's own: the workers' alone.
        run.cpu_s["workers"] -= run.cpu_s["handler"]
        return run

    async def behind_large(self, mix: Mix) -> Behind:
        """Submit the large document, then right after it every generated one-page PDF."""
        submitted: dict[str, float] = {}
        followers: list[asyncio.Task[dict[str, Any]]] = []
        blobs = mix.corpus.blobs
        async with asyncio.timeout(ROUND_TIMEOUT_S):
            for path in [mix.large, *mix.generated]:
                at = time.time()
                status, body = await upload(
                    self.session, self.base_url, Path(path).name, blobs[path], JOB_OPTIONS
                )
                if status != 202:
                    raise RuntimeError(f"upload of {path} answered {status}: {body}")
                submitted[body["job_id"]] = at
                followers.append(
                    asyncio.create_task(follow(self.session, self.base_url, body["job_id"]))
                )
            jobs = await asyncio.gather(*followers)
        failures = [f"{j['job_id']}: {j['status']}" for j in jobs if j["status"] != "completed"]
        took = [(parse_time(j["finished_at"]) or 0.0) - submitted[j["job_id"]] for j in jobs]
        return Behind(small_s=took[1:], large_s=took[0], failures=failures)


@contextlib.asynccontextmanager
async def pipeline(amqp_url: str, s3: MotoServer, work: Path) -> AsyncIterator[Pipeline]:
    stage = work / "pipeline"
    trace_dir = stage / "traces"
    trace_dir.mkdir(parents=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = settings_env(amqp_url, s3.endpoint, stage / "spool", port)
    settings["PDFRELAY_EXTRACT_TRACE_DIR"] = str(trace_dir)
    topology = topology_for(Settings(namespace=settings["PDFRELAY_NAMESPACE"]))
    with run_handler("ingress", settings, work) as ingress:
        await wait_ready(base_url, ingress)
        async with (
            http_session() as session,
            count_events(amqp_url, topology.events) as events,
        ):
            yield Pipeline(
                amqp_url, base_url, settings, work, trace_dir, ingress, s3.proc.pid, session, events
            )
        ingress.check_alive()


async def measure(stack: Pipeline, pool: Pool, mix: Mix, rounds: int) -> dict[str, ModeFigures]:
    """`rounds` x (each mode: the mix through the pipeline, then through the bare loop); in the
    last round also the small jobs behind a large one."""
    figures = {mode.label: ModeFigures() for mode in MODES}
    for i in range(rounds):
        for mode in MODES:
            fig = figures[mode.label]
            async with stack.extract(mode, mix) as meter:
                progress(f"{mode.label}: round {i + 1}/{rounds}")
                fig.runs.append(await stack.round(mix.corpus.files, mix, meter))
                # The reference runs while the handlers idle, on the same cores.
                fig.bare.append(
                    await asyncio.to_thread(run_bare, pool, mix.corpus.files, bare_extract)
                )
                if i == rounds - 1:
                    progress(f"{mode.label}: small jobs behind the large one")
                    fig.behind.append(await stack.behind_large(mix))
    return figures


# --- report -------------------------------------------------------------------------------------


def _slots_busy(runs: Sequence[PipelineRun]) -> str:
    """Share of the extraction slots' time that a worker spent on a document."""
    return f"{statistics.median(r.worker_s / (WORKERS * r.wall_s) for r in runs):.0%}"


def _bare_busy(bares: Sequence[BareRun]) -> str:
    return f"{statistics.median(b.busy_s / (WORKERS * b.wall_s) for b in bares):.0%}"


def _service_cpu(run: PipelineRun) -> float:
    """CPU seconds of every process of the pipeline (not the benchmark client's)."""
    return sum(v for k, v in run.cpu_s.items() if not k.startswith("bench client"))


def print_throughput(figures: dict[str, ModeFigures], mix: Mix) -> dict[str, float]:
    """The side-by-side table; returns each mode's ratio to the bare loop in pages/s."""
    corpus = mix.corpus
    sizes = Counter(
        "large" if p == mix.large else "small" if corpus.page_counts[p] <= 2 else "manual"
        for p in corpus.files
    )
    say(
        f"\n== throughput: {len(corpus.files)} jobs = {corpus.pages} pages per round "
        f"({sizes['small']} small of 1-2 pages, {sizes['manual']} manuals of 46-234 pages, then "
        f"1 of {corpus.page_counts[mix.large]} pages last), outputs text, "
        f"force_refresh, {WORKERS} extraction processes; medians of the rounds"
    )
    bares = [b for f in figures.values() for b in f.bare]
    bare = statistics.median(b.pages_per_s for b in bares)
    bare_cpu = statistics.median(b.cpu_s for b in bares)
    rows: list[tuple[str, ...]] = [
        ("", "pages/s", "ratio", "slots busy", "worker CPU-s", "all CPU-s", "rounds (pages/s)")
    ]
    rows.append(
        (
            f"bare PyMuPDF loop, Pool({WORKERS})",
            f"{bare:.0f}",
            "1.00",
            _bare_busy(bares),
            f"{bare_cpu:.2f}",
            f"{bare_cpu:.2f}",
            " ".join(f"{b.pages_per_s:.0f}" for b in bares),
        )
    )
    ratios: dict[str, float] = {}
    for label, fig in figures.items():
        cpu = statistics.median(r.cpu_s["workers"] for r in fig.runs)
        total = statistics.median(_service_cpu(r) for r in fig.runs)
        ratios[label] = fig.pages_per_s / bare
        rows.append(
            (
                f"pipeline, {label}",
                f"{fig.pages_per_s:.0f}",
                f"{ratios[label]:.2f}",
                _slots_busy(fig.runs),
                f"{cpu:.2f}",
                f"{total:.2f}",
                " ".join(f"{r.pages_per_s:.0f}" for r in fig.runs),
            )
        )
    grid(rows)
    say(
        "   slots busy: worker time on documents / (workers x wall); all CPU-s: workers, extract"
        " handler, ingress, moto S3 and broker, on the same cores (the bare loop: its pool)"
    )
    for label, fig in figures.items():
        failures = [x for r in fig.runs for x in r.failures]
        if failures:
            say(f"   {label}: FAILURES ({len(failures)}): " + "; ".join(failures[:5]))
        per_round: Counter[str] = Counter()
        for r in fig.runs:
            per_round.update(r.cpu_s)
        n = len(fig.runs)
        say(
            f"   {label}: CPU-s per round "
            + ", ".join(f"{k} {v / n:.2f}" for k, v in per_round.most_common())
            + f"; wall {statistics.mean(r.wall_s for r in fig.runs):.2f} s"
        )
    return ratios


def print_behind(figures: dict[str, ModeFigures], mix: Mix) -> None:
    say(
        f"\n== {len(mix.generated)} one-page jobs submitted right after one of "
        f"{mix.corpus.page_counts[mix.large]} pages: seconds from submit to completed"
    )
    rows: list[tuple[str, ...]] = [("", "small p50", "small p99", "small max", "large")]
    for label, fig in figures.items():
        for b in fig.behind:
            rows.append(
                (
                    label,
                    f"{percentile(b.small_s, 50):.2f}",
                    f"{percentile(b.small_s, 99):.2f}",
                    f"{max(b.small_s):.2f}",
                    f"{b.large_s:.2f}",
                )
            )
            if b.failures:
                say(f"   {label}: FAILURES: " + "; ".join(b.failures[:5]))
    grid(rows)


# --- entry point --------------------------------------------------------------------------------


async def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    load = load_average()
    with services("throughput") as svc:
        mix = build_mix(svc.work, args.small)
        await warm_pool(svc.pool, mix.generated[0])
        async with pipeline(svc.amqp_url, svc.s3, svc.work) as stack:
            figures = await measure(stack, svc.pool, mix, args.rounds)
        ratios = print_throughput(figures, mix)
        print_behind(figures, mix)
        on = ratios[MODES[0].label]
        verdict = "meets" if on >= TARGET_RATIO else "is BELOW"
        end_load = load_average()
        say(
            f"\n   with the defaults, pipeline/bare = {on:.2f} in pages/s, which {verdict}"
            f" the target of {TARGET_RATIO}. The run took {time.perf_counter() - started:.0f} s;"
            f" load average {load[0]:.2f} at the start, {end_load[0]:.2f} at the end."
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the throughput benchmark and print its figures; `argv` as on the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.bench_throughput", description=__doc__
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode")
    parser.add_argument("--small", type=int, default=20, help="generated one-page PDFs")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    raise SystemExit(main())
