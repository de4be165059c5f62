"""The HTTP API's shapes and server: request/response models, the OpenAPI document and docs
page, aiohttp's server with our error shape.

May import: shared.settings/errors/models and the modules whose models it documents."""
