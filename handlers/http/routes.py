"""The HTTP route table: every route the service serves, with its view and its documentation.

The ingress application is built from it (`handlers/ingress.py`), the operations port of the
other handlers from its `ops_port` entries (`handlers/ops.py`), and the OpenAPI document is
generated from the same entries (`shared/api/openapi.py`). An entry with `in_api=False` is
served but left out of the API document (static pages of a console, say).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from handlers import jobs_api, seed
from handlers.console import ops as console_ops
from handlers.console import preview as console_preview
from handlers.console import static as console_static
from handlers.http import batches, jobs, ops
from handlers.http.common import Handler
from shared.api import openapi
from shared.api.models import (
    BatchRefusal,
    BatchSubmission,
    BatchUploadForm,
    BatchView,
    ErrorBody,
    Health,
    JobList,
    JobSubmission,
    JobView,
    Readiness,
    SeedAcknowledgement,
    SeedEnvelope,
    SeedError,
    SeedOutcome,
    SeedPending,
    SeedUploadForm,
    SeedUrlForm,
    UploadForm,
)
from shared.api.openapi import (
    BINARY,
    FORM,
    IDEMPOTENCY,
    JSON,
    MULTIPART,
    SEED_400,
    SSE_EVENT,
    TEXT,
    TRACEPARENT,
    Operation,
    Param,
    Resp,
    errors,
)
from shared.models import ExtractionResult


@dataclass(frozen=True)
class Route:
    operation: Operation
    """Method, path and what the API document says of it."""
    handler: Handler
    ops_port: bool = False
    """Also served on the operations port of handlers without HTTP (`/metrics`, probes)."""
    in_api: bool = True
    """In the OpenAPI document (False: served, but not part of the API)."""

    def route(self) -> web.RouteDef:
        """aiohttp's route (a GET answers HEAD too, as `web.get` does)."""
        if self.operation.method == "get":
            return web.get(self.operation.path, self.handler)
        return web.route(self.operation.method.upper(), self.operation.path, self.handler)


ROUTES: tuple[Route, ...] = (
    # --- /v1 jobs ----------------------------------------------------------------------------
    Route(
        Operation(
            "post",
            "/v1/jobs",
            "createJob",
            "Submit a PDF for extraction",
            "jobs",
            description=(
                "Upload the PDF (multipart) or name it (JSON: an S3 object or a URL). Answers 202 "
                "once the PDF is stored and the job is durably queued."
            ),
            params=(IDEMPOTENCY, TRACEPARENT),
            body=((MULTIPART, UploadForm), (JSON, JobSubmission)),
            responses=(
                Resp(202, "Accepted: the job is queued.", JobView, headers=("Location",)),
                *errors(400, 401, 403, 408, 409, 413, 415, 422, 429, 503),
            ),
            auth=True,
        ),
        jobs.create_job,
    ),
    Route(
        Operation(
            "get",
            "/v1/jobs",
            "listJobs",
            "List the tenant's jobs",
            "jobs",
            params=(
                Param("status", "query", "Only jobs in these states (comma-separated)."),
                Param(
                    "door",
                    "query",
                    "Only jobs that came in by this door.",
                    {"enum": ["http", "broker", "object-drop", "seed"]},
                ),
                Param("client_ref", "query", "Only jobs with this `client_ref`."),
                Param(
                    "created_after",
                    "query",
                    "Only jobs created after this time (ISO 8601).",
                    {"type": "string", "format": "date-time"},
                ),
                Param(
                    "limit",
                    "query",
                    "Page size (default 20).",
                    {"type": "integer", "minimum": 1, "maximum": 100},
                ),
                Param("cursor", "query", "`next_cursor` of the previous page."),
            ),
            responses=(Resp(200, "A page of jobs.", JobList), *errors(400, 401)),
            auth=True,
        ),
        jobs_api.get_jobs,
    ),
    Route(
        Operation(
            "get",
            "/v1/jobs/{job_id}",
            "getJob",
            "A job's status, progress, result summary and webhook state",
            "jobs",
            params=(
                Param(
                    "wait",
                    "query",
                    "Long-poll up to this many seconds for the job to end (capped).",
                    {"type": "number", "minimum": 0},
                ),
            ),
            responses=(Resp(200, "The job.", JobView), *errors(400, 401, 404)),
            auth=True,
        ),
        jobs.get_job,
    ),
    Route(
        Operation(
            "delete",
            "/v1/jobs/{job_id}",
            "cancelJob",
            "Cancel a queued or running job",
            "jobs",
            responses=(
                Resp(200, "The job, cancelled (also when it already was).", JobView),
                Resp(202, "Cancellation requested; its worker is being stopped.", JobView),
                *errors(401, 404, 409),
            ),
            auth=True,
        ),
        jobs_api.cancel_job,
    ),
    Route(
        Operation(
            "get",
            "/v1/jobs/{job_id}/result",
            "getJobResult",
            "The extraction result (pages, Markdown, metadata)",
            "jobs",
            responses=(Resp(200, "The result.", ExtractionResult), *errors(401, 404)),
            auth=True,
        ),
        jobs.get_result,
    ),
    Route(
        Operation(
            "get",
            "/v1/jobs/{job_id}/artifacts/{name}",
            "getJobArtifact",
            "One artifact of a completed job (Markdown, image archive, …)",
            "jobs",
            responses=(
                Resp(200, "The artifact.", content_type="application/octet-stream", schema=BINARY),
                *errors(401, 404),
            ),
            auth=True,
        ),
        jobs.get_artifact,
    ),
    Route(
        Operation(
            "get",
            "/v1/jobs/{job_id}/events",
            "streamJobEvents",
            "Server-Sent Events: progress and the terminal event",
            "jobs",
            responses=(
                Resp(
                    200,
                    "`job.progress` events, then `job.completed`, `job.failed` or `job.cancelled`.",
                    content_type="text/event-stream",
                    schema=SSE_EVENT,
                ),
                *errors(401, 404),
            ),
            auth=True,
        ),
        jobs_api.job_events,
    ),
    Route(
        Operation(
            "get",
            "/v1/events",
            "streamTenantEvents",
            "Server-Sent Events of all the tenant's jobs, over one stream",
            "jobs",
            description=(
                "First the state of each job named in `jobs` (`job.state`, or its terminal "
                "event if it has ended; ids the tenant has no job of are left out), then every "
                "event of the tenant's jobs (`job.accepted`, `job.progress`, `job.completed`, "
                "`job.failed`, `job.cancelled`) until the client closes the stream. For "
                "following many jobs at once (a browser allows about six connections per host)."
            ),
            params=(
                Param(
                    "jobs",
                    "query",
                    "Job ids (comma-separated, at most 200) whose state is sent first.",
                ),
            ),
            responses=(
                Resp(
                    200,
                    "The listed jobs' states, then the tenant's job events.",
                    content_type="text/event-stream",
                    schema=SSE_EVENT,
                ),
                *errors(400, 401),
            ),
            auth=True,
        ),
        jobs_api.tenant_events,
    ),
    Route(
        Operation(
            "post",
            "/v1/jobs/{job_id}/webhook/redeliver",
            "redeliverWebhook",
            "Send a finished job's terminal webhook again",
            "jobs",
            description="The same `webhook-id` and body, a fresh timestamp and signature.",
            responses=(Resp(202, "Queued for delivery.", JobView), *errors(401, 404, 409)),
            auth=True,
        ),
        jobs.redeliver_webhook,
    ),
    # --- /v1 batches -------------------------------------------------------------------------
    Route(
        Operation(
            "post",
            "/v1/batches",
            "createBatch",
            "Submit many PDFs as one batch",
            "batches",
            description=(
                "One `file` part per PDF, each checked as a single upload is; or JSON: a list of "
                "sources (`items`, each with option overrides and a `client_ref`), or every PDF "
                "under an S3 `prefix` of a bucket the tenant may read. Items refused at "
                "the door are listed with why (status `refused`), the others are queued; a "
                "batch of which no item is accepted is refused whole (`BATCH_REFUSED`). Answers "
                "202 once every accepted file is stored and queued. `batch.completed` is sent to "
                "`webhook_url` once, when the last item ends."
            ),
            params=(TRACEPARENT,),
            body=((MULTIPART, BatchUploadForm), (JSON, BatchSubmission)),
            responses=(
                Resp(202, "Accepted: the batch and its items.", BatchView, headers=("Location",)),
                Resp(
                    422,
                    "No file was accepted (`BATCH_REFUSED`, `error.items` says why), or the "
                    "options or the webhook URL do not validate.",
                    BatchRefusal,
                ),
                *errors(400, 401, 403, 408, 413, 415, 429, 503),
            ),
            auth=True,
        ),
        batches.create_batch,
    ),
    Route(
        Operation(
            "get",
            "/v1/batches/{batch_id}",
            "getBatch",
            "A batch: counts by status and a page of its items",
            "batches",
            params=(
                Param(
                    "limit",
                    "query",
                    "Items per page (default 100).",
                    {"type": "integer", "minimum": 1, "maximum": 1000},
                ),
                Param("cursor", "query", "`next_cursor` of the previous page."),
            ),
            responses=(Resp(200, "The batch.", BatchView), *errors(400, 401, 404)),
            auth=True,
        ),
        batches.get_batch,
    ),
    Route(
        Operation(
            "get",
            "/v1/batches/{batch_id}/events",
            "streamBatchEvents",
            "Server-Sent Events: the batch's state, its items' events and `batch.completed`",
            "batches",
            description=(
                "`batch.state` (the batch as `GET /v1/batches/{batch_id}` heads it: counts, "
                "progress, no items), then every event of its items as they happen "
                "(`job.progress`, `job.completed`, `job.failed`, `job.cancelled`, "
                "`job.delivered`, …, each with its job's view), then `batch.completed` (the "
                "view its webhook carries); then the stream ends. A completed batch gets only "
                "its `batch.completed`. Events of items that ended before the stream opened are "
                "not replayed: `batch.state` counts them."
            ),
            responses=(
                Resp(
                    200,
                    "`batch.state`, item events, then `batch.completed`.",
                    content_type="text/event-stream",
                    schema=SSE_EVENT,
                ),
                *errors(401, 404),
            ),
            auth=True,
        ),
        batches.batch_events,
    ),
    Route(
        Operation(
            "delete",
            "/v1/batches/{batch_id}",
            "cancelBatch",
            "Cancel every item of the batch that has not ended",
            "batches",
            responses=(
                Resp(200, "The batch, its items being cancelled.", BatchView),
                *errors(401, 404, 503),
            ),
            auth=True,
        ),
        batches.cancel_batch,
    ),
    # --- seed (Secretary) compatibility ------------------------------------------------------
    Route(
        Operation(
            "post",
            "/api/pdf/process",
            "seedProcessUpload",
            "Secretary-compatible upload",
            "seed",
            body=((MULTIPART, SeedUploadForm),),
            responses=(
                Resp(202, "Accepted.", SeedAcknowledgement, headers=("Location",)),
                Resp(200, "`wait_ms` saw the job complete: its result.", SeedOutcome),
                SEED_400,
                *errors(401, 408, 409, 413, 415, 422, 429, 503, model=SeedError),
            ),
            auth=True,
        ),
        seed.process_upload,
    ),
    Route(
        Operation(
            "post",
            "/api/pdf/process-url",
            "seedProcessUrl",
            "Secretary-compatible submission of a URL",
            "seed",
            body=((FORM, SeedUrlForm), (MULTIPART, SeedUrlForm)),
            responses=(
                Resp(202, "Accepted.", SeedAcknowledgement, headers=("Location",)),
                Resp(200, "`wait_ms` saw the job complete: its result.", SeedOutcome),
                SEED_400,
                *errors(401, 408, 409, 413, 415, 422, 429, 503, model=SeedError),
            ),
            auth=True,
        ),
        seed.process_url,
    ),
    Route(
        Operation(
            "get",
            "/api/jobs/{job_id}",
            "seedGetJob",
            "Secretary-compatible job status",
            "seed",
            responses=(Resp(200, "The job.", SeedEnvelope), *errors(401, 404, model=SeedError)),
            auth=True,
        ),
        seed.get_job,
    ),
    Route(
        Operation(
            "get",
            "/api/jobs/{job_id}/download-archive",
            "seedDownloadArchive",
            "Secretary-compatible image archive download",
            "seed",
            responses=(
                Resp(200, "The ZIP.", content_type="application/zip", schema=BINARY),
                Resp(202, "The job has not ended yet.", SeedPending, headers=("Retry-After",)),
                *errors(401, 404, model=SeedError),
            ),
            auth=True,
        ),
        seed.download_archive,
    ),
    # --- operations --------------------------------------------------------------------------
    Route(
        Operation(
            "get",
            "/healthz",
            "healthz",
            "Liveness",
            "operations",
            responses=(Resp(200, "The process is alive.", Health),),
        ),
        ops.healthz,
        ops_port=True,
    ),
    Route(
        Operation(
            "get",
            "/readyz",
            "readyz",
            "Readiness: broker and storage reachable",
            "operations",
            responses=(
                Resp(200, "Ready.", Readiness),
                Resp(503, "Not ready.", Readiness, headers=("Retry-After",)),
            ),
        ),
        ops.readyz,
        ops_port=True,
    ),
    Route(
        Operation(
            "get",
            "/metrics",
            "metrics",
            "Prometheus metrics",
            "operations",
            responses=(
                Resp(
                    200,
                    "Prometheus text exposition format.",
                    content_type="text/plain",
                    schema=TEXT,
                ),
            ),
        ),
        ops.metrics,
        ops_port=True,
    ),
    Route(
        Operation(
            "get",
            "/openapi.json",
            "openapi",
            "This document",
            "operations",
            responses=(Resp(200, "OpenAPI 3.1.", schema={"type": "object"}),),
        ),
        openapi.openapi_json,
    ),
    Route(
        Operation(
            "get",
            "/docs",
            "docs",
            "Browsable API documentation (Swagger UI, served offline)",
            "operations",
            responses=(Resp(200, "The page.", content_type="text/html", schema=TEXT),),
        ),
        openapi.docs_page,
    ),
    Route(
        Operation(
            "get",
            "/docs/assets/{name}",
            "docsAsset",
            "A static file of the documentation page",
            "operations",
            responses=(
                Resp(200, "The file.", content_type="application/octet-stream", schema=BINARY),
                Resp(404, "No such asset.", ErrorBody),
            ),
        ),
        openapi.docs_asset,
    ),
    # --- the web console (handlers/console) ---------------------------------------------------
    Route(
        Operation(
            "get",
            "/v1/jobs/{job_id}/pages/{page}/preview",
            "getPagePreview",
            "One page of a completed job as a PNG, rendered on demand and cached",
            "jobs",
            description="Rendered by an extract process (asked over the broker), kept beside the "
            "job's results. `404` for a page out of range; `503` + `Retry-After` when no worker "
            "rendered it within `PDFRELAY_PREVIEW_TIMEOUT_S`.",
            params=(
                Param(
                    "width",
                    "query",
                    "Width in pixels (64 to PDFRELAY_PREVIEW_MAX_WIDTH, default 800).",
                    {"type": "integer", "minimum": 64},
                ),
            ),
            responses=(
                Resp(200, "The page.", content_type="image/png", schema=BINARY),
                *errors(400, 401, 404, 409, 422, 503),
            ),
            auth=True,
        ),
        console_preview.get_preview,
    ),
    Route(
        Operation(
            "get",
            "/v1/console/ops",
            "getConsoleOps",
            "Queue depths, workers, pages/s, the tenant's failures of the last hour and parked "
            "webhooks",
            "operations",
            responses=(Resp(200, "The figures.", schema={"type": "object"}), *errors(401)),
            auth=True,
        ),
        console_ops.get_ops,
    ),
    Route(
        Operation(
            "post",
            "/v1/console/dead-webhooks/{job_id}/replay",
            "replayDeadWebhooks",
            "Send a job's dead-lettered webhook deliveries again (attempts reset)",
            "operations",
            responses=(
                Resp(200, "How many were replayed.", schema={"type": "object"}),
                *errors(401, 404),
            ),
            auth=True,
        ),
        console_ops.replay,
    ),
    Route(
        Operation(
            "get",
            "/",
            "console",
            "The web console (submit, watch, jobs, read, operate)",
            "operations",
            responses=(Resp(200, "The page.", content_type="text/html", schema=TEXT),),
        ),
        console_static.index,
    ),
    Route(
        Operation(
            "get",
            "/console/{name}",
            "consoleAsset",
            "A script, style sheet or image of the console",
            "operations",
            responses=(
                Resp(200, "The file.", content_type="application/octet-stream", schema=BINARY),
                Resp(404, "No such asset.", ErrorBody),
            ),
        ),
        console_static.asset,
    ),
)


def api_document(routes: tuple[Route, ...] = ROUTES) -> dict[str, Any]:
    """The OpenAPI document of `routes` (those in the API)."""
    return openapi.build_openapi(r.operation for r in routes if r.in_api)
