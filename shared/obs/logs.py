"""Logging: one JSON object per line with the job id and trace id, and secrets masked.

The job id comes from a context variable that the places handling one job set (the consumer
for every message that names a job, the ingress for every `/v1/jobs/{job_id}` request, the
submitter for a new job), so every line logged on its behalf carries it, including lines from
shared code that never heard of the job. Masking happens on the final text of each record,
message and traceback alike: known secrets (the process's own webhook secrets, API keys,
storage and broker passwords) word for word, and by pattern what looks like one (`whsec_…`,
bearer tokens, passwords in URLs, tokens in query strings).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

from opentelemetry import trace

from shared.adapters.brokers import split_urls
from shared.settings import Settings

LogFormat = Literal["json", "text"]

job_id_var: ContextVar[str | None] = ContextVar("pdfrelay_job_id", default=None)
"""The job the current task works for (None outside of one)."""

MASK = "***"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PDFRELAY_HANDLER = "_pdfrelay_handler"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Standard Webhooks secrets.
    (re.compile(r"whsec_[A-Za-z0-9+/=_-]+"), f"whsec_{MASK}"),
    # Authorization headers of any scheme, and bare bearer tokens.
    (
        re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?:bearer\s+|basic\s+)?[^\s'\",}]+"),
        rf"\g<1>{MASK}",
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\g<1>{MASK}"),
    (re.compile(r"(?i)(x-callback-token['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"), rf"\g<1>{MASK}"),
    # user:password@ in URLs (amqp://, http://, redis://, …).
    (re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s/]+@"), rf"\g<1>{MASK}@"),
    # Credentials in query strings.
    (
        re.compile(
            r"(?i)([?&](?:token|access_token|api_key|apikey|key|secret|signature|"
            r"x-amz-signature|x-amz-credential|password)=)[^&\s'\"]+"
        ),
        rf"\g<1>{MASK}",
    ),
    # JSON or repr fields that name a secret.
    (
        re.compile(
            r"(?i)(['\"](?:token|webhook_token|callback_token|secret|webhook_secret|password|"
            r"api_key|api_keys|secret_key)['\"]\s*:\s*)(['\"])[^'\"]+\2"
        ),
        rf"\g<1>\g<2>{MASK}\g<2>",
    ),
)

_RESERVED = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secrets and anything that looks like a credential masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@contextlib.contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    """Log lines within carry `job_id` (restored afterwards)."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)


class RedactFilter(logging.Filter):
    """Masks secrets in a record's message and traceback before any formatter sees them.

    The record is rewritten in place (message rendered, arguments dropped), so handlers that
    run after this one see the masked text too.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = {s for s in secrets if len(s) >= 4}

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these values too (short ones are ignored: they would mask ordinary words)."""
        self.secrets.update(s for s in secrets if len(s) >= 4)

    def filter(self, record: logging.LogRecord) -> bool:
        # Longest first, so that a secret containing another one is masked whole.
        secrets = sorted(self.secrets, key=len, reverse=True)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = redact(message, secrets)
        record.args = None
        for key, value in list(record.__dict__.items()):
            # `extra=` fields end up in JSON lines too.
            if key not in _RESERVED and isinstance(value, str):
                setattr(record, key, redact(value, secrets))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return True


def _trace_ids() -> tuple[str | None, str | None]:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, job and trace ids, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None) or job_id_var.get()
        if job_id:
            entry["job_id"] = job_id
        trace_id, span_id = _trace_ids()
        if trace_id:
            entry["trace_id"] = trace_id
            entry["span_id"] = span_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic one-line format, with `[job <id>]` when a job is in context."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        job_id = getattr(record, "job_id", None) or job_id_var.get()
        if job_id:
            head, sep, tail = text.partition(": ")
            text = f"{head} [job {job_id}]{sep}{tail}"
        return text


def make_handler(
    fmt: LogFormat, secrets: Iterable[str] = (), stream: TextIO | None = None
) -> logging.Handler:
    """A stream handler with pdfrelay's formatter and secret masking."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactFilter(secrets))
    return handler


def configure_logging(
    fmt: LogFormat, level: int = logging.INFO, secrets: Iterable[str] = ()
) -> logging.Handler:
    """Give the root logger pdfrelay's handler (replacing one installed before; handlers of
    others, such as a test runner's, stay)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, PDFRELAY_HANDLER, False):
            root.removeHandler(old)
    handler = make_handler(fmt, secrets)
    setattr(handler, PDFRELAY_HANDLER, True)
    root.addHandler(handler)
    root.setLevel(level)
    # aio-pika and aiormq narrate every reconnect attempt at INFO.
    logging.getLogger("aiormq").setLevel(max(level, logging.WARNING))
    return handler


def protect(secrets: Iterable[str]) -> None:
    """Mask these values in everything the root logger's pdfrelay handlers write from now on."""
    values = [s for s in secrets if s]
    for handler in logging.getLogger().handlers:
        for f in handler.filters:
            if isinstance(f, RedactFilter):
                f.add(values)


def resolve_format(configured: str | None, default: LogFormat) -> LogFormat:
    """`PDFRELAY_LOG_FORMAT` when set (json or text), else the command's default."""
    if configured is None or not configured.strip():
        return default
    value = configured.strip().lower()
    if value not in ("json", "text"):
        raise ValueError(f"PDFRELAY_LOG_FORMAT must be json or text, not {configured!r}")
    return "json" if value == "json" else "text"


def settings_secrets(settings: Settings) -> list[str]:
    """The secret values of `settings`, to mask word for word (`protect`)."""
    values = [*settings.webhook_secrets(), settings.s3_secret_key.get_secret_value()]
    with contextlib.suppress(ValueError):
        values.extend(settings.tenant_keys())
    if settings.llm_api_key is not None:
        values.append(settings.llm_api_key.get_secret_value())
    for destinations in settings.targets.values():
        values.extend(
            t.secret_key.get_secret_value() for t in destinations.values() if t.secret_key
        )
    for url in split_urls(settings.amqp_url.get_secret_value()):
        password = urlsplit(url).password
        if password and len(password) >= 8:
            # (Short ones, like the development `guest`, would mask ordinary words; the URL
            # pattern still masks them inside URLs.)
            values.append(password)
    return values
