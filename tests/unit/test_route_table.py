"""The one HTTP route table: the document is generated from it, entry for entry."""

from __future__ import annotations

import inspect

from handlers.http.routes import ROUTES, Route, api_document
from shared.api.openapi import Operation, Resp, route_key


def test_every_route_is_documented_once_and_nothing_else() -> None:
    keys = [route_key(r.operation.method, r.operation.path) for r in ROUTES]
    assert len(keys) == len(set(keys)), "a route is in the table twice"
    doc = api_document()
    documented = {route_key(method, path) for path, item in doc["paths"].items() for method in item}
    assert documented == {k for k, r in zip(keys, ROUTES, strict=True) if r.in_api}
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_every_route_has_an_async_view() -> None:
    for r in ROUTES:
        assert inspect.iscoroutinefunction(r.handler), r.operation.operation_id


def test_a_route_marked_out_of_the_api_is_left_out_of_the_document() -> None:
    async def page(request: object) -> None:
        raise AssertionError("not called")

    static = Route(
        Operation("get", "/console", "console", "A page", "operations", (Resp(200, "ok"),)),
        page,  # type: ignore[arg-type]
        in_api=False,
    )
    doc = api_document((*ROUTES, static))
    assert "/console" not in doc["paths"]
    assert doc["paths"] == api_document()["paths"]
