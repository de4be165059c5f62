"""The console's files: shipped as package data, self-contained, and free of HTML sinks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from handlers.console.static import load_assets

ROOT = Path(__file__).resolve().parents[2]


def test_the_assets_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "handlers*" in config["packages"]["find"]["include"]  # handlers.console with it
    assert config["package-data"]["handlers.console"] == ["static/*"]
    on_disk = {p.name for p in (ROOT / "handlers" / "console" / "static").iterdir()}
    assert set(load_assets()) == on_disk


def test_every_reference_is_to_a_served_file_of_our_own() -> None:
    assets = load_assets()
    html = assets["index.html"].body.decode()
    refs = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert refs
    for ref in refs:
        assert ref.startswith("/console/"), ref
        assert ref.removeprefix("/console/") in assets
    for name, asset in assets.items():
        if name.endswith(".js"):
            for module in re.findall(r'from "\./([^"]+)"', asset.body.decode()):
                assert module in assets, f"{name} imports {module}"


def test_no_inline_script_or_style_and_no_html_sinks() -> None:
    assets = load_assets()
    html = assets["index.html"].body.decode()
    assert "<script>" not in html
    assert "<style" not in html
    assert " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)
    for name, asset in assets.items():
        if name.endswith(".js"):
            text = asset.body.decode()
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
                assert sink not in text, f"{name} uses {sink}"
