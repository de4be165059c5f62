"""pdfrelay side by side with the stack a Python user would build instead (issue 20 "Measure").

One run, three parties, alternating so that the machine's drift affects all alike:

- **bare**: the bare two-process PyMuPDF loop (`page.get_text()` on every page, `Pool(2)`);
- **pdfrelay**: `pdfrelay run ingress`, `pdfrelay run extract` and `pdfrelay run webhooks` with
  default settings, their own RabbitMQ vhost and S3 server; jobs with outputs `["text"]` and
  `force_refresh` (the cache answers none); a job is done when its terminal event arrives on the
  events exchange (an AMQP consumer of the benchmark: no polling of the API, no S3 reads);
- **peer**: tests/perf/peer_celery.py — an aiohttp ingress that stores the upload in S3 and
  enqueues a Celery 5 task (publisher confirms), a Celery worker (prefork, `--concurrency 2`,
  `acks_late`, prefetch 1) that downloads, runs the same `get_text()` per page and stores the text
  in S3; own vhost, own S3 server. Done = seen by polling `ListObjectsV2` on its S3 every 0.1 s.

Both S3 servers are the product's (moto's S3 app, `infra/s3server.py`) wrapped in a request
counter (`python -m infra.s3server --count`, `GET /__counts__`). Broker publishes are counted with
RabbitMQ's firehose tracer (`rabbitmqctl trace_on -p VHOST`, core RabbitMQ, no management
plugin: every publish in the vhost is copied to `amq.rabbitmq.trace` as `publish.<exchange>`),
turned on for the per-job counts only. Broker CPU is the beam.smp process's, which serves every
vhost of the shared broker: it includes other work on the machine.

Scenarios: (1) 7 large manuals submitted one right after another (and again with small files
first): pages/s ÷ the bare loop's, CPU seconds by party; (2) a burst of concurrent uploads of one
manual: p50/p99 time to the 202, time until all are done ÷ the bare loop over the same documents,
CPU of the front processes, peak RSS (sampled sum over the service's processes); (3) S3 requests
and broker publishes per job by kind. `python -m tests.perf peer [--quick] [--out FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import aio_pika
import aiohttp
import boto3  # type: ignore[import-untyped]
import pymupdf
from aiohttp import web

from infra.s3server import COUNTS_PATH
from shared.adapters.storage import THREADS as S3_CLIENT_THREADS
from shared.adapters.storage import Storage
from shared.adapters.topology import topology_for
from shared.settings import Settings
from tests.perf.bench_core import (
    CORPUS,
    WORKERS,
    BareRun,
    CpuMeter,
    bare_pool,
    percentile,
    progress,
    run_bare,
    say,
    settings_env,
)
from tests.perf.bench_throughput import concatenate
from tests.perf.harness import (
    Handler,
    _wait_for_port,
    cpu_seconds,
    find_pid_by_comm,
    free_port,
    http_session,
    process_tree,
    rabbit_vhost,
    run_handler,
    status_kb,
    stop_process,
    wait_consumers,
    wait_ready,
)
from tests.perf.peer_celery import POLL_S, QUEUE
from tests.unit.pdfgen import text_pdf

REAL_MANUALS = (
    "en-beamer-userguide.pdf",
    "en-metapost-manual.pdf",
    "de-texlive-anleitung.pdf",
    "ru-texlive-guide.pdf",
)
"""The corpus's only multi-page PDFs with a text layer (234, 114, 101 and 46 pages)."""
JOINED = {
    "joined-all-four.pdf": REAL_MANUALS,
    "joined-beamer-metapost-de.pdf": REAL_MANUALS[:3],
    "joined-beamer-metapost.pdf": REAL_MANUALS[:2],
}
"""The corpus has 4 real manuals; 3 more of them joined make the 7 (two above the fan-out
threshold of 400 pages, as in the issue's mix)."""
BURST_FILE = "en-beamer-userguide.pdf"
"""The corpus's closest to the issue's 1.3 MB, 311-page manual (234 pages, 2.2 MB)."""
FANNED = "joined-all-four.pdf"
JOB_OPTIONS = {"outputs": ["text"], "force_refresh": True}
SMALL_COUNT = 8
TIMEOUT_S = 900.0
_NS = re.compile(r"^bench[0-9a-f]{8}\.")


def bare_text(path: str) -> tuple[int, float, float]:
    """The bare loop's work on one file: `get_text()` on every page. (pages, wall s, CPU s)."""
    started, cpu = time.perf_counter(), time.process_time()
    with pymupdf.open(path, filetype="pdf") as doc:
        pages = 0
        for page in doc:
            page.get_text()
            pages += 1
    return pages, time.perf_counter() - started, time.process_time() - cpu


# --- services -----------------------------------------------------------------------------------


@dataclass
class CountingS3:
    endpoint: str
    proc: subprocess.Popen[bytes]

    async def counts(self, session: aiohttp.ClientSession) -> Counter[str]:
        async with session.get(f"{self.endpoint}{COUNTS_PATH}") as resp:
            return Counter((await resp.json())["by_kind"])


@contextlib.contextmanager
def counting_s3(log_dir: Path, label: str) -> Iterator[CountingS3]:
    port = free_port()
    with open(log_dir / f"s3-{label}.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infra.s3server", "-H", "127.0.0.1", "-p", str(port), "--count"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, proc, time.monotonic() + 30)
        yield CountingS3(f"http://127.0.0.1:{port}", proc)
    finally:
        stop_process(proc, grace_s=5)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=120)


class Publishes:
    """Broker publishes in one vhost by exchange, from the firehose (only while `tracing`)."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.vhost = unquote(urlsplit(amqp_url).path[1:])
        self.counts: Counter[str] = Counter()

    @contextlib.asynccontextmanager
    async def tracing(self) -> AsyncIterator[Counter[str]]:
        await asyncio.to_thread(_rabbitmqctl, "trace_on", "-p", self.vhost)
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind("amq.rabbitmq.trace", routing_key="publish.#")

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                exchange = (message.routing_key or "").removeprefix("publish.")
                if not exchange:
                    keys = message.headers.get("routing_keys") or [b"?"]
                    key = keys[0] if isinstance(keys, list) and keys else "?"
                    key = key.decode() if isinstance(key, bytes) else str(key)
                    exchange = f"(default) → {key}"
                self.counts[_NS.sub("", exchange)] += 1

            await queue.consume(on_message, no_ack=True)
            yield self.counts
        finally:
            await connection.close()
            await asyncio.to_thread(_rabbitmqctl, "trace_off", "-p", self.vhost)


PSS_EVERY = 10
"""`PeakRss` reads Pss at every 10th sample (once a second), VmRSS at every one."""


class PeakRss:
    """Samples the summed VmRSS of process trees in a thread; `peak_kb` is the largest sum.

    `parts_kb`: each process's own peak VmRSS over the run, named by `names` (a root's name,
    its descendants `<name> child N` in the order first seen); the parts need not peak together.
    `peak_pss_kb`: the largest sum of Pss (/proc/PID/smaps_rollup), which counts a page shared by
    n processes (the engine a forkserver's workers inherit) 1/n in each, not n times; sampled
    every `PSS_EVERY`th time only: the kernel walks every page of a process to tell it, ~25 ms
    of CPU per sample of pdfrelay's processes, which at 10 samples a second took a quarter of a
    core from the services it measured (VmRSS alone: ~1 ms).
    """

    def __init__(
        self, roots: Sequence[int], interval_s: float = 0.1, names: Sequence[str] = ()
    ) -> None:
        self.roots = list(roots)
        self.names = dict(zip(self.roots, names, strict=False))
        self.interval_s = interval_s
        self.peak_kb = 0
        self.peak_pss_kb = 0
        self.parts_kb: dict[str, int] = {}
        self._labels: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)

    def _label(self, root: int, pid: int) -> str:
        if pid not in self._labels:
            name = self.names.get(root, str(root))
            kids = sum(1 for v in self._labels.values() if v.startswith(f"{name} child"))
            self._labels[pid] = name if pid == root else f"{name} child {kids + 1}"
        return self._labels[pid]

    def sample(self, pss: bool = True) -> int:
        total = pss_kb = 0
        for r in self.roots:
            for p in process_tree(r):
                kb = status_kb(p, "VmRSS") or 0
                total += kb
                if pss:
                    pss_kb += _pss_kb(p)
                label = self._label(r, p)
                self.parts_kb[label] = max(self.parts_kb.get(label, 0), kb)
        self.peak_pss_kb = max(self.peak_pss_kb, pss_kb)
        return total

    def _loop(self) -> None:
        count = 0
        while not self._stop.wait(self.interval_s):
            count += 1
            self.peak_kb = max(self.peak_kb, self.sample(pss=count % PSS_EVERY == 0))

    def __enter__(self) -> PeakRss:
        self.peak_kb = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


SMALL_PROCESS_KB = 64 * 1024
"""Processes below this peak are summed up in the detail line, not named one by one."""


def _pss_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class Done:
    at: float
    """time.perf_counter() when the benchmark saw the job end."""
    pages: int
    ok: bool


class Party(Protocol):
    label: str
    s3: CountingS3
    publishes: Publishes
    polls: int

    async def submit(
        self, name: str, data: bytes, webhook_url: str | None = None
    ) -> tuple[int, str]: ...

    async def wait(
        self, job_ids: Sequence[str], timeout_s: float = TIMEOUT_S
    ) -> dict[str, Done]: ...

    def meter(self) -> CpuMeter: ...

    def service_roots(self) -> list[int]: ...

    def service_names(self) -> list[str]:
        """Names of `service_roots`, for the per-process memory line."""
        ...

    def front(self) -> tuple[str, str]:
        """The CPU parties shown for the burst: (ingress, handler)."""
        ...


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return {"job_id": text[:200]}


def _form(data: bytes, name: str, fields: Mapping[str, str]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/pdf")
    for key, value in fields.items():
        ct = "application/json" if key == "options" else "text/plain"
        form.add_field(key, value, content_type=ct)
    return form


@dataclass
class PdfRelay:
    label: str
    base_url: str
    session: aiohttp.ClientSession
    s3: CountingS3
    publishes: Publishes
    ingress: Handler
    extract: Handler
    webhooks: Handler
    done: dict[str, Done] = field(default_factory=dict)
    polls: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def submit(
        self, name: str, data: bytes, webhook_url: str | None = None
    ) -> tuple[int, str]:
        fields = {"options": json.dumps(JOB_OPTIONS)}
        if webhook_url:
            fields["webhook_url"] = webhook_url
        async with self.session.post(
            f"{self.base_url}/v1/jobs", data=_form(data, name, fields)
        ) as resp:
            body = _json(await resp.text())
            return resp.status, str(body.get("job_id", body)) if isinstance(body, dict) else ""

    def on_event(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        view = json.loads(message.body)
        job_id = str(view.get("job_id") or message.headers.get("job_id"))
        if job_id in self.done:
            return  # a redelivered announcement
        result = view.get("result") or {}
        ok = message.routing_key == "job.completed"
        self.done[job_id] = Done(time.perf_counter(), int(result.get("pages_extracted") or 0), ok)
        self._changed.set()

    async def wait(self, job_ids: Sequence[str], timeout_s: float = TIMEOUT_S) -> dict[str, Done]:
        async with asyncio.timeout(timeout_s):
            while True:
                self._changed.clear()
                if all(j in self.done for j in job_ids):
                    return {j: self.done[j] for j in job_ids}
                await self._changed.wait()

    def meter(self) -> CpuMeter:
        return CpuMeter(
            {
                "workers": (self.extract.pid, True),
                "extract handler": (self.extract.pid, False),
                "ingress": (self.ingress.pid, False),
                "webhooks": (self.webhooks.pid, False),
                "S3 server": (self.s3.proc.pid, False),
                "broker": (find_pid_by_comm("beam.smp"), False),
            }
        )

    def service_roots(self) -> list[int]:
        return [self.ingress.pid, self.extract.pid, self.webhooks.pid]

    def service_names(self) -> list[str]:
        return ["ingress", "extract", "webhooks"]

    def front(self) -> tuple[str, str]:
        return "ingress", "extract handler"


@contextlib.asynccontextmanager
async def pdfrelay_party(
    amqp_url: str,
    s3: CountingS3,
    work: Path,
    session: aiohttp.ClientSession,
    overrides: Mapping[str, str] | None = None,
) -> AsyncIterator[PdfRelay]:
    port = free_port()
    settings = settings_env(amqp_url, s3.endpoint, work / "pdfrelay-spool", port)
    del settings["PDFRELAY_MAX_QUEUE_LENGTH"]  # defaults, as deployed (the default is ample)
    settings.update(
        {
            "PDFRELAY_WEBHOOK_SECRET": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "PDFRELAY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            **(overrides or {}),
        }
    )
    topology = topology_for(Settings(namespace=settings["PDFRELAY_NAMESPACE"]))
    base_url = f"http://127.0.0.1:{port}"
    with (
        run_handler("ingress", settings, work) as ingress,
        run_handler("extract", settings, work) as extract,
        run_handler("webhooks", settings, work) as webhooks,
    ):
        await wait_ready(base_url, ingress)
        await wait_consumers(amqp_url, topology.extract, extract)
        party = PdfRelay(
            "pdfrelay", base_url, session, s3, Publishes(amqp_url), ingress, extract, webhooks
        )
        # Robust: a broker restart (the broker is shared) restores the queue and the consumer.
        connection = await aio_pika.connect_robust(amqp_url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            for key in ("job.completed", "job.failed", "job.cancelled"):
                await queue.bind(topology.events, routing_key=key)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                party.on_event(message)

            await queue.consume(on_message, no_ack=True)
            yield party
        finally:
            await connection.close()
        for h in (ingress, extract, webhooks):
            h.check_alive()


@dataclass
class Peer:
    label: str
    base_url: str
    session: aiohttp.ClientSession
    s3: CountingS3
    publishes: Publishes
    bucket: str
    ingress: Handler
    worker: Handler
    polls: int = 0
    done: dict[str, Done] = field(default_factory=dict)
    _client: Any = None

    async def submit(
        self, name: str, data: bytes, webhook_url: str | None = None
    ) -> tuple[int, str]:
        fields = {"webhook_url": webhook_url} if webhook_url else {}
        async with self.session.post(f"{self.base_url}/jobs", data=_form(data, name, fields)) as r:
            body = _json(await r.text())
            return r.status, str(body.get("job_id", body)) if isinstance(body, dict) else ""

    def _list(self) -> list[str]:
        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.s3.endpoint,
                aws_access_key_id="bench",
                aws_secret_access_key="bench",
                region_name="us-east-1",
            )
        keys: list[str] = []
        token: dict[str, str] = {}
        while True:
            self.polls += 1
            page = self._client.list_objects_v2(Bucket=self.bucket, Prefix="results/", **token)
            keys.extend(o["Key"] for o in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return keys
            token = {"ContinuationToken": page["NextContinuationToken"]}

    async def wait(self, job_ids: Sequence[str], timeout_s: float = TIMEOUT_S) -> dict[str, Done]:
        async with asyncio.timeout(timeout_s):
            while not all(j in self.done for j in job_ids):
                keys = await asyncio.to_thread(self._list)
                now = time.perf_counter()
                for key in keys:
                    job_id, pages, _ = key.removeprefix("results/").split(".")
                    if job_id not in self.done:
                        self.done[job_id] = Done(now, int(pages), True)
                if not all(j in self.done for j in job_ids):
                    await asyncio.sleep(POLL_S)
        return {j: self.done[j] for j in job_ids}

    def meter(self) -> CpuMeter:
        return CpuMeter(
            {
                "workers": (self.worker.pid, True),
                "celery main": (self.worker.pid, False),
                "ingress": (self.ingress.pid, False),
                "S3 server": (self.s3.proc.pid, False),
                "broker": (find_pid_by_comm("beam.smp"), False),
            }
        )

    def service_roots(self) -> list[int]:
        return [self.ingress.pid, self.worker.pid]

    def service_names(self) -> list[str]:
        return ["ingress", "worker"]

    def front(self) -> tuple[str, str]:
        return "ingress", "celery main"


@contextlib.asynccontextmanager
async def peer_party(
    amqp_url: str, s3: CountingS3, work: Path, session: aiohttp.ClientSession
) -> AsyncIterator[Peer]:
    port = free_port()
    bucket = f"peer{uuid.uuid4().hex[:8]}"
    env = {
        "PEER_AMQP_URL": amqp_url,
        "PEER_S3_ENDPOINT": s3.endpoint,
        "PEER_BUCKET": bucket,
        "PEER_PORT": str(port),
    }
    module = [sys.executable, "-m", "tests.perf.peer_celery"]
    with (
        run_handler("peer-ingress", env, work, [*module, "ingress"]) as ingress,
        run_handler("peer-worker", env, work, [*module, "worker"]) as worker,
    ):
        base_url = f"http://127.0.0.1:{port}"
        await wait_ready(base_url, ingress)
        await wait_consumers(amqp_url, QUEUE, worker)
        yield Peer(
            "Celery peer", base_url, session, s3, Publishes(amqp_url), bucket, ingress, worker
        )
        ingress.check_alive()
        worker.check_alive()


# --- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    manuals: list[str]
    small: list[str]
    burst: str
    fanned: str
    pages: dict[str, int]
    blobs: dict[str, bytes]


def build_inputs(work: Path, quick: bool) -> Inputs:
    joined = []
    for name, parts in JOINED.items():
        path = work / name
        concatenate([CORPUS / p for p in parts], path)
        joined.append(str(path))
    real = [str(CORPUS / m) for m in REAL_MANUALS]
    manuals = real if quick else [*joined, *real]
    small_dir = work / "small"
    small_dir.mkdir()
    small = [str(text_pdf(small_dir / f"small-{i}.pdf", pages=2)) for i in range(SMALL_COUNT)]
    files = {*manuals, *small, str(CORPUS / BURST_FILE), str(work / FANNED)}
    pages: dict[str, int] = {}
    for name in files:
        with pymupdf.open(name) as doc:
            pages[name] = int(doc.page_count)
    return Inputs(
        manuals=sorted(manuals, key=pages.__getitem__, reverse=True),
        small=small,
        burst=str(CORPUS / BURST_FILE),
        fanned=str(work / FANNED),
        pages=pages,
        blobs={p: Path(p).read_bytes() for p in files},
    )


# --- scenarios ----------------------------------------------------------------------------------


@dataclass
class BatchRun:
    party: str
    pages: int
    wall_s: float
    cpu_s: dict[str, float]
    failures: list[str]

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.wall_s


def _workers_only(cpu: dict[str, float], own: str) -> dict[str, float]:
    """The worker tree's time without its root process's own; the benchmark client dropped."""
    out = {k: v for k, v in cpu.items() if not k.startswith("bench client")}
    out["workers"] -= out[own]
    return out


def _own_key(party: Party) -> str:
    return party.front()[1]


def _bare_batch(pool: Pool, files: Sequence[str]) -> BatchRun:
    run: BareRun = run_bare(pool, files, bare_text)
    return BatchRun("bare", run.pages, run.wall_s, {"workers": run.cpu_s}, [])


def _check(done: Mapping[str, Done], expected: Mapping[str, int]) -> list[str]:
    failures = []
    for job_id, want in expected.items():
        d = done[job_id]
        if not d.ok or d.pages != want:
            failures.append(f"{job_id}: ok={d.ok} pages {d.pages}/{want}")
    return failures


async def batch(party: Party, files: Sequence[str], inputs: Inputs) -> BatchRun:
    """Submit `files` one right after another; wait until every job has ended."""
    meter = party.meter()
    meter.start()
    started = time.perf_counter()
    expected: dict[str, int] = {}
    for path in files:
        status, job_id = await party.submit(Path(path).name, inputs.blobs[path])
        if status != 202:
            raise RuntimeError(f"{party.label}: upload of {path} answered {status}: {job_id}")
        expected[job_id] = inputs.pages[path]
    done = await party.wait(list(expected))
    wall = max(d.at for d in done.values()) - started
    cpu = _workers_only(meter.stop(), _own_key(party))
    pages = sum(d.pages for d in done.values() if d.ok)
    return BatchRun(party.label, pages, wall, cpu, _check(done, expected))


@dataclass
class BurstRun:
    party: str
    uploads: int
    statuses: dict[int, int]
    answer_s: list[float]
    all_done_s: float
    cpu_s: dict[str, float]
    peak_rss_kb: int
    s3_rss_kb: int
    failures: list[str]
    rss_parts_kb: dict[str, int] = field(default_factory=dict)
    peak_pss_kb: int = 0


async def burst(party: Party, inputs: Inputs, n: int) -> BurstRun:
    data = inputs.blobs[inputs.burst]
    gate = asyncio.Event()
    answers: list[float] = []
    statuses: Counter[int] = Counter()

    async def one(i: int) -> str:
        await gate.wait()
        t0 = time.perf_counter()
        status, job_id = await party.submit(f"burst-{i}.pdf", data)
        answers.append(time.perf_counter() - t0)
        statuses[status] += 1
        return job_id if status == 202 else ""

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await asyncio.sleep(0)
    meter = party.meter()
    with (
        PeakRss(party.service_roots(), names=party.service_names()) as rss,
        PeakRss([party.s3.proc.pid]) as s3_rss,
    ):
        meter.start()
        started = time.perf_counter()
        gate.set()
        ids = [j for j in await asyncio.gather(*tasks) if j]
        done = await party.wait(ids)
        all_done = max(d.at for d in done.values()) - started
        cpu = _workers_only(meter.stop(), _own_key(party))
    failures = _check(done, dict.fromkeys(ids, inputs.pages[inputs.burst]))
    if statuses[202] != n:
        failures.append(f"answers {dict(statuses)}")
    return BurstRun(
        party.label,
        n,
        dict(statuses),
        answers,
        all_done,
        cpu,
        rss.peak_kb,
        s3_rss.peak_kb,
        failures,
        rss.parts_kb,
        rss.peak_pss_kb,
    )


@dataclass
class S3Alone:
    """`n` concurrent PUTs of the burst's document to an S3 server of their own, from pdfrelay's
    S3 client with `threads` threads: no ingress, no broker, no worker."""

    threads: int
    answer_s: list[float]
    cpu_s: float
    """The S3 server's."""


async def _concurrent_puts(storage: Storage, data: bytes, n: int) -> list[float]:
    """`n` PUTs of `data` at once: the seconds from the start until each was stored."""
    started = time.perf_counter()

    async def put(i: int) -> float:
        await storage.put_bytes(f"upload-{i}.pdf", data, "application/pdf")
        return time.perf_counter() - started

    return list(await asyncio.gather(*(put(i) for i in range(n))))


async def s3_alone(work: Path, data: bytes, n: int) -> list[S3Alone]:
    """The S3 server on its own taking the burst's uploads: 16 at a time (as the ingress sends
    them) and all at once. What the burst's time to `202` cannot go below."""
    runs = []
    with counting_s3(work, "alone") as s3:
        for threads in sorted({min(S3_CLIENT_THREADS, n), n}):
            storage = Storage(Settings(s3_bucket=f"alone{threads}"), s3.endpoint, threads=threads)
            try:
                await storage.ensure_bucket()
                before = cpu_seconds(s3.proc.pid)
                answers = await _concurrent_puts(storage, data, n)
                runs.append(S3Alone(threads, answers, cpu_seconds(s3.proc.pid) - before))
            finally:
                storage.close()
    return runs


class Receiver:
    """A loopback webhook receiver: records the job id of every POST /hook."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._changed = asyncio.Event()
        self.url = ""

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        data = body.get("data", body) if isinstance(body, dict) else {}
        self.seen.add(str(data.get("job_id")))
        self._changed.set()
        return web.Response(status=204)

    async def wait(self, job_id: str, timeout_s: float = 60.0) -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                self._changed.clear()
                if job_id in self.seen:
                    return
                await self._changed.wait()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Receiver]:
        app = web.Application()
        app.add_routes([web.post("/hook", self.hook)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        self.url = f"http://127.0.0.1:{port}/hook"
        try:
            yield self
        finally:
            await runner.cleanup()


@dataclass
class PerJob:
    party: str
    kind: str
    jobs: int
    s3: dict[str, float]
    publishes: dict[str, float]

    @property
    def s3_total(self) -> float:
        return sum(self.s3.values())

    @property
    def publishes_total(self) -> float:
        return sum(self.publishes.values())


async def _quiet(party: Party, session: aiohttp.ClientSession, counts: Counter[str]) -> None:
    """Wait until neither S3 requests nor publishes change for 1 s (trailing work settles)."""
    deadline = time.monotonic() + 30
    last = (await party.s3.counts(session), Counter(counts))
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = (await party.s3.counts(session), Counter(counts))
        if now == last:
            return
        last = now
    say(f"   NOTE: {party.label}'s S3 requests or publishes did not settle within 30 s")


async def per_job(
    party: Party,
    session: aiohttp.ClientSession,
    counts: Counter[str],
    kind: str,
    path: str,
    inputs: Inputs,
    reps: int,
    receiver: Receiver | None = None,
) -> PerJob:
    """S3 requests and publishes of `reps` jobs of one kind, one after another, per job."""
    await _quiet(party, session, counts)
    s3_before, pub_before, polls_before = (
        await party.s3.counts(session),
        Counter(counts),
        party.polls,
    )
    for i in range(reps):
        status, job_id = await party.submit(
            f"{kind}-{i}.pdf", inputs.blobs[path], receiver.url if receiver else None
        )
        if status != 202:
            raise RuntimeError(f"{party.label}: {kind} upload answered {status}: {job_id}")
        await party.wait([job_id], 300)
        if receiver is not None:
            await receiver.wait(job_id)
    await _quiet(party, session, counts)
    s3 = await party.s3.counts(session) - s3_before
    # The benchmark's own completion polls (the peer's ListObjects) are not the job's.
    polls = party.polls - polls_before
    if polls:
        s3["GET bucket?list-type"] -= polls
    pub = Counter(counts) - pub_before
    return PerJob(
        party.label,
        kind,
        reps,
        {k: v / reps for k, v in sorted(s3.items()) if v > 0},
        {k: v / reps for k, v in sorted(pub.items()) if v > 0},
    )


IDLE_S = 5.0


async def idle(
    party: Party, session: aiohttp.ClientSession, counts: Counter[str]
) -> dict[str, dict[str, float]]:
    """S3 requests and publishes per second of a party with no job (heartbeats, pollers)."""
    await _quiet(party, session, counts)
    s3_before, pub_before = await party.s3.counts(session), Counter(counts)
    await asyncio.sleep(IDLE_S)
    s3 = await party.s3.counts(session) - s3_before
    pub = Counter(counts) - pub_before
    return {
        "s3": {k: v / IDLE_S for k, v in s3.items()},
        "publishes": {k: v / IDLE_S for k, v in pub.items()},
    }


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Results:
    started: str
    command: str
    cpus: int | None
    uptime_before: str
    uptime_after: str = ""
    pages: dict[str, int] = field(default_factory=dict)
    manuals: dict[str, list[BatchRun]] = field(default_factory=dict)
    small_first: dict[str, list[BatchRun]] = field(default_factory=dict)
    burst: dict[str, list[BurstRun]] = field(default_factory=dict)
    """Per party, one burst per round."""
    bare_burst: list[BatchRun] = field(default_factory=list)
    """The bare loop over the burst's documents, one per round."""
    s3_alone: list[S3Alone] = field(default_factory=list)
    per_job: list[PerJob] = field(default_factory=list)
    idle: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """Per party, S3 requests and publishes per second while no job runs (background)."""
    manual_count: int = 0
    took_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    """Broker restarts seen (the broker is shared; its figures are then suspect)."""


@contextlib.contextmanager
def _broker_watch(results: Results, part: str) -> Iterator[None]:
    """Note when RabbitMQ's beam.smp changed (a restart by other work) while `part` ran."""
    before = find_pid_by_comm("beam.smp")
    yield
    if find_pid_by_comm("beam.smp") != before:
        results.notes.append(f"the broker restarted during {part}")
        say(f"   NOTE: the broker restarted during {part}")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


async def _warm(party: Party, inputs: Inputs) -> None:
    """A few small jobs first, untimed (worker processes start, clients connect)."""
    await batch(party, inputs.small[: WORKERS * 2], inputs)


def _rotated(parties: Sequence[Party], round_: int) -> list[Party | None]:
    """The parties of round `round_` in order, None for the bare loop: bare, pdfrelay, peer,
    then pdfrelay, peer, bare …, so that the machine's drift falls on all alike."""
    order: list[Party | None] = [None, *parties]
    shift = round_ % len(order)
    return order[shift:] + order[:shift]


async def measure(args: argparse.Namespace, results: Results) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="pdfrelay-bench-peer-") as tmp,
        rabbit_vhost("pdfrelay-bench-peer") as relay_amqp,
        rabbit_vhost("pdfrelay-bench-celery") as peer_amqp,
        counting_s3(Path(tmp), "pdfrelay") as relay_s3,
        counting_s3(Path(tmp), "peer") as peer_s3,
        bare_pool(WORKERS) as pool,
    ):
        work = Path(tmp)
        inputs = build_inputs(work, args.quick)
        results.pages = {Path(p).name: n for p, n in inputs.pages.items()}
        results.manual_count = len(inputs.manuals)
        await asyncio.to_thread(pool.map, bare_text, inputs.small[: WORKERS * 2], 1)
        async with (
            http_session() as session,
            pdfrelay_party(relay_amqp, relay_s3, work, session, args.set) as relay,
            peer_party(peer_amqp, peer_s3, work, session) as peer,
        ):
            parties: list[Party] = [relay, peer]
            for party in parties:
                await _warm(party, inputs)
            small_first = [*inputs.small, *inputs.manuals]
            batches = "batch" in args.parts
            for scenario, files, store in (
                ("manuals", inputs.manuals, results.manuals),
                ("small files first", small_first, results.small_first),
            ):
                for r in range(args.rounds if batches else 0):
                    for who in _rotated(parties, r):
                        label = who.label if who else "bare"
                        progress(f"{scenario}: round {r + 1}/{args.rounds}, {label}")
                        with _broker_watch(results, f"{scenario} round {r + 1}, {label}"):
                            if who is None:
                                run = await asyncio.to_thread(_bare_batch, pool, files)
                            else:
                                run = await batch(who, files, inputs)
                        store.setdefault(label, []).append(run)
            for r in range(args.burst_rounds if "burst" in args.parts else 0):
                # One burst each per round, the order rotating as the batches' does: the
                # machine's speed drifts within a run, and a burst takes half a minute.
                for who in _rotated(parties, r):
                    label = who.label if who else "bare"
                    progress(f"burst of {args.burst}: round {r + 1}/{args.burst_rounds}, {label}")
                    if who is None:
                        results.bare_burst.append(
                            await asyncio.to_thread(_bare_batch, pool, [inputs.burst] * args.burst)
                        )
                        continue
                    with _broker_watch(results, f"burst round {r + 1}, {label}"):
                        burst_run = await burst(who, inputs, args.burst)
                    results.burst.setdefault(label, []).append(burst_run)
            if "burst" in args.parts:
                progress(f"the S3 server alone: {args.burst} concurrent PUTs")
                results.s3_alone = await s3_alone(work, inputs.blobs[inputs.burst], args.burst)
            if "counts" not in args.parts:
                return
            large = f"large ({inputs.pages[inputs.fanned]} pages)"
            async with Receiver().serving() as receiver:
                for party in parties:
                    async with party.publishes.tracing() as counts:
                        progress(f"per job: {party.label}, idle background")
                        results.idle[party.label] = await idle(party, session, counts)
                        for kind, path, hook in (
                            ("small", inputs.small[0], None),
                            ("small + webhook", inputs.small[1], receiver),
                            (large, inputs.fanned, None),
                        ):
                            progress(f"per job: {party.label}, {kind}")
                            results.per_job.append(
                                await per_job(
                                    party, session, counts, kind, path, inputs, args.reps, hook
                                )
                            )
            # The same document split into page ranges: by default its text is too quick to
            # split (PDFRELAY_FANOUT_MIN_CPU_S), so a pdfrelay of its own splits every one.
            split = {**args.set, "PDFRELAY_FANOUT_MIN_CPU_S": "0"}
            async with (
                pdfrelay_party(relay_amqp, relay_s3, work, session, split) as splitting,
                splitting.publishes.tracing() as counts,
            ):
                kind = f"{large}, split into ranges (`PDFRELAY_FANOUT_MIN_CPU_S=0`)"
                progress(f"per job: {splitting.label}, {kind}")
                results.per_job.append(
                    await per_job(
                        splitting, session, counts, kind, inputs.fanned, inputs, args.reps
                    )
                )


# --- report -------------------------------------------------------------------------------------


def _med(values: Sequence[float]) -> float:
    return statistics.median(values)


def _cpu_text(runs: Sequence[BatchRun] | Sequence[BurstRun]) -> str:
    keys = sorted(
        {k for r in runs for k in r.cpu_s}, key=lambda k: -_med([r.cpu_s.get(k, 0) for r in runs])
    )
    total = _med([sum(r.cpu_s.values()) for r in runs])
    parts = ", ".join(f"{k} {_med([r.cpu_s.get(k, 0.0) for r in runs]):.1f}" for k in keys)
    return f"**{total:.1f}** ({parts})"


PARTIES = ("pdfrelay", "Celery peer")
NONE = "-"


def _n(value: float) -> str:
    """A mean count: whole numbers as such, others to one decimal."""
    return f"{value:.0f}" if value == round(value) else f"{value:.1f}"


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _ratio(value: float, bare: float) -> str:
    return f"**{value / bare:.2f}x**"


def _batch_rows(title: str, store: dict[str, list[BatchRun]], count: int) -> list[list[str]]:
    bare = _med([r.pages_per_s for r in store["bare"]])
    pages = store["bare"][0].pages
    what = (
        f"{count} manuals" if title == "manuals" else f"{SMALL_COUNT} small files, then the manuals"
    )
    speed = [f"{bare:.0f} pages/s"]
    for p in PARTIES:
        pps = _med([r.pages_per_s for r in store[p]])
        speed.append(f"{pps:.0f} pages/s, {_ratio(pps, bare)}")
    return [
        [
            f"{what} ({pages:,} pages) at once: pages/s, / bare (median of {len(store['bare'])})",
            *speed,
        ],
        [
            f"CPU seconds for that batch ({title}), all parties",
            *(_cpu_text(store[k]) for k in ("bare", *PARTIES)),
        ],
    ]


def _median_burst(results: Results, party: str) -> tuple[BurstRun, list[float]]:
    """The party's round whose all-done ratio to that round's bare loop is the median, and the
    ratios of all rounds in order."""
    rounds = list(zip(results.burst[party], results.bare_burst, strict=False))
    ratios = [b.all_done_s / bare.wall_s for b, bare in rounds]
    return rounds[_middle(range(len(ratios)), ratios.__getitem__)][0], ratios


T = TypeVar("T")


def _middle(items: Sequence[T], key: Callable[[T], float]) -> T:
    """The item at the median of `key` (the upper one of an even count)."""
    return sorted(items, key=key)[len(items) // 2]


def _rounds_text(ratios: Sequence[float]) -> str:
    return f"**{_med(ratios):.2f}x** ({', '.join(f'{r:.2f}' for r in ratios)})"


def _burst_rows(results: Results) -> list[list[str]]:
    chosen = [_median_burst(results, p) for p in PARTIES]
    bursts = [b for b, _ in chosen]
    bare = _middle(results.bare_burst, lambda b: b.wall_s)
    pages = results.pages.get(BURST_FILE, 0)
    n = bursts[0].uploads
    rounds = len(results.bare_burst)
    return [
        [
            f"{n} concurrent uploads of {BURST_FILE} ({pages} pages): time to answer p50 / p99"
            f" (the round of the median all-done ratio, of {rounds})",
            NONE,
        ]
        + [f"{_s(percentile(b.answer_s, 50))} / {_s(percentile(b.answer_s, 99))}" for b in bursts],
        [
            "same burst: all done, / the same round's bare loop over the same documents"
            " (median; every round)",
            f"{bare.wall_s:.1f} s (median)",
        ]
        + [f"{b.all_done_s:.1f} s, {_rounds_text(ratios)}" for b, ratios in chosen],
        ["same burst: CPU of ingress / extract handler (peer: ingress / Celery main)", NONE]
        + [
            f"{b.cpu_s['ingress']:.1f} s / {b.cpu_s[own]:.1f} s"
            for b, own in zip(bursts, ("extract handler", "celery main"), strict=True)
        ],
        ["same burst: CPU seconds, all parties", f"**{bare.cpu_s['workers']:.1f}** (workers)"]
        + [_cpu_text([b]) for b in bursts],
        ["same burst: peak RSS of the service's processes (sampled sum; S3 server apart)", NONE]
        + [f"{b.peak_rss_kb / 1024:.0f} MiB (S3 {b.s3_rss_kb / 1024:.0f} MiB)" for b in bursts],
    ]


def _count_rows(results: Results) -> list[list[str]]:
    rows = []
    for kind in dict.fromkeys(j.kind for j in results.per_job):
        row = [f"per job, {kind}: S3 requests / broker publishes", NONE]
        for p in PARTIES:
            j = next((x for x in results.per_job if x.party == p and x.kind == kind), None)
            row.append(NONE if j is None else f"**{_n(j.s3_total)}** / **{_n(j.publishes_total)}**")
        rows.append(row)
    return rows


def _details(results: Results) -> list[str]:
    lines = []
    for label, rates in results.idle.items():
        shown = "; ".join(
            f"{what} " + (", ".join(f"{k} {v:g}/s" for k, v in r.items()) or "none")
            for what, r in rates.items()
        )
        lines.append(f"- {label}, no job for {IDLE_S:g} s (background, not subtracted): {shown}")
    for j in results.per_job:
        s3 = ", ".join(f"{k} {_n(v)}" for k, v in j.s3.items())
        pub = ", ".join(f"{k} {_n(v)}" for k, v in j.publishes.items())
        lines.append(f"- {j.party}, {j.kind} (mean of {j.jobs}): S3 {s3}; publishes {pub}")
    failures = [
        f"{r.party}: {f}"
        for store in (results.manuals, results.small_first)
        for runs in store.values()
        for r in runs
        for f in r.failures
    ] + [f"{b.party}: {f}" for runs in results.burst.values() for b in runs for f in b.failures]
    for b in (_median_burst(results, p)[0] for p in PARTIES if p in results.burst):
        big = {k: v for k, v in b.rss_parts_kb.items() if v >= SMALL_PROCESS_KB}
        small = [v for v in b.rss_parts_kb.values() if v < SMALL_PROCESS_KB]
        parts = ", ".join(f"{k} {v / 1024:.0f}" for k, v in big.items())
        if small:
            parts += f"; {len(small)} more, each at most {max(small) / 1024:.0f} (short-lived)"
        lines.append(
            f"- {b.party}, burst: peak Pss sum {b.peak_pss_kb / 1024:.0f} MiB;"
            f" peak VmRSS per process, MiB: {parts}"
        )
    lines.append(f"- failures: {'; '.join(failures[:10]) if failures else 'none'}")
    lines.append(f"- broker restarts: {'; '.join(results.notes) if results.notes else 'none'}")
    lines.append(
        f"- uptime before: `{results.uptime_before}`; after: `{results.uptime_after}`;"
        f" the run took {results.took_s:.0f} s"
    )
    return lines


def report(results: Results) -> str:
    """The Markdown table (and detail lines) of a run."""
    rows: list[list[str]] = []
    for title, store in (("manuals", results.manuals), ("small files first", results.small_first)):
        if store:
            rows += _batch_rows(title, store, results.manual_count)
    if results.bare_burst and all(p in results.burst for p in PARTIES):
        rows += _burst_rows(results)
    for alone in results.s3_alone:
        rows.append(
            [
                f"the S3 server alone: {len(alone.answer_s)} concurrent PUTs of the same document,"
                f" {alone.threads} at a time: p50 / p99 done; its CPU",
                f"{_s(percentile(alone.answer_s, 50))} / {_s(percentile(alone.answer_s, 99))};"
                f" {alone.cpu_s:.1f} s",
                NONE,
                NONE,
            ]
        )
    rows += _count_rows(results)
    lines = [
        "| same work, same run | bare 2-process loop | pdfrelay | Celery peer |",
        "|---|---|---|---|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        *_details(results),
    ]
    return "\n".join(lines)


def _jsonable(results: Results) -> dict[str, Any]:
    data = dataclasses.asdict(results)
    for j, raw in zip(results.per_job, data["per_job"], strict=True):
        raw["s3_total"], raw["publishes_total"] = j.s3_total, j.publishes_total
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Run the side-by-side benchmark; `argv` as on the command line."""
    parser = argparse.ArgumentParser(prog="python -m tests.perf peer", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--rounds", type=int, help="rounds of scenario 1 (default 3; quick 1)")
    parser.add_argument("--burst", type=int, help="concurrent uploads (default 100; quick 10)")
    parser.add_argument("--burst-rounds", type=int, help="rounds of the burst (default 3; quick 1)")
    parser.add_argument(
        "--reps", type=int, help="jobs per kind for the counts (default 3; quick 1)"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PDFRELAY_NAME=VALUE",
        help="a setting of pdfrelay's handlers for a what-if run (repeatable)",
    )
    parser.add_argument(
        "--parts",
        default="batch,burst,counts",
        type=lambda v: set(v.split(",")),
        help="which scenarios: batch (1), burst (2), counts (3); default all",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.burst = args.burst or (10 if args.quick else 100)
    args.burst_rounds = args.burst_rounds or (1 if args.quick else 3)
    args.reps = args.reps or (1 if args.quick else 3)
    args.set = dict(item.split("=", 1) for item in args.set)
    started = time.perf_counter()
    results = Results(
        started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        command="python -m tests.perf peer " + " ".join(sys.argv[1:] if argv is None else argv),
        cpus=os.cpu_count(),
        uptime_before=_uptime(),
    )
    say(f"pdfrelay vs Celery peer, {results.cpus} CPUs; {results.uptime_before}")
    try:
        asyncio.run(measure(args, results))
    finally:
        # What was measured is kept even when a later part fails.
        results.uptime_after = _uptime()
        results.took_s = time.perf_counter() - started
        if args.out is not None:
            args.out.write_text(json.dumps(_jsonable(results), indent=2, default=str))
            say(f"\nresults written to {args.out}")
    say("\n" + report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
