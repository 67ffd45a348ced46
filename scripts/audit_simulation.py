"""Both one-run audit bounds on a mechanism whose epsilon is known: the one-run game where each of
``m`` canaries is included with probability 1/2 and its score is ``mu * included + N(0, 1)`` (releasing
the scores is ``mu``-GDP towards each canary, so its epsilon at ``delta`` is known exactly). Per
(mu, m): the mean of Steinke et al.'s bound and of the f-DP bound (Mahloujifar et al.) over the runs,
and how often each exceeded the true epsilon (a valid bound at confidence 1 - beta does so in at
most beta of the runs), with the audit's own guess grid and Bonferroni correction.

    python scripts/audit_simulation.py [--runs 1000] [--big-runs 200] [--mus 0.5,1,2] [--ms 100,1000,10000]

Prints a markdown table (docs/defenses.md, the audit section).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mldoctor_bench.audit_bound import audit
from mldoctor_bench.audit_fdp import audit_fdp, gdp_epsilon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--big-runs", type=int, default=200, help="runs for m of 10,000 and more")
    parser.add_argument("--mus", default="0.5,1,2")
    parser.add_argument("--ms", default="100,1000,10000")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--beta", type=float, default=0.05)
    args = parser.parse_args()
    print(
        "| mu | true epsilon | canaries | runs | Steinke et al.: mean | above the truth | f-DP: mean | above the truth "
        "| seconds |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mu in (float(v) for v in args.mus.split(",")):
        truth = gdp_epsilon(mu, args.delta)
        for m in (int(v) for v in args.ms.split(",")):
            runs = args.runs if m < 10_000 else args.big_runs
            rng, start = np.random.default_rng(m), time.perf_counter()
            steinke, fdp = np.empty(runs), np.empty(runs)
            for i in range(runs):
                included = rng.random(m) < 0.5
                scores = mu * included + rng.normal(size=m)
                same = dict(delta=args.delta, beta=args.beta, seed=i)
                steinke[i] = audit(scores, included, **same).epsilon_lower_bound
                fdp[i] = audit_fdp(scores, included, **same).epsilon_lower_bound
            print(
                f"| {mu:g} | {truth:.2f} | {m:,} | {runs:,} | {steinke.mean():.2f} | {(steinke > truth).mean():.3f} "
                f"| {fdp.mean():.2f} | {(fdp > truth).mean():.3f} | {time.perf_counter() - start:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
