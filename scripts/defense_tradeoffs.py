"""Summarise the `defense_tradeoffs` sweep into the table behind mldoctor-assess's "What to do" and
"Defense measurements".

    mldoctor-bench -m +experiment=defense_tradeoffs results_dir=results/defense-tradeoffs
    python scripts/defense_tradeoffs.py results/defense-tradeoffs

Writes src/mldoctor_bench/report/defense_tradeoffs.csv (one row per defense and column: the seed mean
and its 95% interval, the difference from no defense and the interval of that difference; see
mldoctor_bench.report.tradeoffs) and defense_tradeoffs.json (the commands, the cell, the code version
and date) unless --out says where, and prints the table.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import pandas as pd

from mldoctor_bench.report import stats, tradeoffs
from mldoctor_bench.report.collect import locate, score_files, score_intervals
from mldoctor_bench.results import merge_tables

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "mldoctor_bench" / "report"
SWEEP = "mldoctor-bench -m +experiment=defense_tradeoffs results_dir=results/defense-tradeoffs"
SUMMARY = "python scripts/defense_tradeoffs.py results/defense-tradeoffs"


def notes(frame) -> list[str]:
    """How the table was made, with the seeds each defense's row rests on."""
    seeds = frame.groupby("defense")["seed"].nunique()
    counts = ", ".join(f"{d} {seeds[d]}" for d in tradeoffs.ORDER if d in seeds)
    return [
        "dp_sgd: target epsilon 8 at delta 1e-5 (Opacus picks the noise) with the recipe scripts/tune_dp.py "
        "chose on the attacker-side quarters, never the target's data (batch 64, 80 epochs, lr 0.01, "
        "clipping norm 1.5; docs/results.md, DP-SGD's recipe).",
        "Output-time defenses (output_*) change only released posteriors: white-box (W,S) numbers are the "
        "undefended model's.",
        "The attacker knows the defense (attacker.knows_defense=true): its shadow and reference models are "
        "trained and read as the target is.",
        f"Seeds per defense: {counts}. Means carry a 95% t interval over the seeds; a difference from no "
        "defense is paired over the seeds both rows have (t, n - 1 degrees of freedom), and with a single "
        "seed the two runs' own 95% intervals are combined as independent. A defense is named as lowering "
        "or raising a family only when its difference survives Holm's correction over that column's "
        "comparisons (each defense against no defense; p read back from the interval). A seed pairs with "
        "no defense's only when both ran under the same torch thread count (timings.json; cells that did "
        "not record it pair regardless).",
    ]


def thread_counts(cell_dirs: list[Path]) -> dict[tuple[str, int], int]:
    """Each cell's (defense, seed) -> torch thread count, from its timings.json where recorded."""
    out = {}
    for cell in cell_dirs:
        timings, done = cell / "timings.json", cell / "results.parquet"
        if timings.is_file() and done.is_file():
            count = json.loads(timings.read_text()).get("torch_threads")
            key = pd.read_parquet(done, columns=["defense", "seed"]).iloc[0]
            if count is not None:
                out[(str(key["defense"]), int(key["seed"]))] = int(count)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--out", type=Path, default=PACKAGE)
    args = parser.parse_args()
    source = locate(args.results_dir)
    frame = merge_tables(source.tables)
    single = stats.single_run_intervals(frame, score_intervals(score_files(source.cell_dirs), stats.single_runs(frame)))
    table = tradeoffs.summarise(frame, single, threads=thread_counts(source.cell_dirs))
    seeds = sorted(frame["seed"].unique().tolist())
    args.out.mkdir(parents=True, exist_ok=True)
    table.round(4).to_csv(args.out / "defense_tradeoffs.csv", index=False)
    meta = {
        "command": SWEEP,
        "summary": SUMMARY,
        "date": date.today().isoformat(),
        # the code that ran the sweep's cells (the table's provenance), not this script's
        "code_version": ", ".join(sorted(frame["code_version"].astype(str).unique())),
        "cell": f"mnist5k / simple_cnn, quick profile, seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}",
        "notes": notes(frame),
    }
    (args.out / "defense_tradeoffs.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(table.to_string(index=False))
    print(f"wrote {args.out / 'defense_tradeoffs.csv'} and {args.out / 'defense_tradeoffs.json'}")


if __name__ == "__main__":
    main()
