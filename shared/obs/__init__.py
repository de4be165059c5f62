"""Observability: JSON logs, Prometheus metrics, tracing.

May import: shared.settings/errors/models only (types of what it observes under TYPE_CHECKING)."""
