"""Tracing: one W3C trace from the HTTP request through the broker and the worker to the webhook.

- the ingress continues the client's `traceparent` (or starts a trace) in a server span
  (`server_middleware`); the job record keeps it (`Job.traceparent`);
- every AMQP publish carries the current context in its headers and every consumed message
  continues it: OpenTelemetry's aio-pika instrumentation (`configure_tracing`);
- the extract handler continues it in a span per job (`job_span`), falling back to the job
  record when a message arrives without one;
- the webhook POST carries it as `traceparent` (same trace id, a new span id): OpenTelemetry's
  aiohttp-client instrumentation, on the webhook session only (`client_trace_config`).

The aiohttp-server instrumentation is not used: it works by replacing `aiohttp.web.Application`
process-wide with a subclass (which aiohttp deprecates with a warning) and its middleware
cannot be used on its own; `server_middleware` does the same with the OpenTelemetry API.

Spans are exported only when asked for with the standard variables: `OTEL_TRACES_EXPORTER`
`console`, or `otlp` with the OTLP exporter package installed; sampling follows
`OTEL_TRACES_SAMPLER` (default: parent-based, always on; with no exporter, parent-based
always-off: the trace is carried on, nothing is recorded).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import yarl
from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from shared.obs.logs import job_context

log = logging.getLogger(__name__)

TRACER_NAME = "pdfrelay"
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes: frequent, and of no interest as traces."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def configure_tracing(service_name: str = "pdfrelay") -> None:
    """Install the SDK tracer provider and the aio-pika instrumentation, once per process.

    Idempotent: a process that opens several contexts (tests, `pdfrelay dev`) keeps the first
    provider; one set up by the host application (auto-instrumentation) is left alone.
    """
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        exporter = _exporter(os.environ.get("OTEL_TRACES_EXPORTER", "none"))
        provider = TracerProvider(
            resource=Resource.create(
                {"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name}
            ),
            sampler=_sampler(exporting=exporter is not None),
        )
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    instrumentor = AioPikaInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def _sampler(*, exporting: bool) -> Sampler | None:
    """`OTEL_TRACES_SAMPLER` if set; else, with nothing to export to, record nothing.

    Unrecorded spans still carry the trace (ids and the parent's sampled flag) through the
    broker to the webhook, at a fraction of the cost of recorded ones: a webhooks process
    spends a tenth of its time on spans nobody reads otherwise.
    """
    if exporting or os.environ.get("OTEL_TRACES_SAMPLER"):
        return None  # the SDK's own choice: the variable, or parent-based always-on
    return ParentBased(root=ALWAYS_OFF)


def _exporter(name: str) -> SpanExporter | None:
    name = name.strip().lower()
    if name in ("", "none"):
        return None
    if name == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    if name == "otlp":
        try:
            module = importlib.import_module(
                "opentelemetry.exporter.otlp.proto.http.trace_exporter"
            )
        except ImportError:
            log.warning(
                "OTEL_TRACES_EXPORTER=otlp needs the opentelemetry-exporter-otlp-proto-http "
                "package; spans are not exported"
            )
            return None
        exporter: SpanExporter = module.OTLPSpanExporter()
        return exporter
    log.warning("unknown OTEL_TRACES_EXPORTER %r; spans are not exported", name)
    return None


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span (None outside of a trace)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) of a `traceparent` value, if it is well-formed."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    return parts[1].lower()


@contextlib.contextmanager
def job_span(name: str, job_id: str, fallback_traceparent: str | None) -> Iterator[Span]:
    """A span for work on one job, inside the trace its message carried.

    The aio-pika instrumentation has already made the message's context current. A message
    that carried none (published outside any trace, e.g. by a tool) has only a root consumer
    span: the work then continues the trace stored in the job record instead.
    """
    parent = None
    if fallback_traceparent and not _continues_remote_trace(trace.get_current_span()):
        parent = propagate.extract({"traceparent": fallback_traceparent})
    with tracer().start_as_current_span(
        name, context=parent, kind=SpanKind.INTERNAL, attributes={"pdfrelay.job_id": job_id}
    ) as span:
        yield span


def _continues_remote_trace(span: Span) -> bool:
    """Whether the current span belongs to a trace that started elsewhere."""
    if not span.get_span_context().is_valid:
        return False
    # SDK spans know their parent; a root span (the message had no context) has none.
    parent = getattr(span, "parent", None)
    return parent is not None or span.get_span_context().is_remote


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


@web.middleware
async def server_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A server span per request, continuing the client's `traceparent`; the job id of
    `/v1/jobs/{job_id}/…` routes in every log line of the request (the seed routes' ids may be
    the client's own `jobId`)."""
    job_id = request.match_info.get("job_id") if request.path.startswith("/v1/") else None
    with job_context(job_id):
        if request.path in UNTRACED_PATHS:
            return await handler(request)
        route = _route_of(request)
        with tracer().start_as_current_span(
            f"{request.method} {route}",
            context=propagate.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "http.route": route,
                "url.path": request.path,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                _set_status(span, exc.status)
                raise
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            _set_status(span, response.status)
            return response


def _set_status(span: Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


def _url_without_secrets(url: yarl.URL) -> str:
    # Webhook URLs may carry a token in their query or credentials: neither goes into a span.
    return str(url.with_user(None).with_query(None).with_fragment(None))


def client_trace_config() -> aiohttp.TraceConfig:
    """For the webhook session: a client span per POST and its `traceparent` header."""
    config: aiohttp.TraceConfig = create_trace_config(url_filter=_url_without_secrets)
    return config
