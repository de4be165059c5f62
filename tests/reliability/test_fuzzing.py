"""Scenario 9: schemathesis against the `/openapi.json` that `pdfrelay dev` serves."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.jobs.records import parse_index_name
from tests.reliability.harness import document, open_service
from tests.reliability.ledger import Ledger

pytestmark = pytest.mark.integration

ST = Path(sys.executable).with_name("st")
CHECKS = ",".join(
    (
        "not_a_server_error",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
    )
)
EXAMPLES = int(os.environ.get("PDFRELAY_FUZZ_EXAMPLES", "10"))
"""Test cases per operation and phase; the long variant takes ten times as many."""
SEED = os.environ.get("PDFRELAY_FUZZ_SEED", "20261128")
"""Fixed, so that a run can be repeated; set another to explore further."""


async def fuzz(base_url: str, examples: int, workdir: Path) -> tuple[int, str]:
    if not ST.exists():
        pytest.fail("schemathesis is not installed: it belongs to the `test` extra")
    proc = await asyncio.create_subprocess_exec(
        str(ST),
        "--no-color",
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(examples),
        "--seed",
        SEED,
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--workers",
        "2",
        # A tenant's stream has no end of its own (keep-alives until the client leaves), and
        # the fuzzer reads every response to its end; test_job_control covers its answers.
        "--exclude-path",
        "/v1/events",
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(600):
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    (workdir / "schemathesis.txt").write_text(text)
    assert proc.returncode is not None
    return proc.returncode, text


async def run_fuzzing(fault_settings: Any, tmp_path: Path, scenario: str, examples: int) -> None:
    settings = fault_settings(extract_workers=2)
    async with open_service(settings, tmp_path / "logs") as svc:
        dev = await svc.spawn("dev")
        async with Ledger(
            scenario,
            f"schemathesis ({examples} examples per operation) against the served /openapi.json",
            settings,
            svc.http,
            svc.base_url,
        ) as ledger:
            async with ledger.fault("fuzzing"):
                code, out = await fuzz(svc.base_url, examples, tmp_path)
            cases = re.search(r"(\d+) generated", out)
            ledger.figures.update(
                test_cases=int(cases.group(1)) if cases else None,
                schemathesis_exit=code,
                unhandled_errors_logged=dev.text.count("unhandled error"),
            )
            # Whatever the fuzzer got accepted must end too, and the service still works.
            for key in await svc.ctx.storage.list_keys("index/"):
                if parsed := parse_index_name(key.rsplit("/", 1)[-1]):
                    ledger.adopt(parsed[1])
            ledger.figures["jobs_the_fuzzer_created"] = ledger.counts.acknowledged
            for i in range(3):
                pdf, words = document(i)
                assert (await ledger.upload(pdf, words)).status == 202
            await ledger.check(within=90)
        assert code == 0, out[-6000:]
        assert "unhandled error" not in dev.text, dev.text[-6000:]


@pytest.mark.timeout(300)
async def test_fuzzing_finds_no_5xx_and_no_schema_violation(
    fault_settings: Any, tmp_path: Path
) -> None:
    await run_fuzzing(fault_settings, tmp_path, "9-fuzzing", EXAMPLES)


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_long_fuzzing(fault_settings: Any, tmp_path: Path) -> None:
    await run_fuzzing(fault_settings, tmp_path, "9b-long-fuzzing", EXAMPLES * 10)
