"""Webhooks: signing, sealing, the SSRF policy, one delivery attempt, the retry ladder and the
delivery-state log.

May import: shared.settings/errors/models, shared.obs, shared.adapters, shared.runtime."""
