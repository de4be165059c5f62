"""`python -m tests.perf [NAME…] [-- OPTIONS…]`: run every benchmark module of tests/perf (or the
named ones).

Arguments from the first that starts with `-` on are the benchmarks' own options, given to every
named benchmark's `main(argv)` (`python -m tests.perf peer --quick --out peer.json`).

A benchmark module is a `bench_*.py` beside this file with a `main()`; `bench_core` runs first,
the others (`bench_markdown`, …) in name order, each only when it is there.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

FIRST = "bench_core"


def discover() -> list[str]:
    found = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    return sorted(found, key=lambda name: name != FIRST)


def _load(name: str) -> Callable[..., object] | None:
    module_name = f"{__package__ or 'tests.perf'}.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # the module is there but something it imports is not: a real error
        return None
    return cast(Callable[..., object], getattr(module, "main", None))


def _run(bench: Callable[..., object], options: Sequence[str]) -> object:
    # A main(argv=None) would parse our own command line; give it only the options.
    if inspect.signature(bench).parameters:
        return bench(list(options))
    return bench()


def main(argv: Sequence[str]) -> int:
    known = discover()
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = list(argv[:split]), [a for a in argv[split:] if a != "--"]
    if options and not names:
        print(
            "options need the benchmark(s) they are for: python -m tests.perf NAME --opt",
            file=sys.stderr,
        )
        return 2
    wanted = [a if a.startswith("bench_") else f"bench_{a}" for a in names]
    unknown = [w for w in wanted if w not in known]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; there are {known}", file=sys.stderr)
        return 2
    status = 0
    for name in known:
        if wanted and name not in wanted:
            continue
        bench = _load(name)
        if bench is None:
            print(f"\n(skipping {name}: no main() in tests/perf/{name}.py)", flush=True)
            continue
        print(f"\n######## {name}\n", flush=True)
        # One benchmark that fails does not keep the others from running; the status tells.
        try:
            result = _run(bench, options)
        except Exception:
            traceback.print_exc()
            result = 1
        if isinstance(result, int) and result != 0:
            status = result
        sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
