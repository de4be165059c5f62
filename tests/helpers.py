"""Helpers the service tests share: uploading through the ingress and waiting for a job's end."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import aiohttp

from tests.conftest import Stack


def form(data: bytes, name: str = "doc.pdf", **fields: str) -> aiohttp.FormData:
    fd = aiohttp.FormData()
    fd.add_field("file", data, filename=name, content_type="application/pdf")
    for key, value in fields.items():
        fd.add_field(key, value)
    return fd


async def upload(
    stack: Stack, data: bytes, headers: dict[str, str] | None = None, **fields: str
) -> Any:
    resp = await stack.client.post("/v1/jobs", data=form(data, **fields), headers=headers)
    assert resp.status == 202, await resp.text()
    assert resp.headers["Location"].startswith("/v1/jobs/")
    return await resp.json()


async def wait_done(
    stack: Stack, job_id: str, headers: dict[str, str] | None = None, rounds: int = 4
) -> Any:
    """Long-poll until the job ends (each round waits up to 30 s for its terminal event)."""
    for _ in range(rounds):
        resp = await stack.client.get(f"/v1/jobs/{job_id}", params={"wait": "30"}, headers=headers)
        assert resp.status == 200
        job = await resp.json()
        if job["status"] in ("completed", "failed"):
            return job
    raise AssertionError(f"job {job_id} did not end: {job}")


async def exited(pid: int, timeout_s: float = 10.0) -> None:
    """Wait until process `pid` (any process, not only a child of ours) has exited: its pidfd
    becomes readable then (a zombie counts as exited)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    gone = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, gone.set)
    try:
        async with asyncio.timeout(timeout_s):
            await gone.wait()
    finally:
        loop.remove_reader(fd)
        with contextlib.suppress(OSError):
            os.close(fd)
