"""Benchmark harness: real services in subprocesses, readiness with deadlines, memory and CPU."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp

from tests.vhosts import local_vhost

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class HarnessError(RuntimeError):
    """A service of the benchmark did not come up or misbehaved."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"process {proc.args!r} exited at start ({proc.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.05)
    raise HarnessError(f"nothing listened on port {port} in time")


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM (handlers finish in-flight work), then SIGKILL after `grace_s`."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --- services ---------------------------------------------------------------------------------


@dataclass
class MotoServer:
    endpoint: str
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def moto_server(log_dir: Path, timeout_s: float = 30.0) -> Iterator[MotoServer]:
    """The S3 server (infra/s3server.py) in its own process, as in the tests; stopped after."""
    port = free_port()
    with open(log_dir / "moto.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infra.s3server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, proc, time.monotonic() + timeout_s)
        yield MotoServer(endpoint=f"http://127.0.0.1:{port}", proc=proc)
    finally:
        stop_process(proc, grace_s=5)


@contextlib.contextmanager
def rabbit_vhost(prefix: str = "pdfrelay-bench") -> Iterator[str]:
    """A vhost of our own on the local RabbitMQ, deleted afterwards; yields its AMQP URL.

    `PDFRELAY_BENCH_AMQP_URL` uses a given broker instead (nothing is created or deleted).
    """
    if url := os.environ.get("PDFRELAY_BENCH_AMQP_URL"):
        yield url
        return
    with local_vhost(prefix) as url:
        yield url


def pdfrelay_command() -> list[str]:
    """The `pdfrelay` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "pdfrelay"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "infra.cli"]


def handler_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The environment of a handler process: ours without any PDFRELAY_*, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDFRELAY_")}
    # Handlers side by side on one host: each its own free metrics port, not 9100 for all.
    env["PDFRELAY_METRICS_PORT"] = "0"
    env.update(settings)
    return env


@dataclass
class Handler:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise HarnessError(
                f"`pdfrelay run {self.name}` exited ({self.proc.returncode}):\n{self.log_tail()}"
            )


@contextlib.contextmanager
def run_handler(
    name: str,
    settings: Mapping[str, str],
    log_dir: Path,
    command: Sequence[str] | None = None,
) -> Iterator[Handler]:
    """`pdfrelay run <name>` in its own process with `settings` as PDFRELAY_* environment.

    `command` replaces the `pdfrelay run <name>` command line (for what-if comparisons).
    """
    log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            list(command) if command is not None else [*pdfrelay_command(), "run", name],
            env=handler_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    handler = Handler(name=name, proc=proc, log_path=log_path)
    try:
        yield handler
    except BaseException:
        # The log lives in a temporary folder: show its end before it is gone.
        print(f"--- the end of `pdfrelay run {name}`'s log:\n{handler.log_tail()}", file=sys.stderr)
        raise
    finally:
        stop_process(proc)


async def wait_ready(base_url: str, handler: Handler, timeout_s: float = 60.0) -> None:
    """Poll `GET /readyz` until it answers 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            handler.check_alive()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{base_url}/readyz") as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"{base_url}/readyz not ready within {timeout_s:g} s:\n{handler.log_tail()}"
                )
            await asyncio.sleep(0.1)


async def wait_consumers(
    amqp_url: str, queue: str, handler: Handler, count: int = 1, timeout_s: float = 60.0
) -> None:
    """Wait until `queue` has `count` consumers (a handler without HTTP is ready then)."""
    deadline = time.monotonic() + timeout_s
    connection = await aio_pika.connect(amqp_url)
    try:
        while True:
            handler.check_alive()
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                declared = await channel.declare_queue(queue, passive=True)
                result = declared.declaration_result
                if result.consumer_count is not None and result.consumer_count >= count:
                    await channel.close()
                    return
            if not channel.is_closed:
                await channel.close()
            if time.monotonic() > deadline:
                raise HarnessError(f"no consumer on {queue} within {timeout_s:g} s")
            await asyncio.sleep(0.1)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def http_session(connections: int = 200) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


# --- /proc: memory and CPU of process trees ---------------------------------------------------


def status_kb(pid: int, field_name: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmHWM, VmRSS, …), or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    return None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after its last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        with contextlib.suppress(OSError):
            kids.extend(
                int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
            )
    return kids


def process_tree(pid: int) -> list[int]:
    """`pid` and all its living descendants."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children(p))
    return tree


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """CPU time (user + system) of `pid` and, with `tree`, of its descendants, living or reaped.

    Without `tree`, only the process's own time (its threads), not its children's.
    """
    total = 0
    for p in process_tree(pid) if tree else [pid]:
        fields = _stat_fields(p)
        if fields is None:
            continue
        # utime, stime, cutime, cstime are fields 14-17 of stat(5); fields[0] is field 3.
        total += sum(int(x) for x in fields[11 : 15 if tree else 13])
    return total / CLOCK_TICKS


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def find_pid_by_comm(comm: str) -> int | None:
    """The first process whose /proc/<pid>/comm is `comm` (read-only, e.g. RabbitMQ's beam)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() == comm:
                    return int(entry)
    return None


@dataclass
class TreeMemory:
    """Peaks seen by a `RssSampler` over one process tree."""

    root_hwm_kb: int = 0
    """VmHWM of the root process (exact; the kernel keeps it)."""
    child_hwm_kb: int = 0
    """Largest VmHWM of any descendant seen while sampling (workers are short-lived)."""
    tree_rss_kb: int = 0
    """Largest sampled sum of VmRSS over the whole tree."""
    pids_seen: set[int] = field(default_factory=set)


class RssSampler:
    """Samples a process tree's memory in a thread, so short-lived children are caught.

    Cheap on purpose, as it runs beside the workers it measures: the root's many threads are
    searched for new children only every `rescan_every` samples; the children found (the
    single-threaded forkserver) are searched at every sample.
    """

    def __init__(self, pid: int, interval_s: float = 0.05, rescan_every: int = 20) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.rescan_every = rescan_every
        self.memory = TreeMemory()
        self._root_children: list[int] = []
        self._samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        mem = self.memory
        if self._samples % self.rescan_every == 0:
            self._root_children = children(self.pid)
        self._samples += 1
        mem.root_hwm_kb = max(mem.root_hwm_kb, status_kb(self.pid, "VmHWM") or 0)
        total = status_kb(self.pid, "VmRSS") or 0
        todo = list(self._root_children)
        while todo:
            p = todo.pop()
            rss = status_kb(p, "VmRSS")
            if rss is None:
                continue
            total += rss
            mem.pids_seen.add(p)
            mem.child_hwm_kb = max(mem.child_hwm_kb, status_kb(p, "VmHWM") or 0)
            todo.extend(children(p))
        mem.tree_rss_kb = max(mem.tree_rss_kb, total)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()


@contextlib.asynccontextmanager
async def count_events(
    amqp_url: str, exchange: str, pattern: str = "#"
) -> AsyncIterator[Counter[str]]:
    """Count the messages published to `exchange` (by routing key) while the block runs."""
    counts: Counter[str] = Counter()
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=pattern)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            counts[message.routing_key or ""] += 1

        await queue.consume(on_message, no_ack=True)
        yield counts
    finally:
        await connection.close()
