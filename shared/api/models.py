"""The HTTP API's request and response bodies as pydantic models, for the OpenAPI document.

Where the service already has a model (options, progress, results, webhook state) it is used
as is; these add the shapes that the handlers build as dicts: the public job view, errors,
submissions, the seed-compatible envelopes. `tests/integration/test_observability.py` checks
real answers against them, so a field added to an answer without being added here fails a test.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import ErrorCode
from shared.models import (
    ExtractOptions,
    JobError,
    JobResultSummary,
    JobStatus,
    LlmUsage,
    Progress,
    Source,
    TargetSpec,
    TargetState,
    WebhookSpec,
    WebhookState,
)

Door = Literal["http", "broker", "object-drop", "seed"]
SeedMethod = Literal[
    "native",
    "tesseract_ocr",
    "both",
    "preview",
    "preview_and_native",
    "llm",
    "llm_and_native",
    "llm_and_ocr",
]


class ApiModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


# --- errors ------------------------------------------------------------------------------------


class ErrorDetail(ApiModel):
    code: ErrorCode = Field(description="Stable, machine-readable error code.")
    message: str = Field(description="For people; never contains a path or a traceback.")


class ErrorBody(ApiModel):
    """Every error answer of `/v1`: `{"error": {"code": "…", "message": "…"}}`."""

    error: ErrorDetail


# --- jobs --------------------------------------------------------------------------------------


class JobLinks(ApiModel):
    self_: str = Field(alias="self", description="This job.")
    result: str = Field(description="The extraction result (once completed).")
    events: str = Field(description="Server-Sent Events of this job.")


class TargetView(ApiModel):
    """Where a job's outputs were written once it ended (README "Result destinations")."""

    kind: Literal["destination", "presigned", "outbox"] = Field(
        description="`outbox`: a dropped file's (the object drop names it for its jobs)."
    )
    name: str | None = Field(default=None, description="The operator's destination.")
    state: TargetState = Field(
        description="`pending` until written (then `job.delivered`), `failed` once given up on "
        "(then `job.delivery_failed`; the job stays completed)."
    )
    error: JobError | None = None
    location: str | None = Field(
        default=None,
        description="`s3://bucket/prefix{job_id}/`, the manifest URL without its query, or "
        "the outbox name the files share (`s3://bucket/outbox/<name>`).",
    )
    objects: int | None = Field(default=None, description="Objects written, the manifest too.")
    settled_at: datetime | None = None


TARGET_FIELD = (
    'Result destination, JSON: {"name": "<destination>"} (configured by the operator for your '
    'tenant) or {"urls": {"manifest.json": "<presigned PUT URL>", "result.json": "…", '
    '"<artifact>": "…"}}.'
)


class JobView(ApiModel):
    """A job as `GET /v1/jobs/{job_id}` shows it (and the body of events and webhooks)."""

    job_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    status: JobStatus
    door: Door = Field(description="How the job came in.")
    filename: str | None = None
    client_ref: str | None = Field(default=None, description="Echoed as the client gave it.")
    options: ExtractOptions
    progress: Progress
    error: JobError | None = Field(default=None, description="Set when the job failed.")
    result: JobResultSummary | None = Field(
        default=None, description="Set when the job completed: page count and artifacts."
    )
    llm: LlmUsage | None = Field(
        default=None, description="Vision-model calls and tokens (llm methods), once ended."
    )
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    links: JobLinks
    webhook: WebhookState | None = Field(
        default=None, description="Delivery state when the job has a webhook."
    )
    batch_id: str | None = Field(
        default=None, description="The batch the job is an item of (`POST /v1/batches`)."
    )
    target: TargetView | None = Field(
        default=None, description="Where its outputs go, and how that went, when it named one."
    )
    queue_position: int | None = Field(
        default=None,
        description="`GET /v1/jobs/{job_id}` of a queued job: jobs ahead of it (estimate).",
    )
    eta_s: float | None = Field(
        default=None,
        description="`GET /v1/jobs/{job_id}` of an unfinished job: seconds until it ends, "
        "from the measured pages per second (rough; null when unknown).",
    )


class JobList(ApiModel):
    """A page of the tenant's jobs, newest first."""

    jobs: list[JobView]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last one."
    )


class JobSubmission(ApiModel):
    """`POST /v1/jobs` as `application/json`: a PDF the service fetches itself."""

    source: Source
    options: ExtractOptions | None = None
    webhook: WebhookSpec | None = Field(
        default=None,
        description="Signed callback on the terminal event (and progress when asked for).",
    )
    client_ref: str | None = None
    target: TargetSpec | None = Field(default=None, description=TARGET_FIELD)


class UploadForm(ApiModel):
    """`POST /v1/jobs` as `multipart/form-data`: the PDF itself."""

    file: bytes = Field(description="The PDF; streamed, size and `%PDF-` checked on arrival.")
    options: str | None = Field(
        default=None, description='ExtractOptions as JSON text, e.g. {"outputs": ["text"]}.'
    )
    webhook_url: str | None = None
    webhook_token: str | None = Field(
        default=None, description="Sent back as `Authorization: Bearer` on callbacks."
    )
    webhook_progress: bool | None = Field(default=None, description="Also send job.progress.")
    client_ref: str | None = None
    target: str | None = Field(default=None, description=TARGET_FIELD)


# --- batches -----------------------------------------------------------------------------------


class BatchUploadForm(ApiModel):
    """`POST /v1/batches`: many PDFs in one multipart request, each checked as single uploads."""

    file: list[bytes] = Field(description="One `file` part per PDF, in order; streamed.")
    options: str | None = Field(default=None, description="ExtractOptions as JSON, for every item.")
    client_refs: str | None = Field(
        default=None,
        description="JSON array, one `client_ref` (string or null) per file, in the files' order.",
    )
    webhook_url: str | None = Field(
        default=None, description="`batch.completed` is sent here once, when the last item ends."
    )
    webhook_token: str | None = Field(
        default=None, description="Sent back as `Authorization: Bearer` with `batch.completed`."
    )
    target: str | None = Field(default=None, description=f"For every item. {TARGET_FIELD}")


class BatchSourceItem(ApiModel):
    """One item of a JSON batch: a source, and what differs from the batch's settings."""

    source: Source
    options: dict[str, Any] | None = Field(
        default=None,
        description="Overrides of the batch's `options`, key by key (e.g. other `outputs`).",
    )
    client_ref: str | None = None
    target: TargetSpec | None = Field(default=None, description="Instead of the batch's.")


class BatchPrefix(ApiModel):
    bucket: str | None = Field(
        default=None,
        description="A bucket `PDFRELAY_SOURCE_BUCKETS` allows the tenant; default the "
        "service's (never its own keys).",
    )
    prefix: str = Field(default="", description="Every key under it ending in `.pdf` (any case).")


class BatchSubmission(ApiModel):
    """`POST /v1/batches` as `application/json`: sources the service fetches itself — `items`,
    or every PDF under an S3 `prefix` — with shared `options`, `webhook` and `target`."""

    items: list[BatchSourceItem] | None = Field(
        default=None, description="Exactly one of `items` and `prefix`."
    )
    prefix: BatchPrefix | None = None
    options: ExtractOptions | None = None
    webhook: WebhookSpec | None = Field(
        default=None, description="`batch.completed` is sent here once, when the last item ends."
    )
    target: TargetSpec | None = Field(default=None, description=f"For every item. {TARGET_FIELD}")


class BatchCounts(ApiModel):
    total: int
    refused: int = Field(description="Refused at the door (no job).")
    accepted: int
    pending: int = Field(description="Accepted, not ended (queued or processing).")
    completed: int
    failed: int
    cancelled: int


class BatchProgress(ApiModel):
    """Pages over the batch's items whose page count is known."""

    pages_done: int = Field(
        description="Pages of the ended items (all of each) and pages done of the running ones."
    )
    pages_total: int = Field(description="The page counts of the same items.")
    items_counted: int = Field(
        description="How many accepted items these pages cover: the ended ones and those "
        "running (the first items not ended, as queued); items still queued have no page count "
        "yet, so `pages_total` grows while they start."
    )


class BatchItemView(ApiModel):
    index: int = Field(description="The file's place in the request (0-based).")
    filename: str | None = None
    client_ref: str | None = None
    job_id: str | None = Field(default=None, description="Null when the item was refused.")
    status: Literal["refused", "queued", "processing", "completed", "failed", "cancelled"]
    error: ErrorDetail | None = Field(
        default=None, description="Why it was refused, or why its job failed."
    )


class BatchView(ApiModel):
    """A batch: counts by status, and a page of its items (`GET /v1/batches/{batch_id}`)."""

    batch_id: str
    status: Literal["accepting", "processing", "completed"]
    created_at: datetime
    completed_at: datetime | None = None
    counts: BatchCounts
    progress: BatchProgress
    links: dict[str, str]
    webhook: WebhookState | None = None
    items: list[BatchItemView]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page of items; null at the end."
    )
    eta_s: float | None = Field(
        default=None,
        description="`GET /v1/batches/{batch_id}`: seconds until its last item is expected to "
        "end, at the batch's own pace so far (else the measured speed); null when nothing is "
        "pending or nothing is known yet. Rough.",
    )


class BatchRefusalDetail(ErrorDetail):
    items: list[BatchItemView] = Field(
        default_factory=list, description="`BATCH_REFUSED`: every file, with why it was refused."
    )


class BatchRefusal(ApiModel):
    """A 422: `BATCH_REFUSED` (no file was accepted; `error.items` says why, each), or options
    or a webhook URL that do not validate."""

    error: BatchRefusalDetail


# --- operations --------------------------------------------------------------------------------


class Health(ApiModel):
    status: Literal["ok"]


class Readiness(ApiModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description='Per dependency: "ok" or what is wrong.')


# --- seed (Secretary) compatibility -----------------------------------------------------------


class SeedForm(ApiModel):
    """The Secretary's form fields; every one of them takes effect."""

    extraction_method: SeedMethod | None = "native"
    page_start: Annotated[int, Field(ge=1)] | None = None
    page_end: Annotated[int, Field(ge=1)] | None = None
    includeImages: bool | None = None
    useCache: bool | None = None
    force_refresh: bool | None = None
    callback_url: str | None = None
    callback_token: str | None = None
    jobId: str | None = None
    template: str | None = Field(
        default=None, description="A named template: the answer's `transformed_text`."
    )
    context: str | None = Field(
        default=None, description="A JSON object for the template's {{placeholders}}."
    )
    wait_ms: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Wait up to this long (capped) and answer the result."
    )


class SeedUploadForm(SeedForm):
    file: bytes


class SeedUrlForm(SeedForm):
    url: str


class SeedProcess(ApiModel):
    model_config = ConfigDict(extra="allow")

    id: str
    main_processor: Literal["pdf"]
    started: datetime | None = None
    completed: datetime | None = None
    duration_ms: int | None = None


class SeedJobRef(ApiModel):
    id: str


class SeedWebhookRef(ApiModel):
    delivered_to: str


class SeedAcknowledgement(ApiModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["accepted"]
    worker: str
    process: SeedProcess
    job: SeedJobRef
    webhook: SeedWebhookRef | None = None
    error: None = None


class SeedOutcome(ApiModel):
    """The seed's terminal payload (also its webhook body): `completed` or `error`."""

    model_config = ConfigDict(extra="allow")

    status: Literal["completed", "error"]
    worker: str
    jobId: str
    process: SeedProcess
    data: dict[str, Any] | None = None
    error: ErrorDetail | None = None


class SeedEnvelope(ApiModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["success"]
    data: dict[str, Any]


class SeedError(ApiModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["error"]
    worker: str | None = None
    error: ErrorDetail


class SeedPending(ApiModel):
    status: Literal["processing"]
    message: str
