"""Jobs: the record and its keys, the one lifecycle of a job and its announcement, cancel,
listing, the page quota and the page count it charges, retention, throughput estimates, the
result cache, watching for changes.

May import: shared.settings/errors/models, shared.obs, shared.adapters, shared.extraction,
shared.runtime. Never a door (shared.doors, whose announcements reach it through the context),
shared.intake, shared.api, handlers or infra."""
