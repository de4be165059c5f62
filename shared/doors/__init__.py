"""Door-specific shapes: the object drop's inbox/outbox names and S3 notifications, the seed's
(Secretary's) payloads.

May import: shared.settings/errors/models, shared.adapters, shared.runtime, shared.jobs.records."""
