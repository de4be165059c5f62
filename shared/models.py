"""Pydantic models: job options, job records and the messages that travel on the broker."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.intake.pages import parse_spec

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")

Output = Literal[
    "text", "markdown", "metadata", "page_images", "images", "tables", "blocks", "chunks", "llm"
]
OcrMode = Literal["auto", "always", "never"]

# The seed service's `extraction_method` values, mapped onto our options.
SEED_METHODS: dict[str, tuple[tuple[Output, ...], OcrMode]] = {
    "native": (("text", "metadata"), "never"),
    "tesseract_ocr": (("text", "metadata"), "always"),
    "both": (("text", "metadata"), "auto"),
    "preview": (("metadata", "page_images"), "never"),
    "preview_and_native": (("text", "metadata", "page_images"), "never"),
    # A vision model transcribes each page (README "LLM methods"): `llm` alone puts its
    # Markdown in the pages' `text`; with native or OCR text, that stays in `text` and the
    # model's goes to `llm`.
    "llm": (("llm", "metadata"), "never"),
    "llm_and_native": (("text", "llm", "metadata"), "never"),
    "llm_and_ocr": (("text", "llm", "metadata"), "always"),
}
LLM_OUTPUT: Output = "llm"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id(at: datetime | None = None) -> str:
    """32 hex digits, UUIDv7-like: the creation time `at` (default now) in milliseconds (12
    digits), then `7`, then 19 random digits. The time makes the record's own key its tenant's
    list index (shared/jobs/records.py `record_key`); `id_created_at` reads it back."""
    ms = int((at or datetime.now(UTC)).timestamp() * 1000) & (1 << 48) - 1
    return f"{ms:012x}7{uuid.uuid4().hex[:19]}"


def id_created_at(job_id: str) -> datetime | None:
    """The creation time a `new_job_id` id carries (to the ms); None for an id without one
    (the uuid4 ids of the previous layout have a `4` where these have their `7`)."""
    if len(job_id) != 32 or job_id[12] != "7":
        return None
    return datetime.fromtimestamp(int(job_id[:12], 16) / 1000, UTC)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChunkOptions(Frozen):
    """The `chunks` output's budget: `max_chars` (default 2000) or `max_tokens`, not both."""

    max_chars: Annotated[int, Field(ge=100, le=100_000)] | None = None
    max_tokens: Annotated[int, Field(ge=20, le=32_000)] | None = Field(
        default=None, description="Approximate tokens (shared/extraction/chunks.py)"
    )
    overlap: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Of the previous chunk, in the budget's unit, repeated in front"
    )

    @model_validator(mode="after")
    def _one_budget(self) -> ChunkOptions:
        if self.max_chars is not None and self.max_tokens is not None:
            raise ValueError("chunking takes max_chars or max_tokens, not both")
        budget = self.max_tokens if self.max_tokens is not None else self.budget
        if self.overlap * 2 > budget:
            raise ValueError("chunking.overlap must be at most half the budget")
        return self

    @property
    def budget(self) -> int:
        """The budget in its unit (characters unless `max_tokens` is set)."""
        if self.max_tokens is not None:
            return self.max_tokens
        return self.max_chars if self.max_chars is not None else 2000


class ExtractOptions(Frozen):
    """What to extract (CONTRACT.md `options`)."""

    outputs: tuple[Output, ...] = ("text", "metadata")
    pages: str | None = Field(default=None, description='Page ranges, 1-based: "1-3,7"')
    ocr: OcrMode = "auto"
    ocr_language: Annotated[str, Field(pattern=r"^[a-z_]{3,8}(\+[a-z_]{3,8})*$")] = "eng"
    image_dpi: Annotated[int, Field(ge=36, le=600)] = 150
    force_refresh: bool = False
    method: str | None = Field(default=None, description="Seed alias: native, tesseract_ocr, …")
    chunking: ChunkOptions = ChunkOptions()
    """Budget and overlap of the `chunks` output."""
    template: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] | None = Field(
        default=None,
        description="A language model transforms the document's text by this named template "
        "into `transformed.md` (README, LLM methods)",
    )
    context: dict[str, object] | None = Field(
        default=None, description="Values for the template's {{placeholders}}"
    )

    @field_validator("template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None and ".." in v:
            raise ValueError("template must be a plain name")
        return v

    @field_validator("outputs")
    @classmethod
    def _dedupe(cls, v: tuple[Output, ...]) -> tuple[Output, ...]:
        if not v:
            raise ValueError("outputs must not be empty")
        return tuple(dict.fromkeys(v))

    @field_validator("pages")
    @classmethod
    def _pages(cls, v: str | None) -> str | None:
        if v is None or v.strip() == "":
            return None
        parse_spec(v)  # linear and bounded (shared/intake/pages.py); raises PagesSpecError
        return v.replace(" ", "").replace("\t", "")

    @model_validator(mode="after")
    def _apply_method(self) -> ExtractOptions:
        if self.method is None:
            return self
        if self.method not in SEED_METHODS:
            raise ValueError(f"unknown method {self.method!r}; one of {sorted(SEED_METHODS)}")
        outputs, ocr = SEED_METHODS[self.method]
        asked = self.outputs
        if LLM_OUTPUT in outputs and "outputs" not in self.model_fields_set:
            asked = ()  # `llm` alone: the default `text` would make it `llm_and_native`
        merged = tuple(dict.fromkeys((*outputs, *asked)))
        object.__setattr__(self, "outputs", merged)
        object.__setattr__(self, "ocr", ocr)
        object.__setattr__(self, "method", None)
        return self


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobError(Frozen):
    code: str
    message: str


class Progress(Frozen):
    pages_done: int = 0
    pages_total: int | None = None


class Artifact(Frozen):
    name: str
    size: int
    sha256: str
    content_type: str = "application/octet-stream"
    url: str | None = None


class JobResultSummary(Frozen):
    page_count: int
    pages_extracted: int
    artifacts: tuple[Artifact, ...] = ()
    result_url: str | None = None
    warnings: tuple[str, ...] = ()
    cached: bool = False


class S3Source(Frozen):
    # What S3 (and MinIO) accept; anything else would fail inside the storage client.
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")] | None = None
    key: Annotated[str, Field(min_length=1, max_length=1024)]


class Source(Frozen):
    """Where the PDF comes from; exactly one of the fields."""

    s3: S3Source | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Source:
        if (self.s3 is None) == (self.url is None):
            raise ValueError("source needs exactly one of 's3' or 'url'")
        return self


class WebhookSpec(Frozen):
    """A webhook as the client gives it; `token` travels only in broker messages."""

    url: str
    token: str | None = Field(default=None, repr=False)
    progress: bool = False


TARGET_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
OUTPUT_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
MANIFEST = "manifest.json"
"""The last object a target receives: what was written, and the job's outcome."""
RESULT_OUTPUT = "result.json"
MAX_TARGET_URLS = 64


class TargetSpec(Frozen):
    """A result destination as the client names it (README "Result destinations"): one the
    operator configured (`name`), or presigned PUT `urls`, output name → URL (`manifest.json`
    required; `result.json` and the artifacts' names are written when given a URL)."""

    name: Annotated[str, Field(pattern=TARGET_NAME_RE)] | None = None
    urls: dict[str, str] | None = None

    @model_validator(mode="after")
    def _one(self) -> TargetSpec:
        if (self.name is None) == (self.urls is None):
            raise ValueError("target needs exactly one of 'name' or 'urls'")
        if self.urls is not None:
            if MANIFEST not in self.urls:
                raise ValueError(f"target urls need a {MANIFEST!r} entry (written last)")
            if len(self.urls) > MAX_TARGET_URLS:
                raise ValueError(f"target urls hold at most {MAX_TARGET_URLS} entries")
            bad = [k for k in self.urls if not re.fullmatch(OUTPUT_NAME_RE, k)]
            if bad:
                raise ValueError(f"target urls: {bad[0][:80]!r} is not an output name")
        return self


TargetState = Literal["pending", "delivered", "failed"]


class JobTarget(Frozen):
    """Where a job's outputs go once it ends, and how that went (`target` in the job's view)."""

    kind: Literal["destination", "presigned", "outbox"]
    """`outbox`: the object drop's own, `outbox/<name>…` beside the dropped name (the door
    names it; a client cannot)."""
    name: str | None = None
    """The operator's destination (kind `destination`)."""
    state: TargetState = "pending"
    error: JobError | None = None
    location: str | None = None
    """Where the outputs are: `s3://bucket/prefix{job_id}/`, the presigned URLs' host and path
    of the manifest (without the query: it holds the signature), or the outbox name the files
    share (`s3://bucket/outbox/<name>`)."""
    objects: int | None = None
    """Objects written, the manifest included."""
    settled_at: datetime | None = None
    urls: dict[str, str] | None = Field(default=None, repr=False)
    """Presigned PUT URLs (kind `presigned`): kept in the record only until the delivery is
    settled, never in a view, an event or a log."""


class WebhookState(BaseModel):
    state: Literal["pending", "delivered", "retrying", "dead"] = "pending"
    url: str
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    sealed: str | None = Field(default=None, exclude=True, repr=False)
    """The last terminal delivery, encrypted (shared/webhooks/sealing.py), for redelivery;
    never dumped."""


class LlmUsage(Frozen):
    """A job's vision-model work (the `llm` methods): calls made, pages from the page cache,
    and the tokens the model endpoint reported."""

    calls: int = 0
    cached_pages: int = 0
    tokens_in: int = 0
    tokens_out: int = 0


class Job(BaseModel):
    """The job record, stored at `jobs/{job_id}/record.json`; what GET /v1/jobs/{id} shows."""

    schema_: Literal["pdfrelay.job/1"] = Field(default="pdfrelay.job/1", alias="schema")
    job_id: str
    tenant: str = "default"
    status: JobStatus = JobStatus.QUEUED
    door: Literal["http", "broker", "object-drop", "seed"] = "http"
    filename: str | None = None
    client_ref: str | None = None
    options: ExtractOptions = ExtractOptions()
    source_key: str | None = None
    source_bucket: str | None = None
    source_url: str | None = None
    reply_to: str | None = None
    """AMQP reply queue of a broker request; the terminal outcome is also sent there."""
    correlation_id: str | None = None
    source_sha256: str | None = None
    source_size: int | None = None
    progress: Progress = Progress()
    error: JobError | None = None
    result: JobResultSummary | None = None
    webhook_url: str | None = None
    traceparent: str | None = None
    """W3C trace context the job was submitted in; its handlers continue that trace."""
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    pages_reserved: int | None = None
    """Pages this job holds of its tenant's page quota (shared/jobs/quota.py) until it ends."""
    llm: LlmUsage | None = None
    """Vision-model calls and tokens (the `llm` methods), once the job has ended."""
    result_key: str | None = None
    """Where its result document is stored when not at `results/{job_id}/result.json`: under
    its cache key, `results/c-{key}/{job_id}.json` (shared/jobs/cache.py); see `job_result_key`."""
    batch_id: str | None = None
    """The batch the job is an item of (`POST /v1/batches`, shared/jobs/batches.py)."""
    target: JobTarget | None = None
    """Where its outputs are written once it ends (shared/jobs/targets.py)."""

    model_config = ConfigDict(populate_by_name=True)


class DeliveryTask(Frozen):
    """On `pdfrelay.targets`: write the ended job's outputs and manifest to its target."""

    schema_: Literal["pdfrelay.delivery-task/1"] = Field(
        default="pdfrelay.delivery-task/1", alias="schema"
    )
    job_id: Annotated[str, Field(pattern=JOB_ID_RE.pattern)]
    tenant: str = "default"

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ExtractTask(Frozen):
    """The message on the extract queue: one job (or, later, one page range of it)."""

    schema_: Literal["pdfrelay.extract-task/1"] = Field(
        default="pdfrelay.extract-task/1", alias="schema"
    )
    job_id: str
    tenant: str = "default"
    webhook: WebhookSpec | None = None
    first: Annotated[int, Field(ge=1)] | None = None
    """A range task: its first page (1-based); None for a whole job."""
    last: Annotated[int, Field(ge=1)] | None = None
    parts: Annotated[int, Field(ge=1)] | None = None
    """How many range tasks the job was split into (range and merge tasks)."""
    job: Job | None = None
    """The job's record as it was accepted: the extract handler starts from it instead of
    reading the record (None in tasks of older versions and range/merge tasks: it reads)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class PageText(Frozen):
    number: int
    text: str
    ocr: bool = False
    ocr_unavailable: bool = False
    """`ocr: auto` found the page needs OCR, but this worker has none: `text` is its text layer."""
    llm: str | None = None
    """The model's Markdown of the page (output `llm`); also `text` when no `text` was asked."""


class MarkdownPage(Frozen):
    """Where one page's Markdown is in the result's `markdown`: `markdown[start:end]`, offsets
    in characters (Unicode code points); start == end for a page with no Markdown."""

    number: int
    start: int
    end: int


class ExtractionResult(BaseModel):
    """The document stored at `results/{job_id}/result.json` (GET /v1/jobs/{id}/result)."""

    schema_: Literal["pdfrelay.result/1"] = Field(default="pdfrelay.result/1", alias="schema")
    job_id: str | None = None
    page_count: int
    pages: list[PageText] = []
    markdown: str | None = None
    markdown_pages: list[MarkdownPage] | None = None
    """Each page's part of `markdown`, in page order (None: not known, e.g. a result stored
    before it was added)."""
    metadata: dict[str, object] | None = None
    tables: list[dict[str, object]] | None = None
    transformed: str | None = None
    """The document transformed by `options.template` (also the artifact `transformed.md`)."""
    warnings: list[str] = []

    model_config = ConfigDict(populate_by_name=True)


class WebhookDelivery(Frozen):
    """One webhook event on the dispatch queue; `body` is signed byte for byte on every attempt."""

    schema_: Literal["pdfrelay.webhook-delivery/1"] = Field(
        default="pdfrelay.webhook-delivery/1", alias="schema"
    )
    event_id: str
    job_id: str
    event_type: str
    url: str
    token: str | None = Field(default=None, repr=False)
    body: str

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class WebhookStateUpdate(Frozen):
    """One job's webhook state after an attempt, with the delivery sealed for redelivery."""

    job_id: Annotated[str, Field(pattern=JOB_ID_RE.pattern)]
    state: WebhookState
    sealed: str | None = Field(default=None, repr=False)


class WebhookStateBatch(Frozen):
    """Webhook states on `pdfrelay.webhooks.states`, oldest first (shared/webhooks/statelog.py)."""

    schema_: Literal["pdfrelay.webhook-states/1"] = Field(
        default="pdfrelay.webhook-states/1", alias="schema"
    )
    updates: list[WebhookStateUpdate] = Field(min_length=1)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class WebhookRedeliver(Frozen):
    """A request to re-send a finished job's terminal webhook (same webhook-id and body)."""

    schema_: Literal["pdfrelay.webhook-redeliver/1"] = Field(
        default="pdfrelay.webhook-redeliver/1", alias="schema"
    )
    job_id: Annotated[str, Field(pattern=JOB_ID_RE.pattern)]

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ExtractRequest(BaseModel):
    """ExtractRequest v1: what other services publish on `pdfrelay.requests` (routing key
    `extract`). The AMQP `message_id` is the idempotency key; `reply_to`/`correlation_id` are
    honoured."""

    schema_: Literal["pdfrelay.extract-request/1"] = Field(alias="schema")
    source: Source
    options: ExtractOptions = ExtractOptions()
    webhook: WebhookSpec | None = None
    client_ref: Annotated[str, Field(max_length=512)] | None = None
    target: TargetSpec | None = None
    """Where the outputs go once the job ends (README "Result destinations")."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


LlmStep = Literal["page", "transform", "progress", "merge", "failed", "cancelled"]


class LlmTask(Frozen):
    """A job's language-model work (README "LLM methods"). On `pdfrelay.llm`: one page (`step`
    "page") or the template's transformation ("transform"); on `pdfrelay.llm.merge`: all of it
    is there ("merge"), or a step ended it ("failed" with `error`, "cancelled"), or the pages
    done so far go into the record ("progress", `done`)."""

    schema_: Literal["pdfrelay.llm-task/1"] = Field(default="pdfrelay.llm-task/1", alias="schema")
    job_id: Annotated[str, Field(pattern=JOB_ID_RE.pattern)]
    tenant: str = "default"
    webhook: WebhookSpec | None = None
    step: LlmStep = "page"
    pages: Annotated[int, Field(ge=0)]
    """How many pages of the job go to the model (0: only its template)."""
    page: Annotated[int, Field(ge=1)] | None = None
    image_key: str | None = None
    image_sha256: str | None = None
    error: JobError | None = None
    done: Annotated[int, Field(ge=0)] | None = None
    """Pages with their part (step "progress")."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
