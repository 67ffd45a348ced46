"""Summarise the `worst_case` sweep (canary leave-one-out evaluation per defense; Aerni, Zhang and
Tramer, CCS 2024) into one table: per defense and variant, the canaries' TPR at 1% (and, where at
least 1,000 non-member scores support it, 0.1%) FPR with its 95% interval over canaries, the AUC, the
copies' test accuracy and DP epsilon, beside the population TPR at 1% FPR of the shipped defense
table (the average case, mldoctor_bench.report.tradeoffs).

    mldoctor-bench -m +experiment=worst_case results_dir=results/worst-case
    python scripts/worst_case.py results/worst-case

Writes worst_case.md and worst_case.csv into the results folder and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from mldoctor_bench.defense_catalog import ORDER
from mldoctor_bench.families import WORST_CASE
from mldoctor_bench.report import stats, tradeoffs
from mldoctor_bench.report.collect import locate
from mldoctor_bench.results import merge_tables

POPULATION = tradeoffs.FAMILY_COLUMN["membership"]  # best TPR at 1% FPR (B,S) over the population


def interval(row: pd.Series, fpr: str) -> str:
    """``TPR [low, high]`` at ``fpr`` (``0.01``), or why there is none."""
    if pd.isna(row.get(f"tpr_at_fpr_{fpr}")):
        return f"n/a ({row['n_nonmembers']:.0f} non-member scores)"
    low, high = row[f"interval_low_at_fpr_{fpr}"], row[f"interval_high_at_fpr_{fpr}"]
    return f"{row[f'tpr_at_fpr_{fpr}']:.3f} [{low:.3f}, {high:.3f}]"


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (defense, variant): the worst-case metrics (seed 0 of each, or the first seed) and the
    shipped table's population TPR."""
    rows = stats.ok_rows(frame)
    rows = rows[stats.families(rows) == WORST_CASE]
    wide = rows.pivot_table(index=["defense", "variant", "seed"], columns="metric", values="value").reset_index()
    population = {}
    try:
        shipped, _ = tradeoffs.shipped()
        population = shipped[shipped["column"] == POPULATION].set_index("defense")["mean"].to_dict()
    except (FileNotFoundError, ValueError):
        pass
    wide["population_tpr_at_fpr_0.01"] = wide["defense"].map(population)
    order = {d: i for i, d in enumerate(ORDER)}
    return wide.sort_values(["defense", "variant", "seed"], key=lambda c: c.map(order) if c.name == "defense" else c)


def markdown(table: pd.DataFrame) -> str:
    lines = [
        "| defense | variant | seed | canary TPR at 1% FPR | canary TPR at 0.1% FPR | AUC | population TPR at 1% FPR "
        "| test accuracy | DP epsilon | copies x canaries |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for _, r in table.iterrows():
        eps = f"{r['epsilon']:.2f}" if "epsilon" in r and pd.notna(r["epsilon"]) else ""
        pop = f"{r['population_tpr_at_fpr_0.01']:.3f}" if pd.notna(r["population_tpr_at_fpr_0.01"]) else ""
        lines.append(
            f"| {r['defense']} | {r['variant']} | {int(r['seed'])} | {interval(r, '0.01')} "
            f"| {interval(r, '0.001')} | {r['auc']:.3f} | {pop} | {r['test_accuracy']:.3f} | {eps} "
            f"| {int(r['models'])} x {int(r['canaries'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", type=Path)
    args = parser.parse_args(argv)
    table = summary(merge_tables(locate(args.results_dir).tables))
    if table.empty:
        raise SystemExit(f"no worst_case rows under {args.results_dir}: run the worst_case experiment first")
    text = markdown(table)
    table.round(4).to_csv(args.results_dir / "worst_case.csv", index=False)
    (args.results_dir / "worst_case.md").write_text(text + "\n")
    print(text)
    print(f"wrote {args.results_dir / 'worst_case.md'} and {args.results_dir / 'worst_case.csv'}")


if __name__ == "__main__":
    main()
