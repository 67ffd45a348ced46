"""Summarise the `worst_case` sweep (canary leave-one-out evaluation per defense; Aerni, Zhang and
Tramer, CCS 2024): per defense and variant, the canaries' TPR at 1% (and, where at least 1,000
non-member scores support it, 0.1%) FPR with its 95% interval over canaries, the AUC, the copies'
test accuracy and DP epsilon, beside the population TPR at 1% FPR of the shipped defense table (the
average case, mldoctor_bench.report.tradeoffs); then the table mldoctor-assess reads
(mldoctor_bench.report.worst_case_table: the stronger variant per defense, its paired difference
from no defense and Holm's correction), written to src/mldoctor_bench/report/worst_case.csv and
.json unless --out says where. A DP-SGD set by its noise multiplier (matched to an accuracy by
scripts/tune_dp.py --match-accuracy) is its own row.

    make worst-case      # the sweep, the matched DP-SGD, then this script
    python scripts/worst_case.py results/worst-case
    python scripts/worst_case.py --accuracy-of none results/worst-case   # prints the copies' accuracy

Writes worst_case.md and worst_case.csv into the results folder and prints the tables.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import pandas as pd

from mldoctor_bench.defense_catalog import ORDER
from mldoctor_bench.families import WORST_CASE
from mldoctor_bench.report import stats, tradeoffs
from mldoctor_bench.report import worst_case_table as shipped_table
from mldoctor_bench.report.collect import locate
from mldoctor_bench.report.remedies import worst_case_section
from mldoctor_bench.results import merge_tables

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "mldoctor_bench" / "report"
COMMAND = "make worst-case"

POPULATION = tradeoffs.FAMILY_COLUMN["membership"]  # best TPR at 1% FPR (B,S) over the population


def interval(row: pd.Series, fpr: str) -> str:
    """``TPR [low, high]`` at ``fpr`` (``0.01``), or why there is none."""
    if pd.isna(row.get(f"tpr_at_fpr_{fpr}")):
        return f"n/a ({row['n_nonmembers']:.0f} non-member scores)"
    low, high = row[f"interval_low_at_fpr_{fpr}"], row[f"interval_high_at_fpr_{fpr}"]
    return f"{row[f'tpr_at_fpr_{fpr}']:.3f} [{low:.3f}, {high:.3f}]"


def summary(frame: pd.DataFrame, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per (cell, variant): the worst-case metrics and the shipped table's population TPR.
    ``labels`` (config hash to label) tells two cells of one defense apart; the defense names them
    otherwise."""
    rows = stats.ok_rows(frame)
    rows = rows[stats.families(rows) == WORST_CASE]
    rows = rows.assign(label=rows["config_hash"].map(labels or {}).fillna(rows["defense"]))
    wide = rows.pivot_table(
        index=["defense", "label", "variant", "seed"], columns="metric", values="value"
    ).reset_index()
    population = {}
    try:
        shipped, _ = tradeoffs.shipped()
        population = shipped[shipped["column"] == POPULATION].set_index("defense")["mean"].to_dict()
    except (FileNotFoundError, ValueError):
        pass
    wide["population_tpr_at_fpr_0.01"] = wide["defense"].map(population)
    order = {d: i for i, d in enumerate(ORDER)}
    return wide.sort_values(
        ["defense", "label", "variant", "seed"], key=lambda c: c.map(order) if c.name == "defense" else c
    )


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
            f"| {r['label']} | {r['variant']} | {int(r['seed'])} | {interval(r, '0.01')} "
            f"| {interval(r, '0.001')} | {r['auc']:.3f} | {pop} | {r['test_accuracy']:.3f} | {eps} "
            f"| {int(r['models'])} x {int(r['canaries'])} |"
        )
    return "\n".join(lines)


def notes(cells: list[shipped_table.CanaryCell], tuning: Path) -> list[str]:
    """How the shipped table was made: the design, the test, and the matched DP-SGD's search."""
    none = next(c for c in cells if c.defense == "none")
    out = [
        f"{none.masks.shape[0]} copies per defense, {none.masks.shape[1]} {none.canary_type} canaries each in half of "
        f"them; variants {' and '.join(sorted(none.scores))}, the strongest per defense (re-chosen in every "
        "resample). Intervals: 2,000 resamples of canaries, paired across defenses; p two-sided from the same "
        "resamples; Holm over the defenses' comparisons with no defense at 5%.",
        "Output-time defenses share the undefended copies through the model store and change only what is "
        "released; training-time defenses train their own copies. The attacker knows the defense: its "
        "references are the other copies, trained and released the same way.",
    ]
    matched = tuning / "match.csv"
    if matched.is_file():
        search = pd.read_csv(matched)
        out.append(
            f"The DP-SGD matched in accuracy: scripts/tune_dp.py --match-accuracy, {len(search)} DP trainings on "
            f"the shadow quarters (never the target's data), {search['seconds'].sum():.0f} s in all."
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--out", type=Path, default=PACKAGE, help="where the shipped table is written")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--accuracy-of", default=None, help="print this row's copies' test accuracy and stop")
    args = parser.parse_args(argv)
    source = locate(args.results_dir)
    cells = shipped_table.in_order([c for c in map(shipped_table.load_cell, source.cell_dirs) if c is not None])
    if args.accuracy_of is not None:
        found = [c.test_accuracy for c in cells if c.label == args.accuracy_of]
        if not found:
            raise SystemExit(f"no worst_case cell labelled {args.accuracy_of!r} under {args.results_dir}")
        print(f"{found[0]:.4f}")
        return
    frame = merge_tables(source.tables)
    table = summary(frame, {c.config_hash: c.label for c in cells})
    if table.empty:
        raise SystemExit(f"no worst_case rows under {args.results_dir}: run the worst_case experiment first")
    text = markdown(table)
    table.round(4).to_csv(args.results_dir / "worst_case.csv", index=False)
    if any(c.defense == "none" for c in cells):
        shipped = shipped_table.summarise(cells, resamples=args.resamples)
        args.out.mkdir(parents=True, exist_ok=True)
        shipped.round(4).to_csv(args.out / f"{shipped_table.NAME}.csv", index=False)
        versions = sorted(frame["code_version"].astype(str).unique())
        where = ", ".join(sorted({f"{d} / {a}, seed {s}" for d, a, s in frame[["dataset", "arch", "seed"]].values}))
        meta = {
            "command": COMMAND,
            "date": date.today().isoformat(),
            "code_version": ", ".join(versions),  # the code that ran the cells, not this script's
            "cell": where,
            "notes": notes(cells, args.results_dir / "tuning" / "dp_sgd"),
        }
        (args.out / f"{shipped_table.NAME}.json").write_text(json.dumps(meta, indent=2) + "\n")
        if args.out == PACKAGE:
            text += "\n\n" + "\n".join(worst_case_section())
        print(f"wrote {args.out / shipped_table.NAME}.csv and .json")
    else:
        print("no cell without a defense: the shipped table (differences from it) is not written")
    (args.results_dir / "worst_case.md").write_text(text + "\n")
    print(text)
    print(f"wrote {args.results_dir / 'worst_case.md'} and {args.results_dir / 'worst_case.csv'}")


if __name__ == "__main__":
    main()
