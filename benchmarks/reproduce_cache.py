"""`flowlin reproduce all` with a cold and a warm persistent compilation cache.

Runs the command twice in fresh processes, the first with an empty cache folder
(`FLOWLIN_COMPILATION_CACHE=<tmp>`; everything is compiled and written), the second with the
folder the first one filled: the difference is the compilation the cache saves. Optionally
(`--no-cache-run`) a third run with the cache off, for the cost of writing it. Wall time and
the children's CPU time (`resource.getrusage(RUSAGE_CHILDREN)`). Target: the warm run at least
1.5× faster than the cold one.

    python benchmarks/reproduce_cache.py --quick   # reduced sizes (`reproduce all --quick`)
    python benchmarks/reproduce_cache.py           # the papers' sizes (minutes)
"""

import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time


# Benchmark the checkout this script lives in, not whichever flowlin is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import _harness as H  # noqa: E402


TARGET_SPEEDUP = 1.5


def one_run(out: pathlib.Path, cache: str, quick: bool) -> dict:
    """One `flowlin reproduce all` in a fresh process: wall and CPU seconds."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(H.ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["FLOWLIN_COMPILATION_CACHE"] = cache
    cmd = [sys.executable, "-m", "flowlin", "reproduce", "all", "--out", str(out), "--no-progress"]
    if quick:
        cmd.append("--quick")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = proc.stdout[-2000:] + "\n" + proc.stderr[-3000:]
        raise RuntimeError(f"flowlin reproduce failed:\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    load = H.load_average()
    return dict(wall_s=wall, cpu_s=cpu, load=load[0] if load else None)


def reproduce_cache(quick: bool, *, no_cache_run: bool = False, echo=print) -> dict:
    """Cold then warm (and optionally no) compilation cache, side by side."""
    load_before = H.load_average()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        runs = [("cold", str(tmp / "cache")), ("warm", str(tmp / "cache"))]
        if no_cache_run:
            runs.append(("off", "0"))
        for i, (name, cache) in enumerate(runs):
            row = dict(cache=name, **one_run(tmp / f"out{i}", cache, quick))
            rows.append(row)
            echo(f"  cache {name}: {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU")
        entries = len(list((tmp / "cache").glob("*")))
    cold, warm = rows[0], rows[1]
    for row in rows:
        row["speedup_wall"] = cold["wall_s"] / row["wall_s"]
        row["speedup_cpu"] = cold["cpu_s"] / row["cpu_s"]
    echo("")
    H.print_table(
        rows,
        [
            ("cache", "compilation cache", ""),
            ("wall_s", "wall (s)", ".1f"),
            ("cpu_s", "CPU (s)", ".1f"),
            ("speedup_wall", "cold / this, wall", ".2f"),
            ("speedup_cpu", "cold / this, CPU", ".2f"),
            ("load", "load", ".1f"),
        ],
        echo=echo,
    )
    share = warm["wall_s"] / cold["wall_s"]
    echo(f"cache entries: {entries}; the warm run took {share:.2f} of the cold run's time")
    settings = dict(command="flowlin reproduce all" + (" --quick" if quick else ""), quick=quick,
                    target_speedup=TARGET_SPEEDUP, cache_entries=entries)  # fmt: skip
    return H.record(
        "reproduce_cache", settings, rows, load_before=load_before, load_after=H.load_average()
    )


if __name__ == "__main__":
    p = H.parser(__doc__)
    p.add_argument("--no-cache-run", action="store_true", help="a third run, cache off")
    args = p.parse_args()
    H.finish(reproduce_cache(args.quick, no_cache_run=args.no_cache_run), args.out,
             "reproduce_cache")  # fmt: skip
