"""Intake: turning what a door received into a queued job: uploads, URL fetches, the `pages`
option, request limits, submission.

May import: shared.settings/errors/models, shared.obs, shared.adapters, shared.runtime,
shared.jobs, shared.webhooks.ssrf. Never handlers or infra."""
