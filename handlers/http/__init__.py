"""The HTTP side of the ingress: one route table (routes.py) read by the application factory
(handlers/ingress.py) and by the OpenAPI document, the /v1 job views (jobs.py), the operations
views (ops.py), and what the views share (common.py: keys, errors, tenants; bodies.py: reading
request bodies). Job control (handlers/jobs_api.py) and the seed door (handlers/seed.py) add
their views to the same table.

May import: shared (any layer) and handlers.jobs_api / handlers.seed views; never infra.
"""
