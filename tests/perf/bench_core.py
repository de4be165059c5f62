"""Core benchmark: the ingress under 100 concurrent 1 MB uploads, and the whole pipeline's pages/s
next to a bare PyMuPDF loop with the same number of processes.

Everything runs for real on this machine: moto's S3 server, a RabbitMQ vhost of our own, and
`pdfrelay run ingress` / `pdfrelay run extract` as separate processes. The pipeline runs twice:
as deployed, and once more with the extract handler started so that its worker processes do not
re-run the `pdfrelay` script (what a fix of the per-document start-up cost would give).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import aiohttp

from shared.adapters.topology import topology_for
from shared.settings import Settings
from tests.perf.harness import (
    MotoServer,
    RssSampler,
    TreeMemory,
    count_events,
    cpu_seconds,
    find_pid_by_comm,
    free_port,
    http_session,
    load_average,
    moto_server,
    rabbit_vhost,
    run_handler,
    status_kb,
    wait_consumers,
    wait_ready,
)

CORPUS = Path(os.environ.get("PDFRELAY_BENCH_CORPUS", "/work/shared/corpus"))
# The unencrypted multi-page PDFs of the corpus that have a text layer.
PIPELINE_FILES = (
    "en-beamer-userguide.pdf",
    "en-metapost-manual.pdf",
    "de-texlive-anleitung.pdf",
    "ru-texlive-guide.pdf",
)
WORKERS = 2
UPLOADS = 100
UPLOAD_BYTES = 1_000_000
TARGET_RATIO = 0.9
# The extract handler as `pdfrelay run extract` does it, but from `python -c`: the main module
# then has no file, so multiprocessing does not re-run it in every worker process.
NO_REIMPORT_EXTRACT = [
    sys.executable,
    "-c",
    "import sys; from infra.cli import main; sys.exit(main(['run', 'extract']))",
]


_STARTED = time.perf_counter()


def say(text: str) -> None:
    print(text, flush=True)


def progress(text: str) -> None:
    """A line that shows the run is alive, with the seconds since the start."""
    say(f"   [{time.perf_counter() - _STARTED:5.0f} s] {text}")


# --- inputs -------------------------------------------------------------------------------------


def noise_pdf(size: int, rng: random.Random) -> bytes:
    """A valid one-page PDF of about `size` bytes: an uncompressed random-noise gray image."""
    width = 1000
    height = max(1, (size - 900) // width)
    pixels = rng.randbytes(width * height)
    content = b"q 612 0 0 792 0 0 cm /Im0 Do Q\n"
    image = b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray " % (
        width,
        height,
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /XObject << /Im0 4 0 R >> >> /Contents 5 0 R >>",
        image + b"/BitsPerComponent 8 /Length %d >>\nstream\n%b\nendstream" % (len(pixels), pixels),
        b"<< /Length %d >>\nstream\n%b\nendstream" % (len(content), content),
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%b\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


# --- the bare PyMuPDF loop ----------------------------------------------------------------------


def bare_extract(path: str) -> tuple[int, float, float]:
    """What the engine does for the default outputs (text + metadata), and nothing else.

    Returns (pages, wall seconds, CPU seconds) spent in this process.
    """
    import pymupdf

    started, cpu = time.perf_counter(), time.process_time()
    doc = pymupdf.open(path, filetype="pdf")
    try:
        pages = 0
        for index in range(doc.page_count):
            doc.load_page(index).get_text()
            pages += 1
        _ = doc.metadata
        doc.get_toc(simple=True)
    finally:
        doc.close()
    return pages, time.perf_counter() - started, time.process_time() - cpu


def engine_extract(path: str) -> tuple[int, float, float]:
    """The product's engine in this process, as a worker runs it (result.json included).

    Returns (pages, wall seconds, CPU seconds).
    """
    from shared.extraction import ExtractLimits, extract_document
    from shared.models import ExtractOptions

    started, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="pdfrelay-bench-engine-") as tmp:
        out = extract_document(path, ExtractOptions(), ExtractLimits(), tmp, lambda _d, _t: None)
        Path(tmp, "result.json").write_text(out.result.model_dump_json(by_alias=True))
    return len(out.result.pages), time.perf_counter() - started, time.process_time() - cpu


@dataclass
class BareRun:
    pages: int
    wall_s: float
    busy_s: float
    """Sum of per-document wall time inside the pool's processes."""
    cpu_s: float

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.wall_s


def run_bare(
    pool: Pool, files: Sequence[str], fn: Callable[[str], tuple[int, float, float]]
) -> BareRun:
    started = time.perf_counter()
    results = list(pool.imap_unordered(fn, files, chunksize=1))
    wall = time.perf_counter() - started
    return BareRun(
        pages=sum(r[0] for r in results),
        wall_s=wall,
        busy_s=sum(r[1] for r in results),
        cpu_s=sum(r[2] for r in results),
    )


@contextlib.contextmanager
def bare_pool(processes: int) -> Iterator[Pool]:
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(processes) as pool:
        yield pool


async def warm_pool(pool: Pool, warm_file: str) -> None:
    """Import PyMuPDF and the engine in every pool process (before anything is timed)."""
    await asyncio.to_thread(pool.map, bare_extract, [warm_file] * WORKERS * 2, 1)
    await asyncio.to_thread(pool.map, engine_extract, [warm_file] * WORKERS * 2, 1)


# --- measuring other processes ------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used by named processes (trees, or a process alone) between start and stop."""

    def __init__(self, pids: dict[str, tuple[int | None, bool]]) -> None:
        self.pids = {k: (pid, tree) for k, (pid, tree) in pids.items() if pid is not None}
        self._before: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid, tree=tree) for name, (pid, tree) in self.pids.items()}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        now["bench client (this process)"] = usage.ru_utime + usage.ru_stime
        return now

    def start(self) -> None:
        self._before = self._now()

    def stop(self) -> dict[str, float]:
        after = self._now()
        return {k: after[k] - self._before.get(k, 0.0) for k in after}


def settings_env(amqp_url: str, s3_endpoint: str, spool: Path, port: int) -> dict[str, str]:
    """PDFRELAY_* of one benchmark stage: a namespace and bucket of its own."""
    ns = f"bench{uuid.uuid4().hex[:8]}"
    spool.mkdir(parents=True, exist_ok=True)
    return {
        "PDFRELAY_AMQP_URL": amqp_url,
        "PDFRELAY_NAMESPACE": ns,
        "PDFRELAY_S3_ENDPOINT": s3_endpoint,
        "PDFRELAY_S3_BUCKET": ns,
        "PDFRELAY_HTTP_HOST": "127.0.0.1",
        "PDFRELAY_HTTP_PORT": str(port),
        "PDFRELAY_SPOOL_DIR": str(spool),
        "PDFRELAY_MAX_QUEUE_LENGTH": "100000",
        "PDFRELAY_EXTRACT_WORKERS": str(WORKERS),
    }


async def upload(
    session: aiohttp.ClientSession,
    base_url: str,
    name: str,
    data: bytes,
    options: Mapping[str, object] | None = None,
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/pdf")
    if options is not None:
        form.add_field("options", json.dumps(options), content_type="application/json")
    async with session.post(f"{base_url}/v1/jobs", data=form) as resp:
        body = await resp.json(content_type=None)
        return resp.status, body if isinstance(body, dict) else {}


# --- ingress ------------------------------------------------------------------------------------


@dataclass
class IngressFigures:
    uploads: int
    upload_bytes: int
    statuses: Counter[int]
    latencies_s: list[float]
    wall_s: float
    rss_idle_kb: int
    hwm_kb: int
    cpu_s: dict[str, float]

    @property
    def accepted(self) -> int:
        return self.statuses[202]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


async def bench_ingress(
    amqp_url: str, s3_endpoint: str, moto_pid: int, work: Path
) -> IngressFigures:
    """100 concurrent 1 MB uploads against `pdfrelay run ingress` alone (nothing consumes)."""
    rng = random.Random(20240601)
    bodies = [noise_pdf(UPLOAD_BYTES, rng) for _ in range(UPLOADS + 2)]
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = settings_env(amqp_url, s3_endpoint, work / "spool-ingress", port)
    with run_handler("ingress", settings, work) as ingress:
        await wait_ready(base_url, ingress)
        meter = CpuMeter(
            {
                "ingress": (ingress.pid, False),
                "moto S3": (moto_pid, False),
                "rabbitmq": (find_pid_by_comm("beam.smp"), False),
            }
        )
        async with http_session() as session:
            # Two uploads first, so the figures are not a cold start of the S3 and broker clients.
            for body in bodies[:2]:
                status, _ = await upload(session, base_url, "warmup.pdf", body)
                if status != 202:
                    raise RuntimeError(f"warm-up upload answered {status}")
            rss_idle = status_kb(ingress.pid, "VmRSS") or 0
            latencies: list[float] = []
            statuses: Counter[int] = Counter()
            gate = asyncio.Event()

            async def one(i: int, body: bytes) -> None:
                await gate.wait()
                t0 = time.perf_counter()
                status, _ = await upload(session, base_url, f"noise-{i}.pdf", body)
                latencies.append(time.perf_counter() - t0)
                statuses[status] += 1

            tasks = [asyncio.create_task(one(i, b)) for i, b in enumerate(bodies[2:])]
            await asyncio.sleep(0)
            meter.start()
            started = time.perf_counter()
            gate.set()
            await asyncio.gather(*tasks)
            wall = time.perf_counter() - started
            cpu = meter.stop()
        ingress.check_alive()
        hwm = status_kb(ingress.pid, "VmHWM") or 0
    return IngressFigures(
        uploads=UPLOADS,
        upload_bytes=len(bodies[2]),
        statuses=statuses,
        latencies_s=latencies,
        wall_s=wall,
        rss_idle_kb=rss_idle,
        hwm_kb=hwm,
        cpu_s=cpu,
    )


# --- pipeline -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobTiming:
    """One job's time in the extract handler, split at its worker process (seconds)."""

    before: float
    """started_at → worker running: download from S3, process start, worker start-up."""
    worker: float
    """The worker process from its first line to its answer (extraction, result.json)."""
    after: float
    """worker answered → finished_at: process exit, result upload, record, events."""


@dataclass
class PipelineRun:
    pages: int
    jobs: int
    wall_s: float
    first_start_s: float
    """From the first upload until the first job entered `processing`."""
    handler_s: float
    """Sum over jobs of started_at → finished_at (the extract handler's time per job)."""
    worker_s: float
    """Sum of worker process lifetimes as traced by the workers (first line → answer)."""
    timings: list[JobTiming]
    cpu_s: dict[str, float]
    events: Counter[str]
    """Messages on the events exchange during the round, by routing key."""
    failures: list[str] = field(default_factory=list)

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.wall_s

    @property
    def pdfrelay_cpu_s(self) -> float:
        """CPU time of pdfrelay's own processes (not the S3 server's, not the broker's)."""
        return sum(v for k, v in self.cpu_s.items() if k.startswith(("extract", "ingress")))


@dataclass
class PipelineFigures:
    label: str
    runs: list[PipelineRun]
    bare: list[BareRun]
    engine: list[BareRun]
    memory: TreeMemory
    ingress_hwm_kb: int

    @property
    def pages_per_s(self) -> float:
        return statistics.median(r.pages_per_s for r in self.runs)


def parse_time(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value).timestamp()


async def follow(session: aiohttp.ClientSession, base_url: str, job_id: str) -> dict[str, Any]:
    """Long-poll the job until it ends; a 503 (dependency away) is retried as it asks."""
    while True:
        async with session.get(f"{base_url}/v1/jobs/{job_id}", params={"wait": "60"}) as resp:
            if resp.status == 503:
                await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                continue
            if resp.status != 200:
                raise RuntimeError(
                    f"GET /v1/jobs/{job_id} answered {resp.status}: {await resp.text()}"
                )
            job: dict[str, Any] = await resp.json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job


def _read_traces(trace_dir: Path) -> list[tuple[float, float]]:
    """Worker spans (start, end) on the wall clock; the workers write them on the monotonic."""
    offset = time.time() - time.monotonic()
    spans = []
    for path in trace_dir.glob("*.trace"):
        for line in path.read_text().splitlines():
            span = json.loads(line)
            spans.append((float(span["start"]) + offset, float(span["end"]) + offset))
        path.unlink()
    return spans


def _match(
    intervals: list[tuple[float, float]], spans: list[tuple[float, float]]
) -> list[JobTiming]:
    """Pair each job's handler interval with the worker span inside it (by time; the handler's
    work after the worker answers is short, so the span ending last inside is the job's own)."""
    free = sorted(spans)
    timings = []
    for start, end in sorted(intervals, key=lambda iv: iv[1]):
        inside = [s for s in free if s[0] >= start - 0.005 and s[1] <= end + 0.005]
        if not inside:
            continue
        span = max(inside, key=lambda s: s[1])
        free.remove(span)
        timings.append(
            JobTiming(before=span[0] - start, worker=span[1] - span[0], after=end - span[1])
        )
    return timings


async def pipeline_round(
    session: aiohttp.ClientSession,
    base_url: str,
    files: Sequence[str],
    blobs: dict[str, bytes],
    page_counts: dict[str, int],
    trace_dir: Path,
    meter: CpuMeter,
    events: Counter[str],
    options: Mapping[str, object] | None = None,
) -> PipelineRun:
    """Upload `files` in order (each with `options`), wait until every job has ended."""
    followers: list[asyncio.Task[dict[str, Any]]] = []
    expected: dict[str, int] = {}
    _read_traces(trace_dir)
    events_before = Counter(events)
    meter.start()
    started_wall = time.time()
    started = time.perf_counter()
    # One after another, so the queue order is the list order as in the bare loop; an upload
    # takes a few ms, far less than extracting the document before it.
    for path in files:
        name = Path(path).name
        status, body = await upload(session, base_url, name, blobs[path], options)
        if status != 202:
            raise RuntimeError(f"upload of {name} answered {status}: {body}")
        expected[body["job_id"]] = page_counts[path]
        followers.append(asyncio.create_task(follow(session, base_url, body["job_id"])))
    jobs = await asyncio.gather(*followers)
    wall = time.perf_counter() - started
    cpu = meter.stop()
    failures: list[str] = []
    intervals: list[tuple[float, float]] = []
    pages = 0
    for job in jobs:
        if job["status"] != "completed":
            failures.append(f"{job['job_id']}: {job['status']} {job.get('error')}")
            continue
        done = job["result"]["pages_extracted"]
        if done != expected[job["job_id"]]:
            failures.append(f"{job['job_id']}: {done} pages, expected {expected[job['job_id']]}")
        pages += done
        t_start, t_end = parse_time(job["started_at"]), parse_time(job["finished_at"])
        if t_start is not None and t_end is not None:
            intervals.append((t_start, t_end))
    spans = _read_traces(trace_dir)
    first = min((s for s, _ in intervals), default=float("nan"))
    return PipelineRun(
        pages=pages,
        jobs=len(jobs),
        wall_s=wall,
        first_start_s=first - started_wall,
        handler_s=sum(e - s for s, e in intervals),
        worker_s=sum(e - s for s, e in spans),
        timings=_match(intervals, spans),
        cpu_s=cpu,
        events=events - events_before,
        failures=failures,
    )


@dataclass(frozen=True)
class Variant:
    """One way of running the extract handler, measured for `rounds` rounds."""

    label: str
    rounds: int
    """At most; fewer when the next round would end after `budget_s`."""
    budget_s: float
    extract_command: Sequence[str] | None = None
    """None: `pdfrelay run extract`."""


async def bench_pipeline(
    amqp_url: str,
    s3_endpoint: str,
    moto_pid: int,
    work: Path,
    pool: Pool,
    corpus: Corpus,
    variants: Sequence[Variant],
) -> list[PipelineFigures]:
    """One ingress; per variant an extract handler and `rounds` x (every file of `corpus`
    through ingress + extract, then the same files through the bare loop)."""
    files, blobs, page_counts = corpus.files, corpus.blobs, corpus.page_counts
    stage = work / "pipeline"
    trace_dir = stage / "traces"
    trace_dir.mkdir(parents=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = settings_env(amqp_url, s3_endpoint, stage / "spool", port)
    settings["PDFRELAY_EXTRACT_TRACE_DIR"] = str(trace_dir)
    topology = topology_for(Settings(namespace=settings["PDFRELAY_NAMESPACE"]))
    figures: list[PipelineFigures] = []
    with run_handler("ingress", settings, work) as ingress:
        # The references' processes import while the ingress starts; neither is timed.
        await warm_pool(pool, min(page_counts, key=page_counts.__getitem__))
        await wait_ready(base_url, ingress)
        async with (
            http_session() as session,
            count_events(amqp_url, topology.events) as events,
        ):
            for variant in variants:
                runs: list[PipelineRun] = []
                bares: list[BareRun] = []
                engines: list[BareRun] = []
                with run_handler(
                    "extract", settings, work, command=variant.extract_command
                ) as extract:
                    await wait_consumers(amqp_url, topology.extract, extract)
                    meter = CpuMeter(
                        {
                            "extract: workers + forkserver": (extract.pid, True),
                            "extract: handler process": (extract.pid, False),
                            "ingress": (ingress.pid, False),
                            "moto S3": (moto_pid, False),
                            "rabbitmq (shared broker)": (find_pid_by_comm("beam.smp"), False),
                        }
                    )
                    # Two small jobs first, untimed: the first jobs of a fresh handler.
                    warm = [min(page_counts, key=page_counts.__getitem__)] * WORKERS
                    await pipeline_round(
                        session, base_url, warm, blobs, page_counts, trace_dir, meter, events
                    )
                    budget_ends = time.perf_counter() + variant.budget_s
                    with RssSampler(extract.pid) as sampler:
                        for i in range(variant.rounds):
                            round_started = time.perf_counter()
                            progress(f"{variant.label}: round {i + 1}/{variant.rounds}")
                            run = await pipeline_round(
                                session,
                                base_url,
                                files,
                                blobs,
                                page_counts,
                                trace_dir,
                                meter,
                                events,
                            )
                            runs.append(run)
                            # The references run while the handlers idle, on the same cores;
                            # the engine alone once per variant, to keep the whole run short.
                            bares.append(
                                await asyncio.to_thread(run_bare, pool, files, bare_extract)
                            )
                            if i == 0:
                                engines.append(
                                    await asyncio.to_thread(run_bare, pool, files, engine_extract)
                                )
                            # On a slow (or busy) machine, fewer rounds rather than a long run.
                            if (
                                time.perf_counter() - round_started
                                > budget_ends - time.perf_counter()
                            ):
                                break
                    extract.check_alive()
                for run in runs:
                    # The tree's time includes the handler's own; show the workers' alone.
                    workers = run.cpu_s["extract: workers + forkserver"]
                    run.cpu_s["extract: workers + forkserver"] = (
                        workers - run.cpu_s["extract: handler process"]
                    )
                figures.append(
                    PipelineFigures(
                        label=variant.label,
                        runs=runs,
                        bare=bares,
                        engine=engines,
                        memory=sampler.memory,
                        ingress_hwm_kb=0,
                    )
                )
        ingress.check_alive()
        hwm = status_kb(ingress.pid, "VmHWM") or 0
    for f in figures:
        f.ingress_hwm_kb = hwm
    return figures


# --- report -------------------------------------------------------------------------------------


def _mb(kb: int) -> str:
    return f"{kb / 1024:.0f} MB"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _table(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"   {k:<{width}}  {v}")


def grid(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("   " + "  ".join(cells).rstrip())
        if j == 0:
            print("   " + "  ".join("-" * w for w in widths))


def print_ingress(f: IngressFigures) -> None:
    say(
        f"\n== ingress: {f.uploads} concurrent uploads of {f.upload_bytes / 1e6:.2f} MB"
        " (`pdfrelay run ingress` alone, nothing consuming)"
    )
    mb_s = f.accepted * f.upload_bytes / f.wall_s / 1e6
    _table(
        [
            ("answers", ", ".join(f"{n} x {s}" for s, n in sorted(f.statuses.items()))),
            ("time to 202, p50", _ms(percentile(f.latencies_s, 50))),
            ("time to 202, p99", _ms(percentile(f.latencies_s, 99))),
            ("all accepted after", f"{f.wall_s:.2f} s"),
            ("uploads/s", f"{f.accepted / f.wall_s:.1f}  ({mb_s:.0f} MB/s)"),
            ("ingress RSS idle -> peak (VmHWM)", f"{_mb(f.rss_idle_kb)} -> {_mb(f.hwm_kb)}"),
        ]
    )
    say(f"\n   CPU seconds during the burst ({WORKERS} cores x {f.wall_s:.2f} s available)")
    _table([(k, f"{v:.2f} s") for k, v in sorted(f.cpu_s.items(), key=lambda kv: -kv[1])])


def print_pipeline(
    variants: list[PipelineFigures], files: Sequence[str], pages: int
) -> tuple[float, float]:
    """Print the pipeline's figures; returns its ratios to the bare loop (pages/s, per CPU-s)."""
    names = Counter(Path(p).name for p in files)
    say(
        f"\n== pipeline: {len(files)} jobs = {pages} pages per round, outputs text+metadata, "
        f"{WORKERS} extraction processes; pages/s is the median of the rounds"
    )
    say("   " + ", ".join(f"{n} x {name}" for name, n in names.items()))
    say(
        "   pages/CPU-s counts the CPU time of pdfrelay's processes (extract with its workers,"
        " ingress), not the S3 server's or the broker's"
    )
    bare_all = [b for v in variants for b in v.bare]
    engine_all = [b for v in variants for b in v.engine]
    bare = statistics.median(b.pages_per_s for b in bare_all)
    engine = statistics.median(b.pages_per_s for b in engine_all)
    # Pages per CPU second hardly depend on what else the machine runs, unlike pages/s.
    bare_eff = statistics.median(b.pages / b.cpu_s for b in bare_all)
    engine_eff = statistics.median(b.pages / b.cpu_s for b in engine_all)
    rows: list[tuple[str, ...]] = [
        ("", "pages/s", "ratio", "pages/CPU-s", "ratio", "rounds (pages/s)")
    ]
    rows.append(
        (
            f"bare PyMuPDF loop, Pool({WORKERS})",
            f"{bare:.0f}",
            "1.00",
            f"{bare_eff:.0f}",
            "1.00",
            " ".join(f"{b.pages_per_s:.0f}" for b in bare_all),
        )
    )
    rows.append(
        (
            f"pdfrelay engine alone, Pool({WORKERS})",
            f"{engine:.0f}",
            f"{engine / bare:.2f}",
            f"{engine_eff:.0f}",
            f"{engine_eff / bare_eff:.2f}",
            " ".join(f"{b.pages_per_s:.0f}" for b in engine_all),
        )
    )
    for v in variants:
        eff = statistics.median(r.pages / r.pdfrelay_cpu_s for r in v.runs)
        rows.append(
            (
                v.label,
                f"{v.pages_per_s:.0f}",
                f"{v.pages_per_s / bare:.2f}",
                f"{eff:.0f}",
                f"{eff / bare_eff:.2f}",
                " ".join(f"{r.pages_per_s:.0f}" for r in v.runs),
            )
        )
    grid(rows)
    failures = [x for v in variants for r in v.runs for x in r.failures]
    if failures:
        say(f"   FAILURES ({len(failures)}): " + "; ".join(failures[:5]))
    refs = References(
        bare_busy=statistics.mean(b.busy_s for b in bare_all),
        bare_cpu=statistics.mean(b.cpu_s for b in bare_all),
        engine_busy=statistics.mean(b.busy_s for b in engine_all),
        engine_cpu=statistics.mean(b.cpu_s for b in engine_all),
    )
    for v in variants:
        _print_breakdown(v, refs)
    deployed = variants[0]
    deployed_eff = statistics.median(r.pages / r.pdfrelay_cpu_s for r in deployed.runs)
    return deployed.pages_per_s / bare, deployed_eff / bare_eff


@dataclass(frozen=True)
class References:
    """Mean per round of the in-pool references: time in the processes, CPU time."""

    bare_busy: float
    bare_cpu: float
    engine_busy: float
    engine_cpu: float


def _print_breakdown(v: PipelineFigures, refs: References) -> None:
    n = len(v.runs)
    jobs = v.runs[0].jobs
    wall = statistics.mean(r.wall_s for r in v.runs)
    handler = statistics.mean(r.handler_s for r in v.runs)
    timings = [t for r in v.runs for t in r.timings]
    events: Counter[str] = Counter()
    for r in v.runs:
        events.update(r.events)
    say(f"\n   -- {v.label}: where the time goes (mean per round of {jobs} jobs)")
    rows = [
        ("wall time, first upload -> last job completed", f"{wall:.2f} s"),
        (
            "  first upload -> first job processing",
            _ms(statistics.mean(r.first_start_s for r in v.runs)),
        ),
        (
            "  extraction slots busy (sum of started->finished)",
            f"{handler:.2f} of {WORKERS * wall:.2f} slot-s",
        ),
    ]
    if timings:
        rows += [
            (
                "per job: started -> worker running (download, spawn)",
                _ms(statistics.mean(t.before for t in timings)),
            ),
            (
                "per job: worker running (extract, write result)",
                _ms(statistics.mean(t.worker for t in timings)),
            ),
            (
                "per job: worker answered -> finished (store, events)",
                _ms(statistics.mean(t.after for t in timings)),
            ),
        ]
    rows += [
        ("per job: the engine alone (same files)", _ms(refs.engine_busy / jobs)),
        ("per job: bare PyMuPDF loop (same files)", _ms(refs.bare_busy / jobs)),
        (
            "events published per round",
            ", ".join(f"{c / n:.0f} {k}" for k, c in sorted(events.items())),
        ),
    ]
    _table(rows)
    cpu: Counter[str] = Counter()
    for r in v.runs:
        cpu.update(r.cpu_s)
    say(
        f"   CPU seconds per round ({WORKERS} cores x {wall:.2f} s"
        f" = {WORKERS * wall:.2f} available)"
    )
    _table(
        [(k, f"{c / n:.2f} s") for k, c in cpu.most_common()]
        + [
            ("(reference) the engine alone, same files", f"{refs.engine_cpu:.2f} s"),
            ("(reference) bare PyMuPDF loop, same files", f"{refs.bare_cpu:.2f} s"),
        ]
    )
    mem = v.memory
    say("   memory")
    _table(
        [
            ("extract handler peak RSS (VmHWM)", _mb(mem.root_hwm_kb)),
            ("largest worker process peak RSS (sampled VmHWM)", _mb(mem.child_hwm_kb)),
            ("extract process tree peak RSS (sampled sum)", _mb(mem.tree_rss_kb)),
            ("ingress peak RSS (VmHWM)", _mb(v.ingress_hwm_kb)),
        ]
    )


# --- entry point --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    files: list[str]
    """In submission order: longest first, copies side by side (the same for the bare loop)."""
    page_counts: dict[str, int]
    blobs: dict[str, bytes]

    @property
    def pages(self) -> int:
        return sum(self.page_counts[p] for p in self.files)


def load_corpus(copies: int) -> Corpus:
    sources = [str(CORPUS / name) for name in PIPELINE_FILES]
    page_counts = {p: bare_extract(p)[0] for p in sources}
    ordered = sorted(sources, key=page_counts.__getitem__, reverse=True)
    return Corpus(
        files=[p for p in ordered for _ in range(copies)],
        page_counts=page_counts,
        blobs={p: Path(p).read_bytes() for p in sources},
    )


@dataclass(frozen=True)
class Services:
    work: Path
    amqp_url: str
    s3: MotoServer
    pool: Pool
    """The bare loop's processes."""


@contextlib.contextmanager
def services(name: str) -> Iterator[Services]:
    """A temporary folder, a RabbitMQ vhost, moto's S3 server and the bare loop's pool."""
    load = load_average()
    with (
        tempfile.TemporaryDirectory(prefix="pdfrelay-bench-") as tmp,
        rabbit_vhost() as amqp_url,
        moto_server(Path(tmp)) as s3,
        bare_pool(WORKERS) as pool,
    ):
        say(
            f"pdfrelay {name} benchmark: {os.cpu_count()} CPUs, load average {load[0]:.2f} at"
            f" start; moto S3 at {s3.endpoint}, a RabbitMQ vhost of its own"
        )
        yield Services(Path(tmp), amqp_url, s3, pool)


async def _run(args: argparse.Namespace, corpus: Corpus) -> int:
    started = time.perf_counter()
    load = load_average()
    with services("core") as svc:
        work, amqp_url, s3, pool = svc.work, svc.amqp_url, svc.s3, svc.pool
        if not args.skip_ingress:
            progress("ingress: starting it, then 100 uploads")
            ingress = await bench_ingress(amqp_url, s3.endpoint, s3.proc.pid, work)
            print_ingress(ingress)
        say("")
        progress("pipeline: starting the handlers")
        variants = [Variant("pdfrelay run extract (as deployed)", args.rounds, args.budget_s)]
        if not args.skip_what_if:
            variants.append(
                Variant(
                    "what-if: workers skip re-running the CLI",
                    args.rounds,
                    args.budget_s,
                    NO_REIMPORT_EXTRACT,
                )
            )
        figures = await bench_pipeline(
            amqp_url, s3.endpoint, s3.proc.pid, work, pool, corpus, variants
        )
        ratio, cpu_ratio = print_pipeline(figures, corpus.files, corpus.pages)
        verdict = "meets" if ratio >= TARGET_RATIO else "is BELOW"
        end_load = load_average()
        say(
            f"\n   pipeline/bare = {ratio:.2f} in pages/s as deployed ({cpu_ratio:.2f} in pages"
            f" per CPU second), which {verdict} the target of {TARGET_RATIO}."
        )
        say(
            f"   The core benchmark took {time.perf_counter() - started:.0f} s;"
            f" load average {load[0]:.2f} at the start, {end_load[0]:.2f} at the end."
        )
        if max(load[0], end_load[0]) > (os.cpu_count() or 1):
            say(
                "   NOTE: other work kept the machine busy; pages/s are noisy, pages per CPU"
                " second much less so."
            )
    return 0


def main(argv: Sequence[str] = ()) -> int:
    """Run the core benchmark and print its figures; `argv` as on the command line."""
    parser = argparse.ArgumentParser(prog="python -m tests.perf.bench_core", description=__doc__)
    parser.add_argument("--copies", type=int, default=2, help="each corpus PDF per round")
    parser.add_argument("--rounds", type=int, default=3, help="pipeline rounds per variant")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=60.0,
        help="time per variant; fewer rounds (at least one) when they are slower",
    )
    parser.add_argument("--skip-ingress", action="store_true")
    parser.add_argument("--skip-what-if", action="store_true")
    args = parser.parse_args(argv)
    return asyncio.run(_run(args, load_corpus(args.copies)))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
