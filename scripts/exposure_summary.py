"""Summarise the ``exposure`` sweep (``make exposure``): per cell and then per architecture (mean
over seeds), what share of the members flagged at 1% FPR every membership series agrees on (and at
least half of them, and only one), how far pairs of series agree beyond chance (and the strongest
two attacks), whether attribute leakage concentrates on the members the strongest membership series
flags, and whether LiRA's and RMIA's flags repeat with other references.

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

from mldoctor_bench.attacks.reference_models import repeat_agreement
from mldoctor_bench.report.collect import locate
from mldoctor_bench.report.exposure import EXPOSURE
from mldoctor_bench.report.exposure_section import flagged_sets, rows_of
from mldoctor_bench.results import merge_tables


def full_series(table: pd.DataFrame) -> tuple[set[str], dict[str, set]]:
    """The membership series that score every candidate (the label-only subsets are left out), and
    the members each of them flags at 1% FPR, by series."""
    members = table[(table["family"] == "membership") & (table["member"] == 1)]
    widest = members.groupby("series").size()
    full = set(widest[widest == widest.max()].index)
    return full, {series: flagged for series, flagged in flagged_sets(table).items() if series in full}


def cross_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The cell's cross-attack rows (family and attack ``exposure``) that were computed."""
    return rows[(rows["attack"] == "exposure") & (rows["status"] == "ok")]


def agreement(table: pd.DataFrame) -> dict[str, float]:
    """Among the membership series that score every candidate and flag at least one member at 1% FPR
    (a series that flags none, such as a binary score whose ties stop short of 1% FPR, would make
    every intersection empty): how many members any of them flags, how many all of them flag, and
    those shares of the members any flags that at least half of the series flag and that only one
    series flags."""
    full, flagged_by = full_series(table)
    sets = [flagged for flagged in flagged_by.values() if flagged]
    out = {"series": float(len(full)), "flagging": float(len(sets))}
    if len(sets) < 2:
        return {**out, "any": np.nan, "all": np.nan, "share_all": np.nan}
    union, common = set().union(*sets), set.intersection(*sets)
    votes = pd.Series([sum(m in flagged for flagged in sets) for m in union], dtype=float)
    share = (lambda n: n / len(union)) if union else (lambda n: np.nan)
    return {
        **out,
        "any": float(len(union)),
        "all": float(len(common)),
        "share_all": share(len(common)),
        "share_half": share(float((votes >= len(sets) / 2).sum())),
        "share_one": share(float((votes == 1).sum())),
    }


def cell_summary(cell: Path, table: pd.DataFrame, rows: pd.DataFrame) -> dict[str, float]:
    """One cell's line: agreement, pairwise Jaccard against chance (pairs of series that both flag a
    member), the attribute odds ratio and the repeatability of LiRA and RMIA (means over their
    variants)."""
    out = {"arch": rows["arch"].iloc[0], "seed": int(rows["seed"].iloc[0])}
    out.update(agreement(table))
    wide = cross_rows(rows).pivot_table(index="variant", columns="metric", values="value")
    pairs = wide.dropna(subset=["jaccard"]) if "jaccard" in wide else wide.iloc[:0]
    pairs = pairs[(pairs["flagged_a"] > 0) & (pairs["flagged_b"] > 0)]  # as in agreement(): both flag someone
    out["pair_jaccard"] = float(pairs["jaccard"].mean()) if len(pairs) else np.nan
    out["pair_jaccard_chance"] = float(pairs["jaccard_chance"].mean()) if len(pairs) else np.nan
    out["pair_spearman"] = float(wide["spearman"].dropna().mean()) if "spearman" in wide else np.nan
    ratios = wide.dropna(subset=["odds_ratio"]) if "odds_ratio" in wide else wide.iloc[:0]
    for name, r in ratios.iterrows():
        tag = name.split(" | ")[0].replace("attribute ", "odds_ratio ")
        out[tag] = f"{r['odds_ratio']:.2f} [{r['odds_ratio_low']:.2f}, {r['odds_ratio_high']:.2f}]"
    for attack in ("membership_lira", "membership_rmia"):
        for metric, value in repeatability(cell / attack).items():
            out[f"{attack.removeprefix('membership_')}_{metric}"] = value
    return out


def strongest_pair(table: pd.DataFrame, rows: pd.DataFrame) -> dict:
    """The full-candidate membership series that flags the most members at 1% FPR and the one that
    flags the most of another attack (two variants of one attack share its models), and their
    cross-attack row: the Jaccard of their flagged members (interval, chance) and Spearman."""
    attack_of = dict(zip(table["series"], table["attack"]))
    counts = {series: len(flagged) for series, flagged in full_series(table)[1].items()}
    ranked = sorted(counts, key=lambda k: (-counts[k], k))
    top = ranked[:1] + [k for k in ranked if ranked and attack_of[k] != attack_of[ranked[0]]][:1]
    out = {"arch": rows["arch"].iloc[0], "seed": int(rows["seed"].iloc[0]), "pair": " | ".join(top)}
    cross = cross_rows(rows)
    pair = cross[cross["variant"].isin([" | ".join(top), " | ".join(top[::-1])])]
    value = pair.set_index("metric")["value"]
    if len(top) < 2 or value.empty:
        return out
    out["flagged"] = f"{value['flagged_a']:.0f}, {value['flagged_b']:.0f}"
    out["jaccard"] = f"{value['jaccard']:.3f} [{value['jaccard_low']:.3f}, {value['jaccard_high']:.3f}]"
    out["chance"] = float(value["jaccard_chance"])
    out["spearman"] = float(value["spearman"])
    return out


def repeatability(attack_dir: Path) -> dict[str, float]:
    """:func:`repeat_agreement` (the Jaccard of the members flagged at 1% FPR between repeats, its
    chance value, the share flagged by every repeat) per variant from every ``repeats.parquet``
    under ``attack_dir``, averaged over the variants; recomputed from the saved scores, so cells
    written before the chance value was a row have it too."""
    found = []
    for path in sorted(attack_dir.glob("*/repeats.parquet")):
        table = pd.read_parquet(path)
        for _, variant in table.groupby("variant"):
            runs = [(r["label"].to_numpy(), r["score"].to_numpy()) for _, r in variant.groupby("repeat")]
            found.append(repeat_agreement(runs))
    keys = ("repeat_jaccard", "repeat_jaccard_chance", "repeat_stable_share")
    return {k: float(np.nanmean([f[k] for f in found])) if found else np.nan for k in keys}


# columns of whole numbers (a mean over seeds to one decimal)
COUNTS = ("seed", "seeds", "series", "flagging", "any", "all")


def cell_text(value, column: str) -> str:
    """Counts as whole numbers, shares to three decimals, text as it is."""
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return ""
        if column in COUNTS:
            return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
        return f"{value:.3f}"
    return str(value)


def markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for r in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell_text(v, c) for v, c in zip(r, cols)) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", type=Path)
    args = parser.parse_args()
    source = locate(args.results_dir)
    frame = merge_tables(source.tables)
    lines, pairs = [], []
    for cell in source.cell_dirs:
        if not (cell / EXPOSURE).exists():
            continue
        table, rows = pd.read_parquet(cell / EXPOSURE), rows_of(cell, frame)
        lines.append(cell_summary(cell, table, rows))
        pairs.append(strongest_pair(table, rows))
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
    print("\nThe series that flags the most members and the strongest of another attack, per cell:\n")
    print(markdown(pd.DataFrame(pairs).sort_values(["arch", "seed"])))


if __name__ == "__main__":
    main()
