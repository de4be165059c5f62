"""The page-preview RPC between the ingress (asks) and the extract side (renders)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.models import Frozen


def preview_key(job_id: str, page: int, width: int) -> str:
    """Where a rendered preview is kept (under the job's results: retention removes it too)."""
    return f"results/{job_id}/previews/page-{page:05d}-w{width}.png"


class PreviewRequest(Frozen):
    """Render one page of a job's stored source at a width; reply to `reply_to`."""

    schema_: Literal["pdfrelay.preview-request/1"] = Field(
        default="pdfrelay.preview-request/1", alias="schema"
    )
    job_id: str
    source_key: str
    source_bucket: str | None = None
    page: int = Field(ge=1)
    width: int = Field(ge=1)


class PreviewReply(Frozen):
    """The outcome: the PNG is stored at `preview_key(...)`, or an error code and message."""

    schema_: Literal["pdfrelay.preview-reply/1"] = Field(
        default="pdfrelay.preview-reply/1", alias="schema"
    )
    ok: bool
    code: str | None = None
    message: str | None = None
