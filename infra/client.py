"""`pdfrelay submit|jobs|cancel`: the HTTP API for people, with progress bars and plain errors.

Exit status: 0 all went well, 1 a job failed or the service refused something, 2 the service
could not be reached (or the command line is wrong), 130 interrupted. No traceback reaches the
terminal: every failure is one line saying what happened and what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

DEFAULT_URL = "http://127.0.0.1:8080"
TERMINAL = frozenset({"completed", "failed", "cancelled"})
EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 130
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 120
"""Longest silence on a connection; event streams send a keep-alive every 15 s."""
BUSY_RETRIES = 30
"""Uploads answered 429/503 with Retry-After are tried again this often, waiting as told."""
MAX_BUSY_WAIT_S = 120.0
STREAM_REOPENS = 5
MARKDOWN_ARTIFACT = "document.md"


class CliError(Exception):
    """A failure to report in one line, with the exit status it leads to."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Unreachable(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_UNREACHABLE)


class ServiceError(CliError):
    """The service answered with an error (`{"error": {"code", "message"}}`)."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


# --- the HTTP session ------------------------------------------------------------------------


class Api:
    """One HTTP session to the service; every failure becomes a CliError."""

    def __init__(self, base: str, api_key: str | None) -> None:
        self.base = base.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S
        )
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @contextlib.asynccontextmanager
    async def request(
        self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response, when its status is in `ok` (else ServiceError); the body streams."""
        assert self._session is not None
        url = f"{self.base}{path}"
        try:
            async with self._session.request(method, url, **kwargs) as resp:
                if resp.status not in ok:
                    raise await _service_error(resp)
                yield resp
        except aiohttp.InvalidURL as exc:
            raise CliError(f"not a valid service URL: {self.base}", EXIT_UNREACHABLE) from exc
        except aiohttp.ClientConnectorError as exc:
            reason = _connect_failure(exc.os_error)
            raise Unreachable(
                f"cannot reach pdfrelay at {self.base} ({reason}). Is `pdfrelay dev` running? "
                "Point --url or PDFRELAY_URL at the service."
            ) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise Unreachable(f"pdfrelay at {self.base} closed the connection ({exc})") from exc
        except aiohttp.ClientError as exc:
            raise Unreachable(f"talking to pdfrelay at {self.base} failed: {exc}") from exc
        except TimeoutError as exc:
            raise Unreachable(f"pdfrelay at {self.base} did not answer in time") from exc

    async def json(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kw: Any) -> Any:
        async with self.request(method, path, ok, **kw) as resp:
            return await _body(resp)


def _connect_failure(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return "unknown host"
    if isinstance(error, TimeoutError):
        return "timed out"
    return error.strerror or str(error)


async def _body(resp: aiohttp.ClientResponse) -> Any:
    try:
        return await resp.json(content_type=None)
    except ValueError:
        return None


async def _service_error(resp: aiohttp.ClientResponse) -> ServiceError:
    body = await _body(resp)
    err = body.get("error") if isinstance(body, dict) else None
    code = str(err.get("code", "")) if isinstance(err, dict) else ""
    message = str(err.get("message", "")) if isinstance(err, dict) else ""
    if resp.status == 401:
        message = (message or "unauthorized") + (" (pass --api-key or set PDFRELAY_API_KEY)")
    elif not message:
        message = f"the service answered HTTP {resp.status} {resp.reason or ''}".strip()
    retry_after: float | None = None
    with contextlib.suppress(ValueError):
        retry_after = float(resp.headers.get("Retry-After", ""))
    return ServiceError(resp.status, code, message, retry_after)


async def sse_events(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str, str]]:
    """(event type, data) of a Server-Sent Events stream."""
    kind, data = "message", list[str]()
    async for raw in content:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield kind, "\n".join(data)
            kind, data = "message", []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)


async def follow(
    api: Api, job_id: str, on_update: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Follow the job's event stream until it ends; returns the job as it ended."""
    for _ in range(STREAM_REOPENS):
        path = f"/v1/jobs/{job_id}/events"
        async with api.request("GET", path, headers={"Accept": "text/event-stream"}) as resp:
            async for kind, data in sse_events(resp.content):
                view = json.loads(data)
                if isinstance(view, dict):
                    on_update(view)
                    if kind != "job.progress" and view.get("status") in TERMINAL:
                        return view
        # The stream ended early (the service is restarting): open it again.
    job: dict[str, Any] = await api.json("GET", f"/v1/jobs/{job_id}", params={"wait": "60"})
    return job


# --- pdfrelay submit ---------------------------------------------------------------------------


@dataclass
class Outcome:
    path: str
    job_id: str | None = None
    status: str | None = None
    text: str | None = None
    written: list[Path] = field(default_factory=list)
    error: str | None = None


def _out_stems(paths: list[str]) -> dict[str, str]:
    """A distinct file name stem per input (a.pdf, dir/a.pdf → a, a-2)."""
    stems: dict[str, str] = {}
    used: set[str] = set()
    for path in paths:
        base = Path(path).stem or "document"
        stem, n = base, 1
        while stem in used:
            n += 1
            stem = f"{base}-{n}"
        used.add(stem)
        stems[path] = stem
    return stems


class Submit:
    """Uploads files `concurrency` at a time, follows them, writes or prints what came out."""

    def __init__(self, args: argparse.Namespace, api: Api, progress: Progress) -> None:
        self.args = args
        self.api = api
        self.progress = progress
        self.out = Path(args.out) if args.out else None
        self.follow = bool(args.wait or args.out)
        self.stems = _out_stems(args.files)
        self.sem = asyncio.Semaphore(args.concurrency)

    async def one(self, path: str) -> Outcome:
        outcome = Outcome(path)
        task = self.progress.add_task(escape(os.path.basename(path)), total=None, status="waiting")
        async with self.sem:
            try:
                await self._run(path, task, outcome)
            except Unreachable:
                raise
            except CliError as exc:
                outcome.error = exc.message
                self._status(task, f"[red]{escape(exc.message)}")
        return outcome

    def _status(self, task: TaskID, status: str, **kw: Any) -> None:
        self.progress.update(task, status=status, **kw)

    async def _run(self, path: str, task: TaskID, outcome: Outcome) -> None:
        self._status(task, "uploading")
        job = await self._upload(path, task)
        outcome.job_id = job["job_id"]
        if not self.follow:
            outcome.status = job["status"]
            self._status(task, f"{job['status']} [dim]{job['job_id']}", total=1, completed=1)
            return

        def update(view: dict[str, Any]) -> None:
            progress = view.get("progress") or {}
            done, total = progress.get("pages_done") or 0, progress.get("pages_total")
            status = view.get("status", "?")
            if status == "processing" and total:
                status = f"{done}/{total} pages"
            self._status(task, status, total=total, completed=done)

        job = await follow(self.api, outcome.job_id, update)
        outcome.status = job["status"]
        if job["status"] != "completed":
            err = job.get("error") or {}
            detail = f"{err.get('code')}: {err.get('message')}" if err else job["status"]
            raise CliError(detail)
        result = await self.api.json("GET", f"/v1/jobs/{outcome.job_id}/result")
        if self.out is not None:
            outcome.written = await self._write(path, job, result)
        else:
            outcome.text = _text_of(result)
        done = (job.get("result") or {}).get("pages_extracted") or 0
        self._status(task, "[green]completed", total=max(done, 1), completed=max(done, 1))

    async def _upload(self, path: str, task: TaskID) -> dict[str, Any]:
        for attempt in range(BUSY_RETRIES + 1):
            form = aiohttp.FormData()
            form.add_field(
                "file",
                _file_chunks(path),
                filename=os.path.basename(path),
                content_type="application/pdf",
            )
            for name in ("options", "webhook_url", "client_ref"):
                if value := getattr(self.args, name, None):
                    form.add_field(name, value)
            try:
                job: dict[str, Any] = await self.api.json("POST", "/v1/jobs", (202,), data=form)
                return job
            except ServiceError as exc:
                if exc.status not in (429, 503) or exc.retry_after is None:
                    raise
                if attempt == BUSY_RETRIES:
                    raise
                wait = min(max(exc.retry_after, 1.0), MAX_BUSY_WAIT_S)
                self._status(task, f"[yellow]{exc.code or 'busy'}, again in {wait:g} s")
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _write(self, path: str, job: dict[str, Any], result: Any) -> list[Path]:
        assert self.out is not None
        out = self.out
        stem = self.stems[path]
        written: list[Path] = []

        def put(name: str, data: str) -> None:
            target = out / name
            target.write_text(data, encoding="utf-8")
            written.append(target)

        put(f"{stem}.json", json.dumps(result, indent=2, ensure_ascii=False))
        text = _text_of(result)
        if text:
            put(f"{stem}.txt", text)
        artifacts = (job.get("result") or {}).get("artifacts") or []
        if (
            isinstance(result, dict)
            and result.get("markdown")
            and not any(a.get("name") == MARKDOWN_ARTIFACT for a in artifacts)
        ):
            put(f"{stem}.md", str(result["markdown"]))
        for art in artifacts:
            name = str(art["name"])
            target = out / (f"{stem}.md" if name == MARKDOWN_ARTIFACT else f"{stem}.{name}")
            job_path = f"/v1/jobs/{job['job_id']}/artifacts/{name}"
            async with self.api.request("GET", job_path) as resp:
                with open(target, "wb") as fh:  # noqa: ASYNC230 - chunked local writes
                    async for chunk in resp.content.iter_chunked(256 * 1024):
                        fh.write(chunk)
            written.append(target)
        return written


def _text_of(result: Any) -> str:
    pages = result.get("pages") if isinstance(result, dict) else None
    return "\n\n".join(str(p.get("text", "")).strip() for p in pages or []).strip()


async def _file_chunks(path: str) -> AsyncIterator[bytes]:
    with open(path, "rb") as fh:  # noqa: ASYNC230 - small reads of a local file
        while chunk := fh.read(256 * 1024):
            yield chunk


def check_submit(args: argparse.Namespace) -> None:
    """Command-line mistakes, found before anything is uploaded."""
    if args.options:
        try:
            json.loads(args.options)
        except ValueError as exc:
            raise CliError(f"--options is not valid JSON: {exc}", EXIT_UNREACHABLE) from exc
    missing = [p for p in args.files if not os.path.isfile(p)]
    if missing:
        raise CliError(f"no such file: {', '.join(missing)}", EXIT_UNREACHABLE)
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1", EXIT_UNREACHABLE)
    if args.out:
        try:
            Path(args.out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"--out {args.out}: {exc.strerror}", EXIT_UNREACHABLE) from exc


async def run_submit(args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=err,
    )
    async with Api(args.url, args.api_key) as api:
        submit = Submit(args, api, progress)
        with progress:
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(submit.one(path)) for path in args.files]
            except* Unreachable as group_error:
                raise group_error.exceptions[0] from None
    outcomes = [t.result() for t in tasks]
    return _report(outcomes, several=len(outcomes) > 1, follow=submit.follow)


def _report(outcomes: list[Outcome], *, several: bool, follow: bool) -> int:
    status = EXIT_OK
    for o in outcomes:
        if o.error is not None:
            status = EXIT_FAILED
            job = f" (job {o.job_id})" if o.job_id else ""
            print(f"{o.path}{job}: {o.error}", file=sys.stderr)
        elif not follow:
            print(o.job_id)
        elif o.written:
            names = ", ".join(str(p) for p in o.written)
            print(f"{o.path}: wrote {names}", file=sys.stderr)
        elif o.text is not None:
            if several:
                print(f"==> {o.path} <==")
            print(o.text)
    return status


# --- pdfrelay jobs -----------------------------------------------------------------------------

_SINCE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _since(value: str) -> str:
    """`--since 2h` / `3d` / an ISO time → the ISO time for `created_after`."""
    m = _SINCE.match(value.strip())
    if m is not None:
        at = datetime.now(UTC) - timedelta(seconds=float(m.group(1)) * _SINCE_UNITS[m.group(2)])
        return at.isoformat()
    try:
        return datetime.fromisoformat(value.strip()).isoformat()
    except ValueError as exc:
        raise CliError(
            f"--since {value!r}: give a duration (30m, 2h, 7d) or an ISO time", EXIT_UNREACHABLE
        ) from exc


async def run_jobs(args: argparse.Namespace) -> int:
    params: dict[str, str] = {"limit": str(args.limit)}
    for name, value in (
        ("status", args.status),
        ("door", args.door),
        ("client_ref", args.client_ref),
        ("cursor", args.cursor),
    ):
        if value:
            params[name] = value
    if args.since:
        params["created_after"] = _since(args.since)
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    async with Api(args.url, args.api_key) as api:
        while True:
            page = await api.json("GET", "/v1/jobs", params=params)
            jobs.extend(page.get("jobs") or [])
            cursor = page.get("next_cursor")
            if not (args.all and cursor):
                break
            params["cursor"] = cursor
    if args.json:
        for job in jobs:
            print(json.dumps(job))
        return EXIT_OK
    out = Console(width=None if sys.stdout.isatty() else 200)
    table = Table(box=None, header_style="bold")
    for column in ("JOB", "STATUS", "PAGES", "FILE", "CLIENT REF", "CREATED"):
        table.add_column(column, no_wrap=column == "JOB")
    for job in jobs:
        progress = job.get("progress") or {}
        pages = f"{progress.get('pages_done', 0)}/{progress.get('pages_total') or '?'}"
        table.add_row(
            job["job_id"],
            _styled(job["status"]),
            pages,
            escape(job.get("filename") or ""),
            escape(job.get("client_ref") or ""),
            str(job.get("created_at", ""))[:19].replace("T", " "),
        )
    out.print(table if jobs else "no jobs")
    if cursor and not args.all:
        print(f"more: pdfrelay jobs --cursor {cursor} (or --all)", file=sys.stderr)
    return EXIT_OK


def _styled(status: str) -> str:
    color = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(status)
    return f"[{color}]{status}[/]" if color else status


# --- pdfrelay cancel ---------------------------------------------------------------------------


async def run_cancel(args: argparse.Namespace) -> int:
    status = EXIT_OK
    async with Api(args.url, args.api_key) as api:
        for job_id in args.job_ids:
            try:
                async with api.request("DELETE", f"/v1/jobs/{job_id}", (200, 202)) as resp:
                    job = await _body(resp)
                    stopping = resp.status == 202
            except Unreachable:
                raise
            except ServiceError as exc:
                status = EXIT_FAILED
                reason = "no such job" if exc.status == 404 else f"cannot cancel: {exc.message}"
                print(f"{job_id}: {reason}", file=sys.stderr)
                continue
            state = job.get("status") if isinstance(job, dict) else None
            print(f"{job_id}: {'cancelling (its worker is being stopped)' if stopping else state}")
    return status


# --- wiring ------------------------------------------------------------------------------------


def _main(
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
    check: Callable[[argparse.Namespace], None] | None = None,
) -> Callable[[argparse.Namespace], int]:
    def main(args: argparse.Namespace) -> int:
        try:
            if check is not None:
                check(args)
            return asyncio.run(run(args))
        except CliError as exc:
            print(f"pdfrelay: {exc.message}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    return main


main_submit = _main(run_submit, check_submit)
main_jobs = _main(run_jobs)
main_cancel = _main(run_cancel)


def add_parsers(sub: Any) -> None:
    """`pdfrelay submit`, `pdfrelay jobs`, `pdfrelay cancel` (sub: the CLI's subparsers)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("PDFRELAY_URL", DEFAULT_URL),
        help=f"the service (default $PDFRELAY_URL or {DEFAULT_URL})",
    )
    common.add_argument(
        "--api-key",
        default=os.environ.get("PDFRELAY_API_KEY"),
        help="bearer key, when the service has PDFRELAY_API_KEYS (default $PDFRELAY_API_KEY)",
    )

    submit = sub.add_parser(
        "submit", parents=[common], help="upload PDFs, follow them, print or write the results"
    )
    submit.add_argument("files", nargs="+", metavar="FILE")
    submit.add_argument("--wait", action="store_true", help="wait, then print each text")
    submit.add_argument(
        "--out", metavar="DIR", help="wait, then write <name>.txt, .md, .json and artifacts here"
    )
    submit.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="files in flight (default 4)"
    )
    submit.add_argument("--webhook-url")
    submit.add_argument("--client-ref", help="echoed in the job, e.g. your own id")
    submit.add_argument("--options", help='JSON, e.g. {"outputs": ["text", "markdown"]}')
    submit.set_defaults(func=main_submit)

    jobs = sub.add_parser("jobs", parents=[common], help="list jobs, newest first")
    jobs.add_argument("--status", help="e.g. queued,processing")
    jobs.add_argument("--door", choices=("http", "broker", "object-drop", "seed"))
    jobs.add_argument("--client-ref")
    jobs.add_argument("--since", help="created within (30m, 2h, 7d) or after an ISO time")
    jobs.add_argument("--limit", type=int, default=20, help="jobs per page (1-100)")
    jobs.add_argument("--cursor", help="go on from a previous page")
    jobs.add_argument("--all", action="store_true", help="every page")
    jobs.add_argument("--json", action="store_true", help="one JSON object per line")
    jobs.set_defaults(func=main_jobs)

    cancel = sub.add_parser("cancel", parents=[common], help="cancel queued or running jobs")
    cancel.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    cancel.set_defaults(func=main_cancel)
