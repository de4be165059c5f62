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
            error=(
                JobErrorInfo(as_code(str(err.get("code", ""))), str(err.get("message", "")))
                if isinstance(err, dict)
                else None
            ),
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
