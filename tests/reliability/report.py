"""Run the fault-injection suite and write `tests/reliability/REPORT.md` from its ledgers.

    .venv/bin/python -m tests.reliability.report           # the short forms (as in `make test`)
    .venv/bin/python -m tests.reliability.report --slow    # also the long variants
    .venv/bin/python -m tests.reliability.report --from DIR  # rewrite the report from ledgers

Each scenario's ledger writes its counts to `$PDFRELAY_LEDGER_DIR/<scenario>.json`; pytest's
JUnit XML gives each test's outcome and duration. The exit status is pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.reliability.conftest import SLOW_ENV
from tests.reliability.ledger import LEDGER_DIR_ENV

HERE = Path(__file__).parent
REPORT = HERE / "REPORT.md"
ROOT = HERE.parent.parent


@dataclass(frozen=True)
class TestResult:
    name: str
    outcome: str
    seconds: float
    message: str = ""


def run_suite(ledger_dir: Path, slow: bool, extra: list[str]) -> int:
    env = {**os.environ, LEDGER_DIR_ENV: str(ledger_dir)}
    if slow:
        env[SLOW_ENV] = "1"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        str(HERE.relative_to(ROOT)),
        f"--junitxml={ledger_dir / 'junit.xml'}",
        *extra,
    ]
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


def read_junit(path: Path) -> dict[str, TestResult]:
    """Test outcomes by node id (`tests/reliability/test_x.py::test_y`)."""
    if not path.exists():
        return {}
    results: dict[str, TestResult] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/") + ".py"
        name = f"{module}::{case.get('name')}"
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            if (node := case.find(kind)) is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                message = " ".join((node.get("message") or "").split())[:400]
                break
        results[name] = TestResult(name, outcome, float(case.get("time") or 0), message)
    return results


def _s(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f} s" if value >= 10 else f"{value:.2f} s"
    return str(value)


def _figure(key: str, value: Any) -> str:
    """`readyz_recovered_s: 0.081` → `readyz recovered: 0.08 s` (units from the suffix)."""
    label, _, unit = key.rpartition("_")
    if isinstance(value, (int, float)) and label:
        if unit == "s":
            return f"{label.replace('_', ' ')}: {_s(float(value))}"
        if unit == "kib":
            size = f"{value} KiB" if value < 1024 else f"{value / 1024:.1f} MiB"
            return f"{label.replace('_', ' ')}: {size}"
        if unit == "mib":
            return f"{label.replace('_', ' ')}: {value} MiB"
    return f"{key.replace('_', ' ')}: {_s(value)}"


def _fault_s(ledger: dict[str, Any]) -> float | None:
    durations = [f["duration_s"] for f in ledger["faults"] if f["duration_s"] is not None]
    return sum(durations) if durations else None


def render(ledgers: list[dict[str, Any]], tests: dict[str, TestResult], command: str) -> str:
    by_test = {led["test"]: led for led in ledgers}
    passed = sum(t.outcome == "passed" for t in tests.values())
    failed = sum(t.outcome in ("failed", "error") for t in tests.values())
    skipped = sum(t.outcome == "skipped" for t in tests.values())
    total_s = sum(t.seconds for t in tests.values())
    lines = [
        "# pdfrelay — reliability report",
        "",
        f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by `{command}` on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}: the real RabbitMQ and moto's S3 server, handlers as "
        "`pdfrelay` subprocesses where a process is killed, stopped or measured. "
        f"**{passed} passed, {failed} failed, {skipped} skipped** in {total_s:.0f} s of tests.",
        "",
        "Every scenario ends with the ledger check (`tests/reliability/ledger.py`): each job the",
        "ingress acknowledged (`202`) reached one terminal state, announced by one distinct",
        "terminal event id (redelivered copies of it counted as *dup. events*), with the right",
        "outcome and text; its webhook receiver saw exactly one distinct `webhook-id` for it",
        "(repeated attempts with that id counted as *dup. hooks*). *Lost* counts acknowledged",
        "jobs without an end. *Recovery*: from the end of the (last) fault to the first sign of",
        "progress (a `202`, a terminal event or a webhook); *drain*: from the end of the fault",
        "to the last job's end.",
        "",
        "| scenario | test | submitted | acknowledged | refused | completed | failed | cancelled "
        "| lost | dup. events | dup. hooks | webhooks delivered | fault | recovery | drain |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for led in ledgers:
        c = led["counts"]
        test = tests.get(led["test"])
        verdict = test.outcome if test else ("passed" if led["ok"] else "failed")
        refused = sum(c["refused"].values())
        lines.append(
            f"| {led['scenario']} | {verdict} | {c['submitted']} | {c['acknowledged']} "
            f"| {refused} | {c['completed']} | {c['failed']} | {c.get('cancelled', 0)} "
            f"| {c['lost']} "
            f"| {c['duplicated_events']} | {c['duplicated_webhooks']} "
            f"| {c['webhooks_delivered']}/{c['webhooks_expected']} | {_s(_fault_s(led))} "
            f"| {_s(led['recovery_s'])} | {_s(led['drain_s'])} |"
        )
    for name, test in sorted(tests.items()):
        if name not in by_test:
            lines.append(f"| `{name.split('::')[-1]}` | {test.outcome} |" + " |" * 13)
    lines.append("")
    failures = [t for t in tests.values() if t.outcome in ("failed", "error")]
    if failures:
        lines += ["## Failures", ""]
        lines += [f"- `{t.name}`: {t.message}" for t in failures]
        lines.append("")
    for led in ledgers:
        test = tests.get(led["test"])
        lines += [f"## {led['scenario']}: {led['title']}", ""]
        if test:
            lines.append(f"`{test.name}` — {test.outcome} in {test.seconds:.1f} s.")
            if test.message:
                lines.append(f"> {test.message}")
            lines.append("")
        c = led["counts"]
        if c["refused"]:
            refusals = ", ".join(f"{n} x `{k}`" for k, n in sorted(c["refused"].items()))
            lines += [f"- refused: {refusals}"]
        for fault in led["faults"]:
            lines.append(f"- fault: {fault['label']} ({_s(fault['duration_s'])})")
        for key, value in led["figures"].items():
            lines.append(f"- {_figure(key, value)}")
        if led["webhook_calls"]:
            calls = ", ".join(f"{k}: {v}" for k, v in led["webhook_calls"].items())
            lines.append(f"- webhook requests per receiver: {calls}")
        if led["problems"]:
            lines += ["", "Problems:", *(f"- {p}" for p in led["problems"])]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.report")
    parser.add_argument("--slow", action="store_true", help="also the long variants")
    parser.add_argument("--from", dest="source", type=Path, help="ledgers of an earlier run")
    parser.add_argument("--out", type=Path, default=REPORT)
    args, extra = parser.parse_known_args(argv)
    command = " ".join(
        ["python -m tests.reliability.report", *(["--slow"] if args.slow else []), *extra]
    )
    code = 0
    with tempfile.TemporaryDirectory(prefix="pdfrelay-ledgers-") as tmp:
        ledger_dir = args.source or Path(tmp)
        if args.source is None:
            code = run_suite(ledger_dir, args.slow, extra)
        ledgers = sorted(
            (json.loads(p.read_text()) for p in ledger_dir.glob("*.json")),
            key=lambda led: str(led["scenario"]),
        )
        tests = read_junit(ledger_dir / "junit.xml")
        args.out.write_text(render(ledgers, tests, command))
    print(f"wrote {args.out}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
