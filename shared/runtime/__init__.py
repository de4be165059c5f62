"""The running process: its typed context (broker, storage, pool, metrics, the cancels it has
heard) and the queue consumer that validates, runs and settles one message.

May import: shared.settings/errors/models, shared.obs, shared.adapters, shared.extraction.pool,
and shared.jobs.records (the record store the context holds). Never handlers or infra."""
