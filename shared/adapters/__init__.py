"""Adapters to the outside: the broker (publishing, topology as data), S3 storage, file digests,
Tesseract's language data.

May import: shared.settings/errors/models only."""
