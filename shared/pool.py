"""Extraction worker processes: one process per document, with a time limit and a memory limit.

PyMuPDF is CPU-bound and not thread-safe, and a hostile PDF can crash or exhaust the process that
opens it. Each document therefore runs in a fresh process forked from a forkserver that has
PyMuPDF preloaded (cheap to start, nothing shared, recycled after every job), and at most
`workers` run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from shared.errors import ErrorCode, PdfRelayError, PermanentError
from shared.extraction import ArtifactFile, ExtractLimits, extract_document
from shared.models import ExtractOptions

RESULT_FILE = "result.json"
PROGRESS_INTERVAL_S = 0.25
EXIT_GRACE_S = 2.0

ProgressCallback = Callable[[int, int], None]


class WorkerCrashed(PdfRelayError):
    """The worker process died without an answer (killed, segfault, out of memory)."""

    code = ErrorCode.EXTRACTION_CRASHED


class JobCancelled(PdfRelayError):
    """The job was cancelled: its worker was stopped, or never started."""

    code = ErrorCode.CANCELLED


@dataclass
class _Tracked:
    """A job `cancel` can reach: flagged before its worker starts, killed while it runs."""

    cancelled: bool = False
    proc: multiprocessing.process.BaseProcess | None = None


@dataclass(frozen=True)
class WorkOutput:
    result_path: str
    """The ExtractionResult as JSON, written by the worker."""
    page_count: int
    pages_extracted: int
    warnings: tuple[str, ...]
    artifacts: tuple[ArtifactFile, ...]


@dataclass(frozen=True)
class WorkRequest:
    pdf_path: str
    out_dir: str
    options: ExtractOptions
    limits: ExtractLimits


def _child(
    conn: Connection, req: WorkRequest, memory_mb: int, trace_dir: str | None
) -> None:  # pragma: no cover - runs in the worker process
    started = time.monotonic()
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    last = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done == total or now - last >= PROGRESS_INTERVAL_S:
            last = now
            conn.send(("progress", done, total))

    reply: tuple[object, ...]
    try:
        out = extract_document(req.pdf_path, req.options, req.limits, req.out_dir, progress)
        path = os.path.join(req.out_dir, RESULT_FILE)
        Path(path).write_text(out.result.model_dump_json(by_alias=True))
        reply = (
            "ok",
            path,
            out.result.page_count,
            out.pages_processed,
            tuple(out.result.warnings),
            tuple(out.artifacts),
        )
    except PermanentError as exc:
        reply = ("error", str(exc.code), exc.message)
    except MemoryError:
        reply = ("error", str(ErrorCode.EXTRACTION_CRASHED), "the document needs too much memory")
    if trace_dir:
        with open(os.path.join(trace_dir, f"{os.getpid()}.trace"), "a") as fh:
            span = {"pid": os.getpid(), "start": started, "end": time.monotonic()}
            fh.write(json.dumps(span) + "\n")
    conn.send(reply)
    conn.close()


def _entry_modules() -> list[str]:
    """The modules the entry script (`__main__`) took its functions and classes from."""
    main = sys.modules.get("__main__")
    found = {getattr(v, "__module__", None) for v in vars(main).values()} if main else set()
    return sorted(m for m in found if isinstance(m, str) and m not in ("__main__", "builtins"))


def _warm_up() -> None:  # pragma: no cover - runs in the worker process
    """Nothing: starting it is the point."""


class WorkerPool:
    """Runs extractions in worker processes, at most `workers` at a time."""

    def __init__(
        self,
        workers: int,
        timeout_s: float,
        memory_mb: int,
        trace_dir: str | None = None,
    ) -> None:
        self.workers = workers
        self._timeout_s = timeout_s
        self._memory_mb = memory_mb
        self._trace_dir = trace_dir
        self._sem = asyncio.Semaphore(workers)
        self._mp = multiprocessing.get_context("forkserver")
        # Every worker runs the entry script again as `__mp_main__` (CPython < 3.13 ignores the
        # `__main__` preload: the forkserver is never told the script's path), so the modules
        # the script imports from must already be in the forkserver, or each document pays for
        # importing the whole application again (about 2 s of CPU for the `pdfrelay` CLI).
        self._mp.set_forkserver_preload(["__main__", "shared.pool", *_entry_modules()])
        self._running: set[multiprocessing.process.BaseProcess] = set()
        self._jobs: dict[str, _Tracked] = {}
        self._cancelled: set[multiprocessing.process.BaseProcess] = set()
        self.on_start: list[Callable[[int], None]] = []
        """Observers told each new worker's pid (metrics, fault-injection tests)."""
        self.started = 0
        self.crashed = 0

    async def start(self) -> None:
        """Start the forkserver (and its preloading) now rather than on the first document."""
        proc = self._mp.Process(target=_warm_up, daemon=True, name="pdfrelay-warm-up")
        await asyncio.to_thread(proc.start)
        await asyncio.to_thread(proc.join)
        proc.close()

    async def run(
        self, req: WorkRequest, on_progress: ProgressCallback, job_id: str | None = None
    ) -> WorkOutput:
        """Extract one document in a fresh worker process.

        Raises:
            PermanentError: the engine refused the document, or it ran out of time.
            WorkerCrashed: the process died (the caller decides whether to retry).
            JobCancelled: `cancel(job_id)` was called while `job_id` was tracked.
        """
        tracked = self._jobs.get(job_id) if job_id is not None else None
        async with self._sem:
            if tracked is not None and tracked.cancelled:
                raise JobCancelled("the job was cancelled")
            receiver, sender = self._mp.Pipe(duplex=False)
            proc = self._mp.Process(
                target=_child,
                args=(sender, req, self._memory_mb, self._trace_dir),
                daemon=True,
                name="pdfrelay-extract",
            )
            await asyncio.to_thread(proc.start)
            sender.close()
            self.started += 1
            self._running.add(proc)
            if tracked is not None:
                tracked.proc = proc
                if tracked.cancelled:  # while the process was starting
                    self._kill_cancelled(proc)
            assert proc.pid is not None
            for observer in self.on_start:
                observer(proc.pid)
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await self._collect(receiver, proc, on_progress)
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
                    tracked.proc = None
                receiver.close()
                # A worker that answered exits at once; one that did not is stopped.
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
                while conn.poll():
                    try:
                        msg = conn.recv()
                    except EOFError:
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
                    else:
                        raise PermanentError(msg[2], ErrorCode(msg[1]))
        finally:
            loop.remove_reader(conn.fileno())

    @contextlib.contextmanager
    def track(self, job_id: str) -> Iterator[None]:
        """Let `cancel(job_id)` reach the job while the block runs, also before `run`."""
        self._jobs[job_id] = _Tracked()
        try:
            yield
        finally:
            self._jobs.pop(job_id, None)

    def cancel(self, job_id: str) -> bool:
        """Stop the worker of a tracked job, or keep it from starting; False: not tracked here."""
        tracked = self._jobs.get(job_id)
        if tracked is None:
            return False
        tracked.cancelled = True
        if tracked.proc is not None:
            self._kill_cancelled(tracked.proc)
        return True

    def _kill_cancelled(self, proc: multiprocessing.process.BaseProcess) -> None:
        self._cancelled.add(proc)
        with contextlib.suppress(ValueError, OSError):
            proc.kill()

    def kill_all(self) -> None:
        """Stop every running worker (shutdown, or tests that simulate a crash)."""
        for proc in list(self._running):
            with contextlib.suppress(ValueError, OSError):
                proc.kill()
