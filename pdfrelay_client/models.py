"""What the client hands back: jobs as the service shows them, pages of jobs, source and hook specs.

The fields a caller branches on are typed attributes; the whole answer stays in `Job.data`
(the service adds fields over time, and this client need not know them to pass them on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pdfrelay_client.errors import ErrorCode, as_code

TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class JobErrorInfo:
    """Why a job failed: the service's stable code and a message for people."""

    code: ErrorCode | str
    message: str


@dataclass(frozen=True)
class Artifact:
    """One downloadable output of a completed job (`Client.artifact(job, name)`)."""

    name: str
    size: int | None
    sha256: str | None
    content_type: str | None


@dataclass(frozen=True)
class Job:
    """A job as `GET /v1/jobs/{job_id}` shows it."""

    job_id: str
    status: str
    """`queued`, `processing`, `completed`, `failed` or `cancelled`."""
    pages_done: int = 0
    pages_total: int | None = None
    error: JobErrorInfo | None = None
    client_ref: str | None = None
    artifacts: tuple[Artifact, ...] = ()
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The whole answer of the service."""

    @property
    def ended(self) -> bool:
        """Whether the job reached `completed`, `failed` or `cancelled`."""
        return self.status in TERMINAL

    @property
    def target(self) -> dict[str, Any] | None:
        """Its result destination and how the delivery went (`state`: `pending`, `delivered`
        or `failed`, `error`, `location`), when it named one."""
        target = self.data.get("target")
        return target if isinstance(target, dict) else None

    @classmethod
    def from_view(cls, view: dict[str, Any]) -> Job:
        progress = view.get("progress") or {}
        err = view.get("error")
        result = view.get("result") or {}
        return cls(
            job_id=str(view["job_id"]),
            status=str(view["status"]),
            pages_done=int(progress.get("pages_done") or 0),
            pages_total=progress.get("pages_total"),
            error=_error_of(err),
            client_ref=view.get("client_ref"),
            artifacts=tuple(
                Artifact(str(a["name"]), a.get("size"), a.get("sha256"), a.get("content_type"))
                for a in result.get("artifacts") or ()
                if isinstance(a, dict) and "name" in a
            ),
            data=view,
        )


@dataclass(frozen=True)
class JobPage:
    """One page of `GET /v1/jobs`, newest first; `next_cursor` is None on the last page."""

    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True)
class S3Object:
    """An object the service fetches itself (the bucket must be allowed for the tenant)."""

    bucket: str
    key: str


@dataclass(frozen=True)
class Webhook:
    """A signed callback on the job's end (`progress`: also progress events, best effort)."""

    url: str
    token: str | None = None
    progress: bool = False


def _error_of(raw: Any) -> JobErrorInfo | None:
    if not isinstance(raw, dict):
        return None
    return JobErrorInfo(as_code(str(raw.get("code", ""))), str(raw.get("message", "")))


@dataclass(frozen=True)
class BatchItem:
    """One file of a batch: its job, or (status ``refused``) why it has none."""

    index: int
    status: str
    """``refused``, ``queued``, ``processing``, ``completed``, ``failed`` or ``cancelled``."""
    job_id: str | None = None
    filename: str | None = None
    client_ref: str | None = None
    error: JobErrorInfo | None = None

    @property
    def refused(self) -> bool:
        return self.status == "refused"

    @classmethod
    def from_view(cls, view: dict[str, Any]) -> BatchItem:
        return cls(
            index=int(view["index"]),
            status=str(view["status"]),
            job_id=view.get("job_id"),
            filename=view.get("filename"),
            client_ref=view.get("client_ref"),
            error=_error_of(view.get("error")),
        )


@dataclass(frozen=True)
class Batch:
    """A batch as `GET /v1/batches/{batch_id}` shows it, with one page of its items."""

    batch_id: str
    status: str
    """``accepting``, ``processing`` or ``completed`` (every accepted item ended)."""
    counts: dict[str, int]
    """``total``, ``refused``, ``accepted``, ``pending``, ``completed``, ``failed``,
    ``cancelled``."""
    items: tuple[BatchItem, ...] = ()
    next_cursor: str | None = None
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    progress: dict[str, int] = field(default_factory=dict)
    """``pages_done``, ``pages_total`` and ``items_counted`` (the items whose page count is
    known); empty from a service of the version before."""

    @property
    def refused(self) -> list[BatchItem]:
        """The refused items of this page (all of them in `submit_batch`'s answer)."""
        return [i for i in self.items if i.refused]

    @classmethod
    def from_view(cls, view: dict[str, Any]) -> Batch:
        return cls(
            batch_id=str(view["batch_id"]),
            status=str(view["status"]),
            counts={k: int(v) for k, v in (view.get("counts") or {}).items()},
            items=tuple(BatchItem.from_view(i) for i in view.get("items") or ()),
            next_cursor=view.get("next_cursor"),
            data=view,
            progress={k: int(v) for k, v in (view.get("progress") or {}).items()},
        )


@dataclass(frozen=True)
class BatchResult:
    """What became of one file of a batch (`iter_results`)."""

    item: BatchItem
    job: Job | None = None
    """The job as it ended; None when the item was refused."""
    result: dict[str, Any] | None = None
    """The extraction result, when the job completed."""

    @property
    def error(self) -> JobErrorInfo | None:
        """Why the item was refused or its job failed (None when it completed)."""
        return self.item.error if self.job is None else self.job.error
