"""The Secretary's LLM methods: a vision model behind any OpenAI-compatible endpoint."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import running_stack
from tests.factories import make_pdf
from tests.helpers import form

pytestmark = pytest.mark.integration


async def test_without_an_endpoint_the_llm_methods_name_the_setting(make_settings: Any) -> None:
    async with running_stack(make_settings(), extract_running=False) as stack:
        pdf = make_pdf(["one"])
        for method in ("llm", "llm_and_native", "llm_and_ocr"):
            options = json.dumps({"method": method})
            resp = await stack.client.post("/v1/jobs", data=form(pdf, options=options))
            assert resp.status == 422, await resp.text()
            error = (await resp.json())["error"]
            assert error["code"] == "LLM_NOT_CONFIGURED"
            assert "PDFRELAY_LLM_BASE_URL" in error["message"]
        resp = await stack.client.post(
            "/v1/jobs", data=form(pdf, options=json.dumps({"outputs": ["llm"]}))
        )
        assert resp.status == 422
        seed = form(pdf, extraction_method="llm")
        resp = await stack.client.post("/api/pdf/process", data=seed)
        assert resp.status == 422
        body = await resp.json()
        assert body["status"] == "error"
        assert body["error"]["code"] == "LLM_NOT_CONFIGURED"
        assert "PDFRELAY_LLM_BASE_URL" in body["error"]["message"]
