#!/usr/bin/env bash
# Every GPU figure in one call: the tests marked `gpu` (bf16 and fp32 agree in accuracy, stacked
# training equals one-by-one, a default cell completes on CUDA) and `scripts/bench.py --gpu`.
# Prints a short summary at the end; without a CUDA device it says so and exits 0.
# Usage: scripts/gpu_check.sh   (PYTHON=... to pick the interpreter; default .venv/bin/python)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "no CUDA device: nothing to check here (the gpu tests skip without one; run this on a CUDA machine)"
    exit 0
fi
"$PY" -c 'import torch; print("CUDA device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)'

log=$(mktemp -d)
echo "== tests marked gpu =="
"$PY" -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "$log/tests.txt"
tests_rc=${PIPESTATUS[0]}
echo "== scripts/bench.py --gpu =="
"$PY" scripts/bench.py --gpu --json "$log/bench.json" 2>&1 | tee "$log/bench.txt"
bench_rc=${PIPESTATUS[0]}

echo "== summary =="
echo "gpu tests: $(tail -n 1 "$log/tests.txt") (exit $tests_rc)"
grep -E "ratio|speedup|agreement|wall|images/s" "$log/bench.txt" | sed 's/^ */bench: /'
echo "bench exit $bench_rc; full output in $log"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
