"""Benchmark the model cache and resume on a four-cell sweep (quick profile defaults).

Runs ``mldoctor-bench -m attack=membership threat_model=blackbox_shadow
attack.membership.epochs=10,20,30,40`` three times, each timed with ``time.perf_counter``:

1. with the model cache (fresh results dir): target and shadow are trained once, shared by the cells;
2. without it (``cache.enabled=false``, another fresh results dir): every cell trains its own;
3. the cached sweep again, nothing changed: every cell is already done and is skipped.

Prints the times, the speed-up (no cache / cache) and the rerun as a fraction of the first run.
Usage: ``OMP_NUM_THREADS=1 python scripts/bench_cache.py [--keep DIR] [extra overrides...]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["-m", "attack=membership", "threat_model=blackbox_shadow", "attack.membership.epochs=10,20,30,40"]


def cli() -> str:
    exe = Path(sys.executable).parent / "mldoctor-bench"
    return str(exe) if exe.exists() else "mldoctor-bench"


def timed_sweep(results_dir: Path, extra: list[str]) -> float:
    """Run the sweep into ``results_dir``; return its wall time in seconds (fail loudly on error)."""
    cmd = [cli(), *SWEEP, f"results_dir={results_dir}", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the results dirs here and keep them")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="mldoctor-bench-cache-"))
    base.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        cached = timed_sweep(base / "cache", ["cache.enabled=true", *args.overrides])
        print(f"cache on : {cached:8.1f} s", flush=True)
        uncached = timed_sweep(base / "nocache", ["cache.enabled=false", *args.overrides])
        print(f"cache off: {uncached:8.1f} s", flush=True)
        rerun = timed_sweep(base / "cache", ["cache.enabled=true", *args.overrides])
        print(f"rerun    : {rerun:8.1f} s (nothing changed)", flush=True)
        print(f"speed-up (cache off / cache on): {uncached / cached:.2f}x  (target: >= 3x)")
        print(f"rerun / first cached run: {rerun / cached:.1%}  (target: < 20%)")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
