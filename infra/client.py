"""`pdfrelay submit|jobs|cancel`: the Python client (`pdfrelay_client`) for people, with progress
bars and plain errors.

Exit status: 0 all went well, 1 a job failed or the service refused something, 2 the service
could not be reached (or the command line is wrong), 130 interrupted. No traceback reaches the
terminal: every failure is one line saying what happened and what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from pdfrelay_client import (
    DEFAULT_URL,
    ApiError,
    AsyncClient,
    Batch,
    ConnectionFailed,
    Job,
    NotFound,
    PdfRelayError,
    Unauthorized,
)

EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 130
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 120
"""Longest silence on a connection; event streams send a keep-alive every 15 s."""
BUSY_RETRIES = 30
"""Requests answered 429/503 are tried again this often, waiting as Retry-After says."""
MAX_BUSY_WAIT_S = 120.0
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


def cli_error(exc: PdfRelayError) -> CliError:
    """The one line (and exit status) a client error becomes."""
    if isinstance(exc, ConnectionFailed):
        hint = (
            ". Is `pdfrelay dev` running? Point --url or PDFRELAY_URL at the service."
            if exc.message.startswith("cannot reach")
            else ""
        )
        return Unreachable(exc.message + hint)
    if isinstance(exc, Unauthorized):
        return CliError(f"{exc.message} (pass --api-key or set PDFRELAY_API_KEY)")
    return CliError(exc.message)


@contextlib.asynccontextmanager
async def connect(args: argparse.Namespace) -> AsyncIterator[AsyncClient]:
    """The client of `--url` and `--api-key`; a client error leaving it becomes a CliError."""
    client = AsyncClient(
        args.url,
        api_key=args.api_key,
        timeout=READ_TIMEOUT_S,
        connect_timeout=CONNECT_TIMEOUT_S,
        max_retries=BUSY_RETRIES,
        max_retry_wait=MAX_BUSY_WAIT_S,
    )
    try:
        yield client
    except PdfRelayError as exc:
        raise cli_error(exc) from None
    finally:
        await client.close()


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


_TASK: contextvars.ContextVar[TaskID] = contextvars.ContextVar("submit_task")
"""The progress line of the upload running in this asyncio task (for the retry notes)."""


class Submit:
    """Uploads files `concurrency` at a time, follows them, writes or prints what came out."""

    def __init__(self, args: argparse.Namespace, client: AsyncClient, progress: Progress) -> None:
        self.args = args
        self.client = client
        self.progress = progress
        self.out = Path(args.out) if args.out else None
        self.follow = bool(args.wait or args.out)
        self.stems = _out_stems(args.files)
        self.sem = asyncio.Semaphore(args.concurrency)
        self.batches: list[Batch] = []
        client.on_retry(self._retrying)

    def _retrying(self, refusal: ApiError, wait: float) -> None:
        if (task := _TASK.get(None)) is not None:
            self._status(task, f"[yellow]{refusal.code or 'busy'}, again in {wait:g} s")

    async def one(self, path: str) -> Outcome:
        outcome = Outcome(path)
        task = self.progress.add_task(escape(os.path.basename(path)), total=None, status="waiting")
        _TASK.set(task)
        async with self.sem:
            await self._reported(self._run(path, task, outcome), task, outcome)
        return outcome

    async def batched(self, paths: list[str]) -> list[Outcome]:
        """Several files: one batch request per `--batch-size` files, then each item followed."""
        outcomes = [Outcome(p) for p in paths]
        tasks = [
            self.progress.add_task(escape(os.path.basename(p)), total=None, status="waiting")
            for p in paths
        ]
        accepted: list[tuple[int, Job]] = []
        size = self.args.batch_size
        for start in range(0, len(paths), size):
            chunk = paths[start : start + size]
            for n in range(len(chunk)):
                self._status(tasks[start + n], "uploading")
            for n, job, error in await self._submit_chunk(chunk):
                if error is not None:
                    outcomes[start + n].error = error
                    self._status(tasks[start + n], f"[red]{escape(error)}")
                elif job is not None:
                    accepted.append((start + n, job))
        async with asyncio.TaskGroup() as group:
            for i, job in accepted:
                group.create_task(self._follow_item(paths[i], tasks[i], outcomes[i], job))
        return outcomes

    async def _submit_chunk(self, chunk: list[str]) -> list[tuple[int, Job | None, str | None]]:
        """(place in `chunk`, its job, or why it was refused) of each file of one batch."""
        ref = self.args.client_ref or None
        try:
            batch = await self.client.submit_batch(
                chunk,
                self._options(),
                webhook=self.args.webhook_url or None,
                client_refs=[ref] * len(chunk) if ref else None,
            )
        except ConnectionFailed:
            raise
        except PdfRelayError as exc:
            message = cli_error(exc).message
            items = exc.body.get("items") if isinstance(exc, ApiError) else None
            if not items:
                return [(n, None, message) for n in range(len(chunk))]
            return [
                (int(i["index"]), None, f"{i['error']['code']}: {i['error']['message']}")
                for i in items
            ]
        self.batches.append(batch)
        out: list[tuple[int, Job | None, str | None]] = []
        for item in batch.items:
            if item.job_id is None:
                err = item.error
                out.append((item.index, None, f"{err.code}: {err.message}" if err else "refused"))
            else:
                out.append((item.index, Job(item.job_id, item.status), None))
        return out

    async def _follow_item(self, path: str, task: TaskID, outcome: Outcome, job: Job) -> None:
        _TASK.set(task)
        async with self.sem:
            await self._reported(self._after_upload(path, task, outcome, job), task, outcome)

    async def _reported(self, work: Awaitable[None], task: TaskID, outcome: Outcome) -> None:
        """Run one file's `work`; its refusal or failure becomes its outcome's error and status
        (a lost connection ends the whole command)."""
        try:
            await work
        except ConnectionFailed:
            raise
        except (PdfRelayError, CliError) as exc:
            message = exc.message if isinstance(exc, CliError) else cli_error(exc).message
            outcome.error = message
            self._status(task, f"[red]{escape(message)}")

    def _status(self, task: TaskID, status: str, **kw: Any) -> None:
        self.progress.update(task, status=status, **kw)

    def _options(self) -> dict[str, Any] | None:
        return json.loads(self.args.options) if self.args.options else None

    async def _run(self, path: str, task: TaskID, outcome: Outcome) -> None:
        self._status(task, "uploading")
        job = await self.client.submit(
            path,
            self._options(),
            webhook=self.args.webhook_url or None,
            client_ref=self.args.client_ref or None,
        )
        await self._after_upload(path, task, outcome, job)

    async def _after_upload(self, path: str, task: TaskID, outcome: Outcome, job: Job) -> None:
        outcome.job_id = job.job_id
        if not self.follow:
            outcome.status = job.status
            self._status(task, f"{job.status} [dim]{job.job_id}", total=1, completed=1)
            return

        def update(view: Job) -> None:
            status, done, total = view.status, view.pages_done, view.pages_total
            if status == "processing" and total:
                status = f"{done}/{total} pages"
            self._status(task, status, total=total, completed=done)

        job = await self.client.wait(job, on_update=update)
        outcome.status = job.status
        if job.status != "completed":
            err = job.error
            raise CliError(f"{err.code}: {err.message}" if err else job.status)
        result = await self.client.result(job)
        if self.out is not None:
            outcome.written = await self._write(path, job, result)
        else:
            outcome.text = _text_of(result)
        done = (job.data.get("result") or {}).get("pages_extracted") or 0
        self._status(task, "[green]completed", total=max(done, 1), completed=max(done, 1))

    async def _write(self, path: str, job: Job, result: Any) -> list[Path]:
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
        names = [a.name for a in job.artifacts]
        if isinstance(result, dict) and result.get("markdown") and MARKDOWN_ARTIFACT not in names:
            put(f"{stem}.md", str(result["markdown"]))
        for name in names:
            target = out / (f"{stem}.md" if name == MARKDOWN_ARTIFACT else f"{stem}.{name}")
            written.append(await self.client.save_artifact(job, name, target))
        return written


def _text_of(result: Any) -> str:
    pages = result.get("pages") if isinstance(result, dict) else None
    return "\n\n".join(str(p.get("text", "")).strip() for p in pages or []).strip()


def check_submit(args: argparse.Namespace) -> None:
    """Command-line mistakes, found before anything is uploaded."""
    if args.options:
        try:
            json.loads(args.options)
        except ValueError as exc:
            raise CliError(f"--options is not valid JSON: {exc}", EXIT_UNREACHABLE) from exc
    files: list[str] = []
    for arg in args.files:
        if os.path.isdir(arg):
            found = sorted(str(p) for p in Path(arg).iterdir() if p.suffix.lower() == ".pdf")
            if not found:
                raise CliError(f"no .pdf file in the folder {arg}", EXIT_UNREACHABLE)
            files.extend(found)
        else:
            files.append(arg)
    args.files = files
    missing = [p for p in args.files if not os.path.isfile(p)]
    if missing:
        raise CliError(f"no such file: {', '.join(missing)}", EXIT_UNREACHABLE)
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1", EXIT_UNREACHABLE)
    if args.batch_size < 1:
        raise CliError("--batch-size must be at least 1", EXIT_UNREACHABLE)
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
    async with connect(args) as api:
        submit = Submit(args, api, progress)
        with progress:
            try:
                if len(args.files) == 1:
                    outcomes = [await submit.one(args.files[0])]
                else:
                    outcomes = await submit.batched(args.files)
            except* ConnectionFailed as group_error:
                raise group_error.exceptions[0] from None
    for batch in submit.batches:
        counts = batch.counts
        print(
            f"batch {batch.batch_id}: {counts.get('accepted', 0)} accepted, "
            f"{counts.get('refused', 0)} refused",
            file=sys.stderr,
        )
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
    created_after = _since(args.since) if args.since else None
    views: list[dict[str, Any]] = []
    cursor: str | None = args.cursor or None
    async with connect(args) as api:
        while True:
            page = await api.list_jobs(
                status=args.status or None,
                door=args.door,
                client_ref=args.client_ref or None,
                created_after=created_after,
                limit=args.limit,
                cursor=cursor,
            )
            views.extend(job.data for job in page.jobs)
            cursor = page.next_cursor
            if not (args.all and cursor):
                break
    jobs = views
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
    async with connect(args) as api:
        for job_id in args.job_ids:
            try:
                job = await api.cancel(job_id)
            except NotFound:
                status = EXIT_FAILED
                print(f"{job_id}: no such job", file=sys.stderr)
                continue
            except ApiError as exc:
                status = EXIT_FAILED
                print(f"{job_id}: cannot cancel: {exc.detail}", file=sys.stderr)
                continue
            state = job.status if job.ended else "cancelling (its worker is being stopped)"
            print(f"{job_id}: {state}")
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
    submit.add_argument(
        "files", nargs="+", metavar="FILE", help="PDFs, or folders (their .pdf files)"
    )
    submit.add_argument("--wait", action="store_true", help="wait, then print each text")
    submit.add_argument(
        "--out", metavar="DIR", help="wait, then write <name>.txt, .md, .json and artifacts here"
    )
    submit.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="jobs followed at once (default 4)"
    )
    submit.add_argument(
        "--batch-size",
        type=int,
        default=100,
        metavar="N",
        help="several files go as batches of up to N (default 100, the service's default limit)",
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
