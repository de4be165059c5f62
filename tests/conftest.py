"""Fixtures: the real RabbitMQ (a vhost per run) and a real S3 API server, started when missing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from handlers import extract, ingress, webhooks
from shared.adapters.brokers import connect_any
from shared.adapters.topology import delete, topology_for
from shared.doors.table import DOORS
from shared.runtime.context import Context, open_context
from shared.settings import Settings
from tests.vhosts import local_vhost

RUN_ID = uuid.uuid4().hex[:8]


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_output(log: Path, proc: subprocess.Popen[bytes], needle: str) -> str:
    """What `proc` wrote to `log` up to the line containing `needle` (bounded, no sleeping)."""
    with open(log, "rb") as fh:
        buffer = b""
        for _ in range(3000):
            chunk = fh.read()
            buffer += chunk
            if needle.encode() in buffer:
                return buffer.decode(errors="replace")
            if proc.poll() is not None:
                raise AssertionError(f"the process exited: {buffer.decode(errors='replace')}")
            if not chunk:
                # Block until the process writes more or exits (bounded by the loop count).
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.02)
    raise AssertionError(f"{needle!r} never came: {log.read_text()}")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the S3 server exited at start")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.05)
    raise RuntimeError("the S3 server did not start listening in time")


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A vhost of our own on the local broker, deleted afterwards (or a container with Docker)."""
    if url := os.environ.get("PDFRELAY_TEST_AMQP_URL"):
        yield url
        return
    if shutil.which("rabbitmqctl") is None and _docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13") as rabbit:
            params = rabbit.get_connection_params()
            yield f"amqp://guest:guest@{params.host}:{params.port}/"
        return
    with local_vhost(f"pdfrelay-test-{RUN_ID}") as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 app (infra/s3server.py) in its own process, or MinIO in a container with Docker."""
    if url := os.environ.get("PDFRELAY_TEST_S3_ENDPOINT"):
        yield url
        return
    if _docker_available():
        from testcontainers.minio import MinioContainer

        with MinioContainer(access_key="pdfrelay", secret_key="pdfrelay-secret") as minio:
            cfg = minio.get_config()
            yield f"http://{cfg['endpoint']}"
        return
    with s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as endpoint:
        yield endpoint


@contextlib.contextmanager
def s3_server(log: Path, *args: str) -> Iterator[str]:
    """`python -m infra.s3server` (with `args`, e.g. `--count`) on a free port, until the end."""
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infra.s3server", "-H", "127.0.0.1", "-p", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def make_settings(amqp_url: str, s3_endpoint: str, tmp_path: Path) -> Any:
    """Settings with a namespace and bucket of the test's own."""
    name = uuid.uuid4().hex[:10]

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "amqp_url": amqp_url,
            "namespace": f"t{name}",
            "s3_endpoint": s3_endpoint,
            "s3_bucket": f"t-{name}",
            # Every tenant may name keys of the test's bucket as a source (not the service's own).
            "source_buckets": {"*": [f"t-{name}"]},
            "extract_workers": 2,
            "http_port": 0,
            "spool_dir": str(tmp_path),
        }
        values.update(overrides)
        return Settings(**values)

    return build


@dataclass
class Stack:
    """The handlers of one test, running in-process against the real services."""

    ctx: Context
    client: TestClient[Any, Any]
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start_extract(self) -> None:
        self.tasks.append(asyncio.create_task(extract.serve(self.ctx, self.stop)))

    def start(self, serve: Callable[[Context, asyncio.Event], Awaitable[None]]) -> None:
        """Run one more handler in this stack until the test ends."""

        async def run() -> None:
            await serve(self.ctx, self.stop)

        self.tasks.append(asyncio.create_task(run()))

    def start_webhooks(self) -> None:
        """The webhooks handler (its settings need a `webhook_secret`)."""
        self.tasks.append(asyncio.create_task(webhooks.serve(self.ctx, self.stop)))


@contextlib.asynccontextmanager
async def running_stack(
    settings: Settings, *, extract_running: bool = True
) -> AsyncIterator[Stack]:
    assert settings.s3_endpoint
    async with open_context(
        settings, settings.s3_endpoint, name="test", doors=DOORS, with_pool=True
    ) as ctx:
        try:
            stop = asyncio.Event()
            async with TestClient(TestServer(ingress.create_app(ctx))) as client:
                stack = Stack(ctx=ctx, client=client, stop=stop)
                if extract_running:
                    stack.start_extract()
                try:
                    yield stack
                finally:
                    stop.set()
                    await asyncio.gather(*stack.tasks)
        finally:
            await _cleanup(ctx)


async def _cleanup(ctx: Context) -> None:
    # A connection of its own: after a broker restart the context's comes back in its own
    # time. What is left (a quorum queue still starting then) goes with the session's vhost.
    async with await connect_any(ctx.settings.amqp_url.get_secret_value()) as connection:
        await delete(connection, topology_for(ctx.settings))
    for key in await ctx.storage.list_keys(""):
        await ctx.storage.delete(key)
    await ctx.storage._run(ctx.storage.client.remove_bucket, ctx.storage.bucket)


@pytest.fixture
async def stack(make_settings: Any) -> AsyncIterator[Stack]:
    async with running_stack(make_settings()) as s:
        yield s


__all__ = ["Stack", "running_stack"]
