"""README's settings table, made from the Settings model: `python -m infra.settings_doc --write`
(`make settings-doc`) rewrites it between its markers; without `--write` it prints the table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path

from pydantic import SecretStr

from shared.settings import METRICS_PORTS, Settings

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN = "<!-- settings-table:begin (python -m infra.settings_doc --write) -->"
END = "<!-- settings-table:end -->"

SHOWN_DEFAULTS = {
    "extract_workers": "number of CPUs",
    "metrics_port": ", ".join(f"{name} `{port}`" for name, port in METRICS_PORTS.items()),
    "log_format": "`json` for `run`, `text` otherwise",
    "public_base_url": "`http://{host}:{port}`",
    "tessdata_dir": "probed",
    "llm_prompt": "asks for faithful Markdown of the page (`DEFAULT_LLM_PROMPT`)",
}
"""Defaults a value cannot show (computed, or chosen per command)."""


def _default(name: str) -> str:
    if name in SHOWN_DEFAULTS:
        return SHOWN_DEFAULTS[name]
    field = Settings.model_fields[name]
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, tuple):
        return "empty" if not value else ", ".join(f"`{v}`" for v in value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def table() -> str:
    """The settings table: one row per field of Settings, in the model's order."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        meaning = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `PDFRELAY_{name.upper()}` | {_default(name)} | {meaning} |")
    return "\n".join(rows) + "\n"


def with_table(readme: str) -> str:
    """`readme` with the text between the markers replaced by the current table."""
    head, sep, rest = readme.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"README has no {BEGIN} … {END} markers")
    return f"{head}{BEGIN}\n{table()}{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.settings_doc", description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite README.md's table")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(table())
        return 0
    README.write_text(with_table(README.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
