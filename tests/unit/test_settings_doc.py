"""README's settings table is the Settings model's, and its error table names every code."""

from __future__ import annotations

from infra import settings_doc
from shared.errors import ErrorCode
from shared.settings import Settings

README = settings_doc.README.read_text(encoding="utf-8")


def test_readme_settings_table_is_the_models() -> None:
    assert settings_doc.with_table(README) == README, (
        "README's settings table differs from shared/settings.py: run `make settings-doc`"
    )
    for name in Settings.model_fields:
        assert f"`PDFRELAY_{name.upper()}`" in README


def test_every_setting_has_a_description() -> None:
    missing = [n for n, f in Settings.model_fields.items() if not f.description]
    assert missing == [], "give these a docstring under the field in shared/settings.py"


def test_readme_error_table_names_every_error_code() -> None:
    table = README.split("<!-- error-table:begin -->")[1].split("<!-- error-table:end -->")[0]
    rows = {line.split("|")[1].strip().strip("`") for line in table.splitlines() if "| `" in line}
    assert rows == {code.value for code in ErrorCode}
