"""Summarise the ``exposure`` sweep (``make exposure``): per cell and then per architecture (mean
over seeds), what share of the members flagged at 1% FPR every membership series agrees on, how
far pairs of series agree beyond chance, whether attribute leakage concentrates on the members the
strongest membership series flags, and whether LiRA's and RMIA's flags repeat with other references.

    mldoctor-bench -m +experiment=exposure results_dir=results/exposure
    python scripts/exposure_summary.py results/exposure

Reads each finished cell's ``exposure.parquet`` and the cross-attack and repeat rows of its results
table (docs/reports.md says how each is computed) and prints Markdown tables. Only series that
scored every candidate and can measure 1% FPR (at least 100 non-members) enter the agreement; the
label-only attacks' subsets are left out of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from mldoctor_bench.report.collect import locate
from mldoctor_bench.report.exposure import EXPOSURE
from mldoctor_bench.report.exposure_section import flagged_sets, rows_of
from mldoctor_bench.results import merge_tables


def agreement(table: pd.DataFrame) -> dict[str, float]:
    """Among the membership series that flag every candidate at 1% FPR: how many members any of them
    flags, how many all of them flag, and that share."""
    members = table[(table["family"] == "membership") & (table["member"] == 1)]
    widest = members.groupby("series").size()
    full = set(widest[widest == widest.max()].index)
    sets = [flagged for series, flagged in flagged_sets(table).items() if series in full]
    if len(sets) < 2:
        return {"series": float(len(sets)), "any": np.nan, "all": np.nan, "share_all": np.nan}
    union, common = set().union(*sets), set.intersection(*sets)
    return {
        "series": float(len(sets)),
        "any": float(len(union)),
        "all": float(len(common)),
        "share_all": len(common) / len(union) if union else np.nan,
    }


def cell_summary(cell: Path, rows: pd.DataFrame) -> dict[str, float]:
    """One cell's line: agreement, pairwise Jaccard against chance, the attribute odds ratio and the
    repeatability of LiRA and RMIA (means over their variants)."""
    out = {"arch": rows["arch"].iloc[0], "seed": int(rows["seed"].iloc[0])}
    out.update(agreement(pd.read_parquet(cell / EXPOSURE)))
    cross = rows[(rows["attack"] == "exposure") & (rows["status"] == "ok")]
    wide = cross.pivot_table(index="variant", columns="metric", values="value")
    pairs = wide.dropna(subset=["jaccard"]) if "jaccard" in wide else wide.iloc[:0]
    out["pair_jaccard"] = float(pairs["jaccard"].mean()) if len(pairs) else np.nan
    out["pair_jaccard_chance"] = float(pairs["jaccard_chance"].mean()) if len(pairs) else np.nan
    out["pair_spearman"] = float(wide["spearman"].dropna().mean()) if "spearman" in wide else np.nan
    ratios = wide.dropna(subset=["odds_ratio"]) if "odds_ratio" in wide else wide.iloc[:0]
    for name, r in ratios.iterrows():
        tag = name.split(" | ")[0].replace("attribute ", "odds_ratio ")
        out[tag] = f"{r['odds_ratio']:.2f} [{r['odds_ratio_low']:.2f}, {r['odds_ratio_high']:.2f}]"
    ok = rows[rows["status"] == "ok"]
    for attack in ("membership_lira", "membership_rmia"):
        mine = ok[ok["attack"] == attack]
        for metric in ("repeat_jaccard", "repeat_stable_share"):
            values = mine.loc[mine["metric"] == metric, "value"]
            out[f"{attack.removeprefix('membership_')}_{metric}"] = float(values.mean()) if len(values) else np.nan
    return out


def cell_text(value) -> str:
    """Counts as integers, shares to three decimals, text as it is."""
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.0f}" if value.is_integer() and value > 1 else f"{value:.3f}"
    return str(value)


def markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for r in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell_text(v) for v in r) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", type=Path)
    args = parser.parse_args()
    source = locate(args.results_dir)
    frame = merge_tables(source.tables)
    lines = []
    for cell in source.cell_dirs:
        if not (cell / EXPOSURE).exists():
            continue
        lines.append(cell_summary(cell, rows_of(cell, frame)))
    if not lines:
        raise SystemExit(f"no finished cell under {args.results_dir} has {EXPOSURE}")
    cells = pd.DataFrame(lines).sort_values(["arch", "seed"])
    print("Per cell:\n")
    print(markdown(cells))
    numeric = cells.select_dtypes("number").drop(columns="seed")
    means = numeric.groupby(cells["arch"]).mean().reset_index()
    means.insert(1, "seeds", cells.groupby("arch")["seed"].nunique().to_numpy())
    print("\nMean over seeds, per architecture:\n")
    print(markdown(means))


if __name__ == "__main__":
    main()
