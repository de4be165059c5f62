"""Extraction worker processes, reused for a bounded number of documents, with a time limit and
a memory limit per document.

PyMuPDF is CPU-bound and not thread-safe, and a hostile PDF can crash or exhaust the process that
opens it. Documents therefore run in worker processes forked from a forkserver that has PyMuPDF
preloaded, at most `workers` at once. A fresh process costs about 140 ms of CPU, so a worker
that answered normally takes the next document too, up to `max_jobs` documents; a worker is
retired (and a fresh one started for the next document) after `max_jobs`, and at once after a
crash, a timeout, a cancel or any engine error, so a document that upset MuPDF never shares a
process with the next one. The memory limit (RLIMIT_AS) is set once per process, and MuPDF's
caches are shrunk to a tenth after every document (`STORE_SHRINK_PERCENT`) — but a page range
of a fanned-out document leaves the document open, with its fonts and resources in the cache,
for the worker's next range of the same file (`HeldDocument`), until another document comes or
the worker is idle for `HOLD_S`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path

import pymupdf

from shared.adapters.digests import file_digest
from shared.errors import ErrorCode, JobCancelled, PermanentError, WorkerCrashed
from shared.extraction import (
    ArtifactFile,
    ExtractLimits,
    HeldDocument,
    extract_document,
    page_count_above,
)
from shared.extraction.preview import render_page
from shared.models import ExtractOptions
from shared.settings import Settings

RESULT_FILE = "result.json"
PROGRESS_INTERVAL_S = 0.25
EXIT_GRACE_S = 2.0
DEFAULT_MAX_JOBS = 50
HOLD_S = 1.0
"""An idle worker closes the document it keeps open for a next page range after this long."""
STORE_SHRINK_PERCENT = 90
"""After every document MuPDF's object store is shrunk by this much, the least recently used
first: down to a tenth, so a document's objects and images do not stay, while what the next
document needs again (the standard fonts, colour spaces: just used, so kept) is not built anew.
Emptying it (100) cost 2.7 ms of CPU per document to load those again, 4x the text of a two-page
letter (0.7 ms). An idle worker empties it (`_forget`)."""

ProgressCallback = Callable[[int, int], None]


@dataclass
class _Tracked:
    """A job `cancel` can reach: flagged before its worker starts, killed while it runs."""

    cancelled: bool = False
    procs: set[multiprocessing.process.BaseProcess] = field(default_factory=set)
    """Its running workers: several when ranges of one job run side by side (fan-out)."""
    holders: int = 0


@dataclass(frozen=True)
class WorkOutput:
    result_path: str
    """The ExtractionResult as JSON, written by the worker."""
    page_count: int
    pages_extracted: int
    warnings: tuple[str, ...]
    artifacts: tuple[ArtifactFile, ...]
    digests: dict[str, tuple[int, str]] = field(default_factory=dict)
    """(size, sha256 hex) by path of every artifact, computed by the worker."""
    split: bool = False
    """Nothing was extracted: the document has more pages (`page_count`) than the request's
    `split_above`, and is to be split into page ranges (shared/jobs/fanout.py)."""

    @classmethod
    def splitting(cls, page_count: int) -> WorkOutput:
        return cls("", page_count, 0, (), (), split=True)


def extract_limits(settings: Settings, *, range_part: bool = False) -> ExtractLimits:
    """The bounds of one document's extraction, as the settings give them (a page range of a
    fanned-out document: `range_part`)."""
    return ExtractLimits(
        max_pages=settings.max_pages,
        max_file_bytes=settings.max_file_bytes,
        max_inflated_bytes=settings.max_inflated_bytes,
        tessdata=settings.tessdata_dir,
        range_part=range_part,
        llm_dpi=settings.llm_dpi,
    )


@dataclass(frozen=True)
class WorkRequest:
    pdf_path: str
    out_dir: str
    options: ExtractOptions
    limits: ExtractLimits
    job_id: str | None = None  # written into the result (`run` fills it from its `job_id`)
    preview: tuple[int, int] | None = None
    """(page number, width): render that page as a PNG instead (shared/extraction/preview.py);
    the output's `result_path` is the PNG."""
    split_above: int | None = None
    """A whole document that may be fanned out: when it has more pages than this, the worker
    answers with its page count only (`WorkOutput.split`). It opens the document anyway, so the
    count costs nothing (no counting process of its own), and is exact; a document it keeps is
    extracted from the same open file, checked and scanned once. The pool drops it when other
    documents wait for a worker when this one gets its slot (`WorkerPool.run`)."""
    split_min_cpu_s: float = 0.0
    """With `split_above`: split only a document whose extraction would take one worker at least
    this much CPU (`worth_splitting`: OCR, or its sampled pages' text scaled to its length)."""


def _serve(
    conn: Connection, memory_mb: int, trace_dir: str | None, nice: int = 0
) -> None:  # pragma: no cover - runs in the worker process
    """A worker's life: one WorkRequest after another from `conn`, until it is closed."""
    if nice:
        # Below the ingress and the handlers on the same host (PDFRELAY_WORKER_NICE).
        os.nice(nice)
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # The ~100,000 objects of the preloaded application and PyMuPDF live as long as the process:
    # out of the collector's sight, the `gc.collect()` after every document costs well under a
    # millisecond instead of ~50 ms (measured: a third of the CPU of a batch of small documents).
    gc.freeze()
    held = HeldDocument()
    while True:
        if held.is_open and not conn.poll(HOLD_S):
            _forget(held)  # no next range came: nothing stays open in an idle worker
            continue
        try:
            req = conn.recv()
        except EOFError:
            return
        if req is None:
            return
        _one(conn, req, trace_dir, held)


def _forget(held: HeldDocument) -> None:  # pragma: no cover - runs in the worker process
    """Close the document held, and empty MuPDF's caches of it."""
    held.release()
    pymupdf.TOOLS.store_shrink(100)
    gc.collect()


def _extracted(
    req: WorkRequest, progress: ProgressCallback, held: HeldDocument | None
) -> tuple[object, ...]:  # pragma: no cover - runs in the worker process
    """Extract `req`'s document into its folder: the reply's `ok` tuple."""
    out = extract_document(req.pdf_path, req.options, req.limits, req.out_dir, progress, held)
    out.result.job_id = req.job_id
    path = os.path.join(req.out_dir, RESULT_FILE)
    data = out.result.model_dump_json(by_alias=True).encode()
    Path(path).write_bytes(data)
    # The artifacts' digests once, here, where the bytes are: the handler reuses them. The
    # result needs none (the cache key is the source's digest, the S3 client checks its own).
    digests = {art.path: file_digest(art.path) for art in out.artifacts}
    return (
        "ok",
        path,
        out.result.page_count,
        out.pages_processed,
        tuple(out.result.warnings),
        tuple(out.artifacts),
        digests,
    )  # `out` goes with the frame: freed before the store is shrunk and `gc` runs


def _one(
    conn: Connection, req: WorkRequest, trace_dir: str | None, held: HeldDocument
) -> None:  # pragma: no cover - runs in the worker process
    keep = req.limits.range_part
    if held.is_open and not (keep and held.holds(req.pdf_path)):
        _forget(held)  # another document: nothing of the last one stays
    started, cpu = time.monotonic(), time.process_time()
    last = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done == total or now - last >= PROGRESS_INTERVAL_S:
            last = now
            conn.send(("progress", done, total))

    reply: tuple[object, ...]
    try:
        if req.preview is not None:
            path, count = render_page(req.pdf_path, *req.preview, req.limits, req.out_dir)
            reply = ("ok", path, count, 1, (), (), {})
        elif req.split_above is not None and (
            pages := page_count_above(
                req.pdf_path,
                req.limits,
                held,
                req.split_above,
                req.options,
                req.split_min_cpu_s,
            )
        ):
            reply = ("split", pages)
        elif req.split_above is not None:
            # Opened, checked and scanned by the probe: extracted from the same open document.
            checked = replace(req.limits, max_inflated_bytes=None)
            reply = _extracted(replace(req, limits=checked), progress, held)
        else:
            reply = _extracted(req, progress, held if keep else None)
    except PermanentError as exc:
        reply = ("error", str(exc.code), exc.message)
    except MemoryError:
        reply = ("error", str(ErrorCode.EXTRACTION_CRASHED), "the document needs too much memory")
    # What this document left in MuPDF's object store is not the next one's business (one held
    # for its next range keeps it: its parsed fonts and resources are why it is held), but what
    # every document uses (the standard fonts, colour conversions) is kept: the newest tenth.
    if not keep:
        held.release()  # a probed whole document: its ranges download a copy of their own
    if not held.is_open:
        pymupdf.TOOLS.store_shrink(STORE_SHRINK_PERCENT)
    gc.collect()
    if trace_dir:
        with open(os.path.join(trace_dir, f"{os.getpid()}.trace"), "a") as fh:
            span = {
                "pid": os.getpid(),
                "start": started,
                "end": time.monotonic(),
                "cpu": time.process_time() - cpu,
            }
            fh.write(json.dumps(span) + "\n")
    conn.send(reply)


def _poll(conn: Connection) -> bool:
    """`conn.poll()`, true also when the worker is gone (the `recv` then tells how)."""
    try:
        return conn.poll()
    except OSError:
        return True


def _entry_modules() -> list[str]:
    """The modules the entry script (`__main__`) took its functions and classes from."""
    main = sys.modules.get("__main__")
    found = {getattr(v, "__module__", None) for v in vars(main).values()} if main else set()
    return sorted(m for m in found if isinstance(m, str) and m not in ("__main__", "builtins"))


def _warm_up() -> None:  # pragma: no cover - runs in the worker process
    """Nothing: starting it is the point."""


class _Slots:
    """At most `size` holders at once; a free slot goes to a waiting foreground request before
    any waiting background one (page ranges of large documents wait behind whole jobs)."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiting: dict[bool, collections.deque[asyncio.Future[None]]] = {
            False: collections.deque(),
            True: collections.deque(),
        }

    @contextlib.asynccontextmanager
    async def hold(self, background: bool) -> AsyncIterator[None]:
        if self._free > 0:  # a slot is only ever free while nobody waits for one
            self._free -= 1
        else:
            slot = asyncio.get_running_loop().create_future()
            self._waiting[background].append(slot)
            try:
                await slot
            except asyncio.CancelledError:
                if slot.done() and not slot.cancelled():
                    self._release()  # handed over just as the waiter was cancelled: pass it on
                else:
                    self._waiting[background].remove(slot)
                raise
        try:
            yield
        finally:
            self._release()

    @property
    def waiting(self) -> int:
        """Holders waiting for a slot."""
        return sum(not f.done() for q in self._waiting.values() for f in q)

    def _release(self) -> None:
        for queue in (self._waiting[False], self._waiting[True]):
            while queue:
                slot = queue.popleft()
                if not slot.done():
                    slot.set_result(None)
                    return
        self._free += 1


@dataclass
class _Worker:
    """A worker process and the parent's end of its pipe."""

    proc: multiprocessing.process.BaseProcess
    conn: Connection
    jobs: int = 0


class WorkerPool:
    """Runs extractions in worker processes, at most `workers` at a time."""

    def __init__(
        self,
        workers: int,
        timeout_s: float,
        memory_mb: int,
        trace_dir: str | None = None,
        max_jobs: int = DEFAULT_MAX_JOBS,
        nice: int = 0,
    ) -> None:
        self.workers = workers
        self.nice = nice
        self._timeout_s = timeout_s
        self._memory_mb = memory_mb
        self._trace_dir = trace_dir
        self._max_jobs = max(1, max_jobs)
        self._slots = _Slots(workers)
        self._mp = multiprocessing.get_context("forkserver")
        # Every worker runs the entry script again as `__mp_main__` (CPython < 3.13 ignores the
        # `__main__` preload: the forkserver is never told the script's path), so the modules
        # the script imports from must already be in the forkserver, or each process pays for
        # importing the whole application again (about 2 s of CPU for the `pdfrelay` CLI).
        self._mp.set_forkserver_preload(["__main__", "shared.extraction.pool", *_entry_modules()])
        self._running: set[multiprocessing.process.BaseProcess] = set()
        self._idle: list[_Worker] = []
        self._jobs: dict[str, _Tracked] = {}
        self._cancelled: set[multiprocessing.process.BaseProcess] = set()
        self.on_start: list[Callable[[int], None]] = []
        """Observers told, for each document, the pid of the worker that runs it (metrics,
        fault-injection tests: killing or stopping that pid hits that document only)."""
        self.started = 0
        """Documents handed to a worker."""
        self.processes = 0
        """Worker processes started."""
        self.crashed = 0

    @property
    def busy(self) -> int:
        """Worker processes running a document now."""
        return len(self._running)

    async def start(self) -> None:
        """Start the forkserver (and its preloading) now rather than on the first document."""
        proc = self._mp.Process(target=_warm_up, daemon=True, name="pdfrelay-warm-up")
        await asyncio.to_thread(proc.start)
        await asyncio.to_thread(proc.join)
        proc.close()

    async def _spawn(self) -> _Worker:
        parent, child = self._mp.Pipe()
        proc = self._mp.Process(
            target=_serve,
            args=(child, self._memory_mb, self._trace_dir, self.nice),
            daemon=True,
            name="pdfrelay-extract",
        )
        try:
            await asyncio.to_thread(proc.start)
        finally:
            child.close()  # the parent must not hold it: a dead worker then reads as EOF
        self.processes += 1
        return _Worker(proc, parent)

    async def run(
        self,
        req: WorkRequest,
        on_progress: ProgressCallback,
        job_id: str | None = None,
        on_slot: Callable[[], Awaitable[None]] | None = None,
        background: bool = False,
    ) -> WorkOutput:
        """Extract one document in a worker process (a reused one when there is one idle).

        Raises:
            PermanentError: the engine refused the document, or it ran out of time.
            WorkerCrashed: the process died (the caller decides whether to retry).
            JobCancelled: `cancel(job_id)` was called while `job_id` was tracked.

        `on_slot` runs once a worker slot is this document's, before its worker starts. A
        `background` request (a page range) gets a slot only when no other request waits.
        """
        tracked = self._jobs.get(job_id) if job_id is not None else None
        if req.job_id is None and job_id is not None:
            req = replace(req, job_id=job_id)  # the result names its job
        async with self._slots.hold(background):
            if tracked is not None and tracked.cancelled:
                raise JobCancelled("the job was cancelled")
            if req.split_above is not None and self._slots.waiting:
                # Others wait for a worker: this document's ranges would finish nothing
                # sooner, while costing their parts, merge and re-parsed resources. Split only
                # what would otherwise leave a worker idle (the last large document of a batch).
                req = replace(req, split_above=None)
            if on_slot is not None:
                await on_slot()
            while self._idle and not self._idle[-1].proc.is_alive():
                # Died while idle (killed, out of memory): not this document's crash.
                await self._retire(self._idle.pop())
            worker = self._idle.pop() if self._idle else await self._spawn()
            proc = worker.proc
            reuse = False
            self.started += 1
            self._running.add(proc)
            if tracked is not None:
                tracked.procs.add(proc)
                if tracked.cancelled:  # while the process was starting
                    self._kill_cancelled(proc)
            assert proc.pid is not None
            for observer in self.on_start:
                observer(proc.pid)
            try:
                # A worker that died since (an observer killed it) shows as EOF below.
                with contextlib.suppress(OSError):
                    worker.conn.send(req)
                async with asyncio.timeout(self._timeout_s):
                    out = await self._collect(worker.conn, proc, on_progress)
                worker.jobs += 1
                reuse = worker.jobs < self._max_jobs and proc not in self._cancelled
                return out
            except TimeoutError as exc:
                proc.kill()
                raise PermanentError(
                    f"the extraction took longer than {self._timeout_s:g} s",
                    ErrorCode.EXTRACTION_TIMEOUT,
                ) from exc
            finally:
                self._running.discard(proc)
                self._cancelled.discard(proc)
                if tracked is not None:
                    tracked.procs.discard(proc)
                if reuse and proc.is_alive():
                    self._idle.append(worker)
                else:
                    await self._retire(worker)

    async def _retire(self, worker: _Worker) -> None:
        """Let a worker exit (closing its pipe ends its loop); stop it when it does not."""
        worker.conn.close()
        proc = worker.proc
        await asyncio.to_thread(proc.join, EXIT_GRACE_S)
        if proc.is_alive():
            proc.kill()
            await asyncio.to_thread(proc.join)
        proc.close()

    async def _collect(
        self,
        conn: Connection,
        proc: multiprocessing.process.BaseProcess,
        on_progress: ProgressCallback,
    ) -> WorkOutput:
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(conn.fileno(), readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                while _poll(conn):
                    try:
                        msg = conn.recv()
                    except (EOFError, OSError):  # a socket pair: a dead peer may read as reset
                        await asyncio.to_thread(proc.join)
                        if proc in self._cancelled:
                            raise JobCancelled("the job was cancelled") from None
                        self.crashed += 1
                        raise WorkerCrashed(
                            f"the worker process died (exit code {proc.exitcode})"
                        ) from None
                    kind = msg[0]
                    if kind == "progress":
                        on_progress(msg[1], msg[2])
                    elif kind == "ok":
                        return WorkOutput(*msg[1:])
                    elif kind == "split":
                        return WorkOutput.splitting(msg[1])
                    else:
                        raise PermanentError(msg[2], ErrorCode(msg[1]))
        finally:
            loop.remove_reader(conn.fileno())

    @contextlib.contextmanager
    def track(self, job_id: str) -> Iterator[None]:
        """Let `cancel(job_id)` reach the job while the block runs, also before `run`."""
        # Nested or overlapping blocks of one job (its page ranges) share one entry.
        tracked = self._jobs.setdefault(job_id, _Tracked())
        tracked.holders += 1
        try:
            yield
        finally:
            tracked.holders -= 1
            if tracked.holders == 0 and self._jobs.get(job_id) is tracked:
                del self._jobs[job_id]

    def cancel(self, job_id: str) -> bool:
        """Stop the worker of a tracked job, or keep it from starting; False: not tracked here."""
        tracked = self._jobs.get(job_id)
        if tracked is None:
            return False
        tracked.cancelled = True
        for proc in list(tracked.procs):
            self._kill_cancelled(proc)
        return True

    def _kill_cancelled(self, proc: multiprocessing.process.BaseProcess) -> None:
        self._cancelled.add(proc)
        with contextlib.suppress(ValueError, OSError):
            proc.kill()

    def kill_all(self) -> None:
        """Stop every worker, running or idle (shutdown, or tests that simulate a crash)."""
        for proc in list(self._running):
            with contextlib.suppress(ValueError, OSError):
                proc.kill()
        idle, self._idle = self._idle, []
        for worker in idle:
            worker.conn.close()
            with contextlib.suppress(ValueError, OSError):
                worker.proc.kill()
                worker.proc.join(EXIT_GRACE_S)
                worker.proc.close()
