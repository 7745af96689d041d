"""Shared by the benchmark scripts: benchmark this checkout, and one `main` for all of them.

The benchmarks themselves live in `flowlin/_bench.py` (so that `flowlin bench` runs them from
an installed package); these scripts are thin command-line wrappers that write their JSON to
`benchmarks/results/` (git-ignored). The machine record (CPU model, cores, GPU, JAX backend,
versions, load average) and the JSON writer are `flowlin._bench.machine` / `write_json`.
"""

import argparse
import os
import pathlib
import sys


ROOT = pathlib.Path(__file__).resolve().parents[1]
# Benchmark the checkout these scripts live in, not whichever flowlin is installed.
sys.path.insert(0, str(ROOT))

from flowlin._bench import (  # noqa: E402
    _enable_x64 as enable_x64,  # noqa: F401
    machine as machine,
    write_json as write_json,
)


RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a small grid (seconds)")
    p.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(os.environ["OUT"]) if os.environ.get("OUT") else RESULTS,
        help="folder for the JSON (default: $OUT if set, else benchmarks/results/)",
    )
    return p


def finish(record: dict, out, name: str) -> None:
    path = write_json(record, out, name)
    m = record["machine"]
    print(
        f"machine: {m['cpu']} ({m['cores']} cores), gpu {m['gpu']}, backend {m['backend']}, "
        f"load {m['load_average']}"
    )
    print(f"wrote {path}")
