"""The HTTP API's query parameters, parsed into the core's values; a malformed one is a
`400 INVALID_REQUEST` that says what it should be."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import get_args

from shared.errors import ErrorCode, PermanentError
from shared.intake.submit import Door
from shared.jobs.listing import MAX_LIMIT, JobFilter
from shared.models import JobStatus

DEFAULT_LIMIT = 20


@dataclass(frozen=True)
class ListQuery:
    """`GET /v1/jobs`'s `status`, `door`, `client_ref`, `created_after`, `limit`, `cursor`."""

    filter: JobFilter
    limit: int
    cursor: str | None


def list_query(query: Mapping[str, str]) -> ListQuery:
    """The list's filter and page from the request's query.

    Raises:
        PermanentError: a parameter is malformed (INVALID_REQUEST).
    """
    flt = JobFilter(
        statuses=_statuses(query.get("status")),
        door=_door(query.get("door")),
        client_ref=query.get("client_ref") or None,
        created_after=_timestamp(query.get("created_after")),
    )
    return ListQuery(flt, _limit(query.get("limit")), query.get("cursor") or None)


def _statuses(raw: str | None) -> frozenset[JobStatus]:
    if not raw:
        return frozenset()
    try:
        return frozenset(JobStatus(s.strip()) for s in raw.split(",") if s.strip())
    except ValueError as exc:
        raise PermanentError(
            f"status must be one or more of {', '.join(s.value for s in JobStatus)}",
            ErrorCode.INVALID_REQUEST,
        ) from exc


def _door(raw: str | None) -> str | None:
    if not raw:
        return None
    doors = get_args(Door)
    if raw not in doors:
        raise PermanentError(f"door must be one of {', '.join(doors)}", ErrorCode.INVALID_REQUEST)
    return raw


def _timestamp(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        at = datetime.fromisoformat(raw.strip().replace(" ", "+"))
    except ValueError as exc:
        raise PermanentError(
            "created_after must be an ISO 8601 time, e.g. 2024-05-01T12:00:00Z",
            ErrorCode.INVALID_REQUEST,
        ) from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _limit(raw: str | None) -> int:
    if not raw:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise PermanentError(
            f"limit must be a whole number from 1 to {MAX_LIMIT}", ErrorCode.INVALID_REQUEST
        )
    return int(raw)
