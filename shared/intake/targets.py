"""A job's or batch's `target` as the client gives it, checked at the door: an operator's
destination of the tenant's own, or presigned PUT URLs the SSRF policy allows."""

from __future__ import annotations

from pydantic import ValidationError

from shared.errors import ErrorCode, PermanentError, TransientError
from shared.intake import limits
from shared.jobs.targets import target_refused
from shared.models import JobTarget, TargetSpec
from shared.settings import Settings
from shared.webhooks.ssrf import SsrfPolicy

TARGET_UNKNOWN = "no result destination of that name is configured for this tenant"
"""The same answer for a name nobody has and a name of another tenant: no existence leak."""


def parse_target(raw: object) -> TargetSpec | None:
    """The `target` field (a JSON object, or its text in a form field); None when absent.

    Raises:
        PermanentError: INVALID_REQUEST when it is not a valid target.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, str):
        raw = limits.loads(raw, "target", ErrorCode.INVALID_REQUEST)
    try:
        return TargetSpec.model_validate(raw)
    except ValidationError as exc:
        reason = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'target'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise PermanentError(f"invalid target: {reason}", ErrorCode.INVALID_REQUEST) from exc


async def resolve_target(settings: Settings, tenant: str, raw: object) -> JobTarget | None:
    """The job's target from the client's `target` (None when there is none).

    Raises:
        PermanentError: INVALID_REQUEST (malformed), TARGET_NOT_ALLOWED (no destination of that
            name for this tenant, whoever else has one), TARGET_URL_REFUSED (a URL the SSRF
            policy refuses, or whose host does not resolve).
    """
    spec = parse_target(raw)
    if spec is None:
        return None
    if spec.name is not None:
        if settings.target(tenant, spec.name) is None:
            raise PermanentError(TARGET_UNKNOWN, ErrorCode.TARGET_NOT_ALLOWED)
        return JobTarget(kind="destination", name=spec.name)
    assert spec.urls is not None
    policy = SsrfPolicy(settings.webhook_allowed_networks)
    for url in spec.urls.values():
        limits.check_length("a target URL", url, limits.MAX_WEBHOOK_URL_CHARS)
        try:
            limits.check_webhook_url(url)
            await policy.resolve_checked(url)
        except PermanentError as exc:
            raise target_refused(exc.message) from exc
        except TransientError as exc:
            raise target_refused(exc.message) from exc
    return JobTarget(kind="presigned", urls=dict(spec.urls))
