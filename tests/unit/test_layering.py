"""The import rules of the tree: no import cycle, no upward import, no private name borrowed.

Every import counts, also one inside a function or under `TYPE_CHECKING`: a cycle postponed to
run time is still a cycle in the design. The layers, lowest first; a module may import its own
layer and the layers below it, never one above:
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "handlers", "infra")

LAYERS: tuple[tuple[str, ...], ...] = (
    # the vocabulary: settings, errors, messages and records, and the two pure parsers of
    # their values (the `pages` option, the webhook retry schedule)
    ("shared.settings", "shared.errors", "shared.models", "shared.intake.pages",
     "shared.webhooks.retry"),
    # observability and the adapters to the outside (broker, S3, topology, digests, tessdata)
    ("shared.obs", "shared.adapters"),
    # extraction: the engine and the worker pool; the fan-out's planning and merging
    ("shared.extraction",),
    # the running process (context, consumer, cancels heard) and the record store it holds
    ("shared.runtime", "shared.jobs.records"),
    # the core: the job lifecycle and everything about jobs; webhook delivery
    ("shared.jobs", "shared.webhooks"),
    # what sits at the doors: intake (submission), door-specific shapes, the HTTP API's shapes
    ("shared.intake", "shared.doors", "shared.api"),
    # the handlers: decode, call the core or extraction, encode
    ("handlers",),
    # deployment and tooling: entry points, CLI, the S3 test server
    ("infra",),
)  # fmt: skip


def layer_of(module: str) -> int:
    """The layer of the longest prefix that names `module` (or a package above it)."""
    best, rank = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS"
    return rank


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if name in PACKAGES and not path.read_text().strip():
                continue  # the empty top-level package: nothing to place
            found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> Iterator[tuple[str, tuple[str, ...], int]]:
    """(module imported, names taken from it, line) for every project import in `path`."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] not in PACKAGES:
                continue
            plain: list[str] = []
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in known:
                    yield sub, (), node.lineno
                else:
                    plain.append(alias.name)
            if plain:
                yield node.module, tuple(plain), node.lineno


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    edges: dict[str, dict[str, int]] = {m: {} for m in known}
    for name, path in known.items():
        for target, _names, line in imports(path, known):
            if target != name and target in known:
                edges[name].setdefault(target, line)
    return edges


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_no_upward_import() -> None:
    upward = [
        f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)}), line {line}"
        for m, targets in graph().items()
        for t, line in targets.items()
        if layer_of(t) > layer_of(m)
    ]
    assert upward == []


def test_no_private_name_imported_from_another_module() -> None:
    known = modules()
    borrowed = [
        f"{name}:{line} takes {', '.join(n for n in names if n.startswith('_'))} from {target}"
        for name, path in known.items()
        for target, names, line in imports(path, known)
        if target != name and any(n.startswith("_") for n in names)
    ]
    assert borrowed == []


def test_every_module_has_a_layer_and_shared_never_imports_up_the_tree() -> None:
    for name in modules():
        layer_of(name)
    assert layer_of("shared.jobs.lifecycle") < layer_of("handlers") < layer_of("infra")
