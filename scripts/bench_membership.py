"""Membership power per second of compute on the quick default cell: every membership attack, side by
side on the same targets, its TPR at 1% FPR and AUC over seeds against the seconds the attacker spent
beyond the target (models trained for the attack plus the attack's own phase; see
``mldoctor_bench.report.frontier``), with the Pareto-optimal attacks marked.

Per seed, these runs of the same cell share one model store (the target and shadow model are trained
once; LiRA and RMIA share offline references of the same number):

1. MemInf, the four metric attacks and QMIA (both variants), under (B,S);
2. the three label-only attacks under (B,L);
3. RMIA offline and LiRA's offline variants with each of ``--offline`` references (RMIA's offline
   variant chooses its ``a`` on one reference held back as a stand-in target, so it needs two or more);
4. LiRA's online variants with each of ``--online`` references.

Writes ``frontier.csv`` and ``frontier.md`` (the table) and the figure into ``--results-dir`` and
prints the table; with ``--ship``, also ``src/mldoctor_bench/report/membership_frontier.csv`` and
``.json`` (what ``mldoctor-assess``'s budget ranks membership attacks by, with how it was measured).
Usage: ``python scripts/bench_membership.py [--seeds 0 1 2] [--online 4 8 16] [--offline 2 4]
[--results-dir DIR] [--device auto] [--ship]``. Rerunning with the same folder skips what is done.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mldoctor_bench.provenance import code_version
from mldoctor_bench.report.collect import finished_cells
from mldoctor_bench.report.frontier import frontier_figures, frontier_of, frontier_table

SHADOW = "threat_model=blackbox_shadow"
SHIPPED = Path(__file__).resolve().parents[1] / "src" / "mldoctor_bench" / "report" / "membership_frontier"
COLUMNS = ["attack", "threat_model", "variant", "num_references", "seeds", "cost_s", "tpr", "tpr_low", "tpr_high"]


def runs(online: list[int], offline: list[int]) -> list[list[str]]:
    """The overrides of each run of one seed."""
    out = [
        [
            "attack=[membership,membership_metric,membership_qmia]",
            SHADOW,
            "attack.membership_qmia.variants=[gaussian,quantile]",
        ],
        ["attack=membership_label_only", "threat_model=blackbox_label_only"],
    ]
    out += [
        [
            "attack=[membership_rmia,membership_lira]",
            SHADOW,
            f"attack.membership_rmia.num_references={k}",
            f"attack.membership_lira.num_references={k}",
            "attack.membership_lira.variants=[offline,offline_fixed_var]",
        ]
        for k in offline
    ]
    out += [
        [
            "attack=membership_lira",
            SHADOW,
            f"attack.membership_lira.num_references={k}",
            "attack.membership_lira.variants=[online,online_fixed_var]",
        ]
        for k in online
    ]
    return out


def ship(table, args: argparse.Namespace) -> None:
    """The frontier as the package ships it, and how it was measured."""
    table[COLUMNS + ["auc", "pareto"]].round(4).to_csv(SHIPPED.with_suffix(".csv"), index=False)
    about = {
        "command": f"python scripts/bench_membership.py --results-dir {args.results_dir} --ship",
        "code_version": code_version(),
        "date": time.strftime("%Y-%m-%d"),
        "cell": f"mnist5k / simple_cnn, quick profile, seeds {', '.join(map(str, args.seeds))}",
        "machine": f"{os.cpu_count()} CPU cores, device {args.device}",
        "notes": [
            "cost_s: the attacker's seconds beyond the target (its models' train_seconds plus its attack "
            "phase), mean over seeds; tpr: TPR at 1% FPR, mean and 95% t interval over seeds.",
        ],
    }
    SHIPPED.with_suffix(".json").write_text(json.dumps(about, indent=2) + "\n")
    print(f"wrote {SHIPPED.with_suffix('.csv')} and .json")


def cli() -> str:
    exe = Path(sys.executable).parent / "mldoctor-bench"
    return str(exe) if exe.exists() else "mldoctor-bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--online", type=int, nargs="+", default=[4, 8, 16], help="LiRA online references")
    parser.add_argument("--offline", type=int, nargs="+", default=[2, 4], help="RMIA and LiRA offline references")
    parser.add_argument("--results-dir", type=Path, default=Path("results/membership-frontier"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ship", action="store_true", help="also write the package's membership_frontier.csv")
    args = parser.parse_args()
    if min(args.offline) < 2:
        sys.exit("--offline: RMIA's offline variant needs at least 2 references (one is held back to choose a)")
    for seed in args.seeds:
        for overrides in runs(args.online, args.offline):
            cmd = [cli(), *overrides, f"seed={seed}", f"device={args.device}", f"results_dir={args.results_dir}"]
            print("$", " ".join(cmd), flush=True)
            started = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    table = frontier_of(finished_cells(args.results_dir))
    table.to_csv(args.results_dir / "frontier.csv", index=False)
    text = frontier_table(table)
    (args.results_dir / "frontier.md").write_text(text + "\n")
    for drawn in frontier_figures(table, args.results_dir):
        print(drawn.title, "->", drawn.path or drawn.note)
    print(text)
    if args.ship:
        ship(table, args)


if __name__ == "__main__":
    main()
