"""Settings: one pydantic-settings model, read once at the entry point and passed down."""

from __future__ import annotations

import os
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.webhooks.retry import parse_schedule

METRICS_PORTS = {"extract": 9100, "webhooks": 9101, "object-drop": 9102, "llm": 9103}
"""The default metrics port of each handler without HTTP (PDFRELAY_METRICS_PORT unset)."""

DEFAULT_LLM_PROMPT = (
    "Transcribe this page of a PDF document into Markdown, faithfully and completely: keep the "
    "text word for word in its reading order, headings as Markdown headings, lists as lists, "
    "tables as Markdown tables. Describe figures in one short sentence in square brackets. "
    "Answer with the Markdown of the page only, no comments and no code fences."
)
"""The prompt sent with each page image when PDFRELAY_LLM_PROMPT is unset."""


class TargetConfig(BaseModel):
    """One result destination an operator configured (`PDFRELAY_TARGETS`): a bucket and a key
    prefix, on the service's own S3 server and credentials unless `endpoint`/keys are given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: Annotated[str, Field(max_length=512)] = ""
    endpoint: str | None = None
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    region: str | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v.startswith("/") or ".." in v.split("/") or any(ord(c) < 0x20 for c in v):
            raise ValueError("a target prefix is a relative key prefix (no leading '/', no '..')")
        return v


class Settings(BaseSettings):
    """Every `PDFRELAY_*` environment variable (CONTRACT.md, Settings)."""

    # The docstrings under the fields are their descriptions: README's settings table is made
    # of them (`python -m infra.settings_doc --write`, `make settings-doc`).
    model_config = SettingsConfigDict(
        env_prefix="PDFRELAY_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    """RabbitMQ; the nodes of a cluster comma-separated (`amqp://…:5672/,amqp://…:5673/`):
    tried in turn, at start and on every reconnect."""
    quorum_group_size: int | None = Field(default=None, ge=1, le=99)
    """Replicas of each quorum queue (`x-quorum-initial-group-size`) when declared; unset: the
    broker's default (every node of the cluster, one on a single node)."""
    namespace: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")] = "pdfrelay"
    """Prefix of every exchange and queue name; tests use their own."""

    s3_endpoint: str | None = None
    """The S3 server, e.g. `http://127.0.0.1:9000`; unset: `pdfrelay dev` embeds one (moto)."""
    s3_access_key: SecretStr = SecretStr("pdfrelay")
    """S3 credentials (the defaults are the embedded server's)."""
    s3_secret_key: SecretStr = SecretStr("pdfrelay-secret")
    """S3 credentials (the defaults are the embedded server's)."""
    s3_bucket: str = "pdfrelay"
    """The bucket of uploads, results, job records (created when missing)."""
    s3_region: str = "us-east-1"
    """S3 region."""

    http_host: str = "127.0.0.1"
    """Ingress bind address (and of the other handlers' metrics port)."""
    http_port: int = 8080
    """Ingress port."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """`/metrics`, `/healthz`, `/readyz` of `pdfrelay run` handlers other than the ingress;
    unset: each its own (METRICS_PORTS), so handlers side by side on one host do not clash."""
    log_format: Literal["json", "text"] | None = None
    """Log lines as JSON objects or text; default json for `pdfrelay run`, text otherwise."""
    public_base_url: str | None = None
    """Base of the download links in job records; defaults to http://{host}:{port}."""
    api_keys: SecretStr | None = None
    """`tenant:key,tenant2:key2`; when set every /v1 call needs a bearer key."""

    webhook_secret: SecretStr | None = None
    """`whsec_…` signing secret; several, space-separated, while rotating. Required by `run
    webhooks`; `pdfrelay dev` generates one per start when unset."""
    webhook_retry_schedule: str = "5s,5m,30m,2h,5h,10h,10h"
    """Delays between delivery attempts; after the last, `pdfrelay.webhooks.dead`."""
    webhook_allowed_networks: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = ()
    """CIDRs exempt from the SSRF block (webhooks and URL sources), comma-separated."""
    webhook_timeout_s: float = 15.0
    """Time limit of one webhook delivery attempt."""
    webhook_prefetch: int = Field(default=64, ge=1, le=4096)
    """Deliveries in flight per webhooks process (consumer prefetch = HTTP connections)."""
    webhook_state_writers: int = Field(default=4, ge=1, le=64)
    """S3 writes of delivery states in flight; they run behind the deliveries, not with them."""

    extract_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    """Concurrent extractions (worker processes); consumer prefetch is this + 1."""
    progress_after_s: float = Field(default=2.0, ge=0)
    """A job's record says `processing` (and `job.progress` events start) only once it has run
    this long: a short job costs no record write and no event between queued and its end."""
    worker_nice: int = Field(default=10, ge=0, le=19)
    """CPU niceness added to extraction worker processes (0-19), so the ingress and the handlers
    on the same host stay responsive while every worker is busy; 0: same priority."""
    extract_delivery_limit: int = Field(default=3, ge=1, le=100)
    """Attempts before a crashing task is dead-lettered."""
    max_queue_length: int = Field(default=10_000, ge=1)
    """Beyond it uploads get `503 QUEUE_FULL`."""
    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    """Largest PDF accepted (200 MiB), checked while the upload streams."""
    max_batch_items: int = Field(default=100, ge=1, le=10_000)
    """Files one `POST /v1/batches` may hold (413 BATCH_TOO_LARGE beyond it)."""
    max_batch_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)
    """Bytes of all files of one batch together (1 GiB; 413 BATCH_TOO_LARGE beyond it)."""
    batch_accept_deadline_s: float = Field(default=900.0, gt=0)
    """A batch still being queued this long after its record was written (its ingress died
    meanwhile) is opened as it stands: the items never queued are refused (README "Batches")."""
    max_pages: int = Field(default=5_000, ge=1)
    """`TOO_MANY_PAGES` beyond it."""
    max_inflated_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024 * 1024)
    """Bytes a document's Flate streams may inflate to in all; beyond it the job fails
    `DECOMPRESSION_LIMIT`."""
    fanout_min_pages: int = Field(default=400, ge=1)
    """Documents with more pages than this are split into page ranges when no other document
    waits for a worker and their extraction is long enough (`fanout_min_cpu_s`; README
    "Fan-out")."""
    fanout_min_cpu_s: float = Field(default=2.0, ge=0)
    """A document over `fanout_min_pages` is split only when one worker would spend at least
    this many CPU seconds on it: OCR is to run, or the text of sampled pages, scaled to its page
    count, takes that long (a text-only manual of ~1,600 pages here). 0: every such document."""
    fanout_range_pages: int = Field(default=100, ge=1)
    """Pages per range task of a fanned-out document."""
    job_timeout_s: float = Field(default=600.0, gt=0, le=1500)
    """Per job, well under RabbitMQ's 30-minute consumer timeout."""
    worker_memory_mb: int = Field(default=2048, ge=64)
    """Address-space limit of each worker process."""
    worker_max_jobs: int = Field(default=50, ge=1)
    """Documents one worker process extracts before it is replaced (sooner after any failure)."""
    max_wait_s: float = Field(default=60.0, ge=0)
    """Cap of `GET /v1/jobs/{id}?wait=`."""
    preview_max_width: int = Field(default=2000, ge=64, le=8000)
    """Widest page preview (pixels) `GET /v1/jobs/{id}/pages/{n}/preview?width=` renders."""
    preview_timeout_s: float = Field(default=20.0, gt=0, le=30)
    """How long the ingress waits for a worker to render a preview before 503 + Retry-After."""
    tenant_page_quota: int | None = Field(default=None, ge=1)
    """Pages in flight (accepted, not ended) per tenant before uploads get 429 QUOTA_EXCEEDED."""
    retention_days: float = Field(default=30.0, ge=0)
    """Jobs (record, upload, results) are deleted this long after they ended; 0 keeps them."""
    sweep_interval_s: float = Field(default=3600.0, gt=0)
    """How often the ingress deletes the jobs past `retention_days`."""
    transient_backoff_s: float = Field(default=5.0, gt=0)
    """Wait after a transient failure (storage or broker away) before a message is retried."""
    transient_retry_budget: int = Field(default=120, ge=0)
    """Transient failures of one message before it is dead-lettered (120 x 5 s = 10 min)."""
    source_buckets: dict[str, tuple[str, ...]] = {}
    """JSON tenant → buckets its `source.s3` may name ("*": every tenant); default none. The
    service's own `uploads/ jobs/ results/ index/ inflight/` keys are never a source."""
    targets: dict[str, dict[str, TargetConfig]] = {}
    """JSON tenant → {name → {"bucket", "prefix", "endpoint", "access_key", "secret_key",
    "region"}}: the result destinations a job or batch may name as `target.name` (README "Result
    destinations"); a tenant names only its own. Without `endpoint` and keys: the service's own
    S3 server and credentials."""
    max_json_bytes: int = Field(default=256 * 1024, ge=1024)
    """Largest JSON request body (413 REQUEST_TOO_LARGE)."""
    max_form_fields: int = Field(default=16, ge=1, le=1000)
    """Form fields (besides `file`) a multipart upload may have."""
    max_form_field_bytes: int = Field(default=64 * 1024, ge=256)
    """Largest form field of a multipart upload (the `file` part excepted)."""
    upload_idle_timeout_s: float = Field(default=30.0, gt=0)
    """A request body that sends nothing for this long is cut off with 408 REQUEST_TIMEOUT."""
    pagecount_timeout_s: float = Field(default=10.0, gt=0)
    """Time limit of the child process that counts an upload's pages (then: charged max_pages)."""
    source_timeout_s: float = Field(default=60.0, gt=0)
    """Time limit for fetching a URL source."""
    object_drop_poll_s: float | None = Field(default=None, gt=0)
    """List `inbox/` this often, for S3 servers without bucket notifications (also `run
    object-drop --poll`)."""
    tessdata_dir: str | None = None
    """Tesseract language data folder; unset: $TESSDATA_PREFIX or the Debian/Ubuntu locations.
    Without it `ocr: auto` keeps the text layer (a warning and `ocr_unavailable: true` per
    page) and `ocr: always` fails `OCR_UNAVAILABLE`."""
    spool_dir: str | None = None
    """Temp folder of uploads on their way to S3 and of extractions; unset: the system's."""
    llm_base_url: str | None = None
    """OpenAI-compatible chat-completions API of the `llm` methods (OpenAI, vLLM, Ollama,
    LiteLLM…), e.g. `https://api.openai.com/v1` (`/chat/completions` is appended); unset: jobs
    asking for them get `422 LLM_NOT_CONFIGURED`."""
    llm_model: str = "gpt-4o-mini"
    """The vision model the page images are sent to."""
    llm_api_key: SecretStr | None = None
    """Sent as `Authorization: Bearer …` to the model endpoint; never logged or shown."""
    llm_timeout_s: float = Field(default=120.0, gt=0, le=1500)
    """Time limit of one model call (one page)."""
    llm_prompt: str = Field(default=DEFAULT_LLM_PROMPT, min_length=1)
    """The instruction sent with each page image."""
    llm_concurrency: int = Field(default=4, ge=1, le=256)
    """Model calls in flight per `llm` handler process (its consumer prefetch)."""
    llm_dpi: int = Field(default=300, ge=36, le=600)
    """Resolution at which the extraction workers render pages for the model."""
    llm_retry_budget: int = Field(default=5, ge=0, le=100)
    """Failed calls (errors, timeouts, 5xx) of one page before its job fails `LLM_UNAVAILABLE`;
    the retries wait `transient_backoff_s` each. A 429/503 with `Retry-After` does not count: it
    pauses the whole handler that long."""
    llm_max_pause_s: float = Field(default=900.0, gt=0)
    """Longest one page waits out the provider's `Retry-After` pauses before that counts as a
    failed call."""
    llm_templates_dir: str | None = None
    """Folder of the `template` option's templates, `{name}.md`: `{{key}}` is filled from the
    job's `context`, `{{text}}` with the document's text (else the text follows the template);
    unset: `template` answers `422 LLM_NOT_CONFIGURED`."""
    llm_tenant_monthly_tokens: int | None = Field(default=None, ge=1)
    """Tokens (in + out) one tenant's llm jobs may use per calendar month (UTC); once spent, new
    llm jobs get `429 LLM_BUDGET_EXCEEDED` until the month ends. Unset: no budget."""
    extract_trace_dir: str | None = None
    """Test aid: each worker process appends its start/end times here."""

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(ip_network(p.strip()) for p in v.split(",") if p.strip())
        return v

    @field_validator("llm_base_url", "llm_api_key", "llm_templates_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        # `PDFRELAY_LLM_BASE_URL=` (compose's `${…:-}`) means: no endpoint.
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        parse_schedule(v)
        return v

    def target(self, tenant: str, name: str) -> TargetConfig | None:
        """The destination `name` of `tenant`; None when the tenant has none of that name."""
        return self.targets.get(tenant, {}).get(name)

    def webhook_secrets(self) -> tuple[str, ...]:
        """The signing secrets, newest first (several during rotation: space or comma apart)."""
        if self.webhook_secret is None:
            return ()
        raw = self.webhook_secret.get_secret_value().replace(",", " ")
        return tuple(raw.split())

    def metrics_port_for(self, handler: str) -> int:
        """The operations port of `handler`: PDFRELAY_METRICS_PORT, else the handler's own."""
        return self.metrics_port if self.metrics_port is not None else METRICS_PORTS[handler]

    def webhook_retry_delays(self) -> tuple[float, ...]:
        """The retry schedule in seconds (`parse_schedule` of `webhook_retry_schedule`)."""
        return parse_schedule(self.webhook_retry_schedule)

    def tenant_keys(self) -> dict[str, str]:
        """API key → tenant, parsed from `api_keys`."""
        if self.api_keys is None:
            return {}
        keys: dict[str, str] = {}
        for pair in self.api_keys.get_secret_value().split(","):
            tenant, sep, key = pair.strip().partition(":")
            if not sep or not tenant or not key:
                raise ValueError("PDFRELAY_API_KEYS must look like tenant:key,tenant2:key2")
            keys[key] = tenant
        return keys

    @property
    def base_url(self) -> str:
        return self.public_base_url or f"http://{self.http_host}:{self.http_port}"
