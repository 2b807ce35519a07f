"""``python -m bench [--markdown FILE] [--quick] [--only KEY ...]``: run the measures,
print the table, optionally write BENCHMARKS.md. Reports; never asserts timings."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import time
import traceback
from pathlib import Path

import anyio

from . import _report
from ._common import MEASURES, Context, Figure, Spec


def _discover() -> list[Spec]:
    """Import every public module of this package: each registers its measure."""
    package = Path(__file__).parent
    for module in pkgutil.iter_modules([str(package)]):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__package__}.{module.name}")
    return sorted(MEASURES.values(), key=lambda spec: spec.order)


def main(argv: list[str] | None = None) -> int:
    specs = _discover()
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run the benchmark suite; print the table.")
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="also write the results as Markdown (BENCHMARKS.md)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions: a smoke run, not figures to publish")
    parser.add_argument("--only", nargs="+", choices=[s.key for s in specs], metavar="KEY",
                        help=f"run only these measures: {', '.join(s.key for s in specs)}")
    args = parser.parse_args(argv)
    if args.only:
        specs = [s for s in specs if s.key in args.only]
    # Restart warnings are expected (we kill Litestream on purpose); errors still show.
    logging.getLogger("asgi_litestream").setLevel(logging.ERROR)

    ctx = Context(quick=args.quick)
    machine = _report.machine(ctx.binary)
    results: list[tuple[Spec, list[Figure]]] = []
    started = time.monotonic()
    try:
        for spec in specs:
            _report.progress(f"{spec.title} ...")
            begun = time.monotonic()
            try:
                figures = anyio.run(spec.run, ctx)
            except Exception as exc:  # one broken measure must not hide the others
                traceback.print_exc()
                figures = [Figure(name="failed", value=None,
                                  detail=f"{type(exc).__name__}: {exc}")]
            _report.progress(f"{spec.title}: {time.monotonic() - begun:.0f} s")
            results.append((spec, figures))
    finally:
        left_behind = ctx.close()
    elapsed = time.monotonic() - started
    sys.stdout.write(_report.table(results, elapsed, left_behind) + "\n")
    if args.markdown:
        args.markdown.write_text(_report.markdown(results, elapsed, left_behind, machine),
                                 encoding="utf-8")
        _report.progress(f"wrote {args.markdown}")
    failed = any(f.name == "failed" for _, figures in results for f in figures)
    return 1 if left_behind or failed else 0


if __name__ == "__main__":
    sys.exit(main())
