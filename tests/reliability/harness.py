"""Fault-injection building blocks: handler subprocesses, a TCP proxy that can be cut, /proc."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pymupdf
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from handlers import ingress
from infra.app import HANDLERS
from shared.doors.table import DOORS
from shared.runtime.context import Context, open_context
from shared.settings import Settings
from tests.conftest import _cleanup, _free_port
from tests.factories import make_pdf

PDFRELAY = str(Path(sys.executable).with_name("pdfrelay"))

LONG = 400
"""Pages of a long document: about half a second of extraction, so that a fault sent on its
first progress event lands mid-extraction."""


def document(i: int, pages: int = 2) -> tuple[bytes, tuple[str, ...]]:
    """A PDF of `pages` pages and two words only it holds, on its first and last page."""
    words = (f"first{i}x", f"last{i}x")
    filler = pages - 2
    doc = pymupdf.open(stream=_filler(filler), filetype="pdf") if filler > 0 else pymupdf.open()
    for at, text in ((0, f"document {i} {words[0]}"), (-1, f"end of {i} {words[1]}")):
        doc.new_page(at, width=595, height=842).insert_text((72, 72), text, fontsize=11)
    data: bytes = doc.tobytes()
    doc.close()
    return data, words


@functools.cache
def _filler(pages: int) -> bytes:
    """The middle pages, made once per length (a long document takes a second to lay out)."""
    return make_pdf([f"filler page {p}" for p in range(pages)])


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a `pdfrelay` subprocess exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDFRELAY_")}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, dict):
            value = json.dumps(value)
        env[f"PDFRELAY_{name.upper()}"] = str(value)
    return env


# --- /proc --------------------------------------------------------------------------------------


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid …": comm may hold spaces and parentheses.
    return int(stat.rpartition(")")[2].split()[1])


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (a scan of /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _parent_of(int(entry)) == pid:
            found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def rss_kb(pid: int) -> int:
    """Resident memory of one process (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# --- log lines of in-process handlers ---------------------------------------------------------


class LogWatch(logging.Handler):
    """Keeps the messages of one logger (and its children) and wakes whoever waits on them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._loop.call_soon_threadsafe(self._changed.set)

    def count(self, needle: str) -> int:
        return sum(1 for m in self.messages if needle in m)

    async def wait_for(self, done: Callable[[], bool], within: float = 60) -> None:
        async with asyncio.timeout(within):
            while True:
                self._changed.clear()
                if done():
                    return
                await self._changed.wait()


@contextlib.contextmanager
def watch_logs(name: str, level: int = logging.INFO) -> Iterator[LogWatch]:
    """Watch what logger `name` says at `level` and above while the block runs."""
    logger = logging.getLogger(name)
    watch = LogWatch()
    old_level = logger.level
    logger.setLevel(level)
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(old_level)


# --- handler subprocesses -----------------------------------------------------------------------


@dataclass
class HandlerProcess:
    """A `pdfrelay …` subprocess in a process group of its own, its output kept and searchable."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    eof: bool = False
    _pump: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls, name: str, args: Sequence[str], env: dict[str, str], log_path: Path
    ) -> HandlerProcess:
        proc = await asyncio.create_subprocess_exec(
            PDFRELAY,
            *args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        handler = cls(name=name, proc=proc, log_path=log_path)
        handler._pump = asyncio.create_task(handler._read())
        return handler

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log_path, "a") as out:
            while line := await self.proc.stdout.readline():
                text = line.decode(errors="replace")
                out.write(text)
                out.flush()
                async with self.changed:
                    self.lines.append(text)
                    self.changed.notify_all()
        async with self.changed:
            self.eof = True
            self.changed.notify_all()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    async def wait_for(self, needle: str, within: float = 90, after: int = 0) -> int:
        """Wait until an output line from line `after` on contains `needle`; its index."""

        def found() -> int | None:
            for i in range(after, len(self.lines)):
                if needle in self.lines[i]:
                    return i
            return None

        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(lambda: found() is not None or self.eof)
        index = found()
        if index is None:
            raise AssertionError(f"{self.name} exited before {needle!r}:\n{self.text[-4000:]}")
        return index

    def workers(self) -> list[int]:
        """The extraction worker processes: children of the handler's forkserver."""
        servers = [c for c in children(self.pid) if "forkserver" in cmdline(c)]
        return [w for s in servers for w in children(s)]

    def kill_all(self) -> None:
        """SIGKILL to the whole handler: the process, its forkserver and its workers."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, within: float = 60) -> int:
        async with asyncio.timeout(within):
            code = await self.proc.wait()
            if self._pump is not None:
                await self._pump
        return code

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    async def close(self) -> None:
        """Stop it (SIGTERM, then SIGKILL) and whatever it left in its group."""
        if self.proc.returncode is None:
            self.terminate()
            try:
                await self.wait(30)
            except TimeoutError:
                self.kill_all()
        self.kill_all()
        await self.wait(30)


# --- a TCP proxy that can be cut ----------------------------------------------------------------


class FaultProxy:
    """Forwards TCP to a target; `cut()` resets every connection and refuses new ones.

    It listens on a socket of its own, accepting in a reader callback, not on an `asyncio.Server`:
    on Python 3.11 a connection the server had accepted but not yet wrapped when `Server.close()`
    ran fails an assertion in `Server._attach`, and its half-built transport is left to the garbage
    collector ("ResourceWarning: unclosed transport", the storage-outage scenario's flake); and an
    accept loop stopped by cancelling `sock_accept` can lose a socket accepted in the same turn.
    Here every accepted socket is the proxy's from `accept()` on, and `close()` closes them all."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = _free_port()
        self._listener: socket.socket | None = None
        self._accepted: set[socket.socket] = set()  # not yet wrapped in a stream
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    async def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR on POSIX
        listener.setblocking(False)
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept, listener)
        self._listener = listener

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            conn.setblocking(False)
            self.connections += 1
            self._accepted.add(conn)
            task = asyncio.create_task(self._forward(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _forward(self, conn: socket.socket) -> None:
        ends: list[asyncio.StreamWriter] = []
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
            self._accepted.discard(conn)  # the stream owns it now
            ends.append(writer)
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            ends.append(up_writer)
            if self.is_cut:  # cut while connecting upstream: reset like the others
                return
            self._writers.update(ends)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except OSError:
            return  # the target refused: the client's connection is reset (finally)
        finally:
            if conn in self._accepted:  # never wrapped
                self._accepted.discard(conn)
                conn.close()
            for end in ends:
                self._writers.discard(end)
                end.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.write_eof()

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for writer in list(self._writers):
            writer.transport.abort()

    async def restore(self) -> None:
        if self._listener is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in self._accepted:  # accepted, but its task was cancelled before it began
            conn.close()
        self._accepted.clear()


@asynccontextmanager
async def fault_proxy(target_port: int) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


# --- one scenario's service ---------------------------------------------------------------------


@dataclass
class Service:
    """The pdfrelay of one scenario: a context in the test process (topology, bucket, cleanup),
    handlers run in-process or as `pdfrelay` subprocesses, and an HTTP session for the client."""

    settings: Settings
    ctx: Context
    http: aiohttp.ClientSession
    log_dir: Path
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    base_url: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    procs: list[HandlerProcess] = field(default_factory=list)
    _server: TestServer | None = None

    def run_inproc(self, *names: str) -> None:
        """Run these handlers (not the ingress) in the test process until the scenario ends."""
        for name in names:
            self.tasks.append(asyncio.create_task(HANDLERS[name].serve(self.ctx, self.stop)))

    async def serve_ingress(self) -> str:
        """The ingress in the test process, on a real port; returns its base URL."""
        self._server = TestServer(ingress.create_app(self.ctx), host="127.0.0.1")
        await self._server.start_server()
        self.base_url = str(self._server.make_url("")).rstrip("/")
        return self.base_url

    async def spawn(
        self, handler: str, settings: Settings | None = None, ready: str | None = None
    ) -> HandlerProcess:
        """`pdfrelay run <handler>` (or `pdfrelay dev`) as a subprocess, once it is ready."""
        settings = settings or self.settings
        args = ["dev"] if handler == "dev" else ["run", handler]
        count = sum(1 for p in self.procs if p.name.startswith(handler))
        name = f"{handler}-{count + 1}"
        proc = await HandlerProcess.start(
            name, args, settings_env(settings), self.log_dir / f"{name}.log"
        )
        self.procs.append(proc)
        if ready is None:
            ready = (
                "ingress listening on" if handler in ("ingress", "dev") else "metrics and health"
            )
        await proc.wait_for(ready)
        if handler in ("ingress", "dev"):
            self.base_url = f"http://127.0.0.1:{settings.http_port}"
        return proc


@asynccontextmanager
async def open_service(
    settings: Settings, log_dir: Path, *, with_pool: bool = False
) -> AsyncIterator[Service]:
    """Declare the scenario's topology and bucket, and remove both (and every process) after."""
    assert settings.s3_endpoint
    log_dir.mkdir(parents=True, exist_ok=True)
    async with open_context(
        settings, settings.s3_endpoint, name="reliability", doors=DOORS, with_pool=with_pool
    ) as ctx:
        try:
            async with aiohttp.ClientSession() as http:
                svc = Service(settings=settings, ctx=ctx, http=http, log_dir=log_dir)
                try:
                    yield svc
                finally:
                    svc.stop.set()
                    for proc in svc.procs:
                        await proc.close()
                    await asyncio.gather(*svc.tasks)
                    if svc._server is not None:
                        await svc._server.close()
        finally:
            await _cleanup(ctx)
