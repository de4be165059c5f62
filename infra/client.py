"""`pdfrelay submit`: upload PDFs to a running service, follow them, print the outcome."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

TERMINAL = {"completed", "failed", "cancelled"}


class ClientError(Exception):
    """The service answered with an error or could not be reached."""


async def _file_chunks(path: str) -> AsyncIterator[bytes]:
    with open(path, "rb") as fh:  # noqa: ASYNC230 - small reads of a local file
        while chunk := fh.read(256 * 1024):
            yield chunk


async def submit_one(
    session: aiohttp.ClientSession,
    base: str,
    path: str,
    options: str | None,
    webhook_url: str | None,
) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field(
        "file", _file_chunks(path), filename=os.path.basename(path), content_type="application/pdf"
    )
    if options:
        form.add_field("options", options)
    if webhook_url:
        form.add_field("webhook_url", webhook_url)
    async with session.post(f"{base}/v1/jobs", data=form) as resp:
        body = await resp.json(content_type=None)
        if resp.status != 202:
            err = body.get("error", {}) if isinstance(body, dict) else {}
            raise ClientError(f"{path}: {resp.status} {err.get('code')}: {err.get('message')}")
        return dict(body)


async def wait_for(session: aiohttp.ClientSession, base: str, job_id: str) -> dict[str, Any]:
    while True:
        async with session.get(f"{base}/v1/jobs/{job_id}", params={"wait": "30"}) as resp:
            job = dict(await resp.json())
        if job["status"] in TERMINAL:
            return job
        progress = job.get("progress") or {}
        done, total = progress.get("pages_done", 0), progress.get("pages_total") or "?"
        print(f"{job_id}: {job['status']} {done}/{total}", file=sys.stderr)


async def run_submit(
    files: list[str],
    base: str,
    wait: bool,
    options: str | None,
    webhook_url: str | None,
    api_key: str | None,
) -> int:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    status = 0
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            for path in files:
                job = await submit_one(session, base, path, options, webhook_url)
                print(f"{path}: job {job['job_id']} {job['status']}", file=sys.stderr)
                if not wait:
                    print(job["job_id"])
                    continue
                job = await wait_for(session, base, job["job_id"])
                if job["status"] != "completed":
                    err = job.get("error") or {}
                    print(
                        f"{path}: {job['status']} {err.get('code')}: {err.get('message')}",
                        file=sys.stderr,
                    )
                    status = 1
                    continue
                async with session.get(f"{base}/v1/jobs/{job['job_id']}/result") as resp:
                    result = await resp.json()
                text = "\n".join(p["text"] for p in result.get("pages", []))
                print(text if text.strip() else json.dumps(result, indent=2))
    except aiohttp.ClientConnectionError as exc:
        print(
            f"cannot reach pdfrelay at {base}: {exc}. Is `pdfrelay dev` running?", file=sys.stderr
        )
        return 2
    except ClientError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return status


def main_submit(args: Any) -> int:
    return asyncio.run(
        run_submit(
            args.files,
            args.url.rstrip("/"),
            args.wait,
            args.options,
            args.webhook_url,
            args.api_key,
        )
    )
