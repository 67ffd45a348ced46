"""The defense trade-off table: what each defense costs in utility and what it removes, per attack
family, measured by the ``defense_tradeoffs`` sweep (``make defense-tradeoffs``) and shipped with the
package for ``mldoctor-assess``'s "What to do" section.

The table is long: one row per (defense, column) with the seed mean, its 95% interval, and the
difference from no defense with the interval of that difference: paired over seeds (each seed's
defended and undefended targets share their partition) where there are several, t with ``n - 1``
degrees of freedom; for a single seed, the two runs' own intervals combined as independent
(``sqrt(h1^2 + h2^2)``). A defense counts as lowering (or raising) a family only when its
difference survives Holm's correction over that column's comparisons (every defense against no
defense), its p-value read from the interval it was made with (:func:`difference_pvalues`). With 3
seeds and 6 defenses that takes a large, consistent difference: an unadjusted interval that excludes
zero is not enough.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from mldoctor_bench.defense_catalog import ORDER
from mldoctor_bench.report import intervals, stats
from mldoctor_bench.report.significance import ALPHA, holm, holm_adjusted

NAME = "defense_tradeoffs"  # report/defense_tradeoffs.csv and .json, shipped with the package
# (column, attack or attacks (the larger value counts), threat model, metric)
COLUMNS = [
    ("test accuracy", "target", "none", "test_accuracy"),
    ("train-test gap", "target", "none", "gap"),
    ("MemInf AUC (B,S)", "membership", "blackbox_shadow", "auc"),
    ("best TPR at 1% FPR (B,S)", ("membership", "membership_rmia"), "blackbox_shadow", "tpr_at_fpr_0.01"),
    ("inversion accuracy over baseline (W,S)", "inversion", "whitebox_shadow", "eval_accuracy_over_baseline"),
    ("attribute advantage (W,S)", "attribute", "whitebox_shadow", "advantage_over_baseline"),
    ("stealing agreement over baseline (B,S)", "stealing", "blackbox_shadow", "agreement_over_baseline"),
]
COLUMN_OF = {metric: column for column, _, _, metric in COLUMNS}
UTILITY = COLUMN_OF["test_accuracy"]
# Per family, the column that measures what its verdict judges.
FAMILY_COLUMN = {
    "membership": COLUMN_OF["tpr_at_fpr_0.01"],
    "inversion": COLUMN_OF["eval_accuracy_over_baseline"],
    "attribute": COLUMN_OF["advantage_over_baseline"],
    "stealing": COLUMN_OF["agreement_over_baseline"],
}
FIELDS = ["defense", "column", "mean", "low", "high", "seeds", "difference", "difference_low", "difference_high"]


def per_seed(frame: pd.DataFrame, single: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per (defense, seed, column): the column's value and, where a single-run interval
    exists for it (``single``: :func:`stats.single_run_intervals`), its half-width."""
    ok = stats.ok_rows(frame)
    half = {}
    if single is not None and not single.empty:
        half = {
            tuple(k): (hi - lo) / 2
            for *k, lo, hi in single[stats.SINGLE_RUN_KEY + ["ci_low", "ci_high"]].itertuples(index=False, name=None)
        }
    records = []
    for (defense, seed), rows in ok.groupby(["defense", "seed"]):
        for column, attacks, tm, metric in COLUMNS:
            if metric == "gap":
                target = rows[rows["attack"] == "target"].set_index("metric")["value"]
                if {"train_accuracy", "test_accuracy"} <= set(target.index):
                    records.append(
                        (defense, seed, column, target["train_accuracy"] - target["test_accuracy"], math.nan)
                    )
                continue
            mine = rows[
                rows["attack"].isin([attacks] if isinstance(attacks, str) else attacks)
                & (rows["threat_model"] == tm)
                & (rows["metric"] == metric)
            ]
            if not mine.empty:
                best = mine.loc[mine["value"].idxmax()]
                key = tuple(best[c] for c in stats.SINGLE_RUN_KEY)
                records.append((defense, seed, column, float(best["value"]), half.get(key, math.nan)))
    return pd.DataFrame(records, columns=["defense", "seed", "column", "value", "half_width"])


def summarise(
    frame: pd.DataFrame,
    single: Optional[pd.DataFrame] = None,
    level: float = 0.95,
    threads: Optional[dict[tuple[str, int], int]] = None,
) -> pd.DataFrame:
    """The long trade-off table (:data:`FIELDS`) of a sweep's results ``frame``. ``threads``: each
    (defense, seed)'s torch thread count, where recorded; a seed pairs with no defense's only when
    both ran under the same count (the count alone can move a TPR: a different summation order)."""
    seeds = per_seed(frame, single)
    if threads:
        seeds = seeds.assign(threads=[threads.get((d, s)) for d, s in zip(seeds["defense"], seeds["seed"])])
    records = []
    none = seeds[seeds["defense"] == "none"].set_index(["seed", "column"])
    for defense in [d for d in ORDER if d in set(seeds["defense"])] + sorted(set(seeds["defense"]) - set(ORDER)):
        for column, *_ in COLUMNS:
            rows = seeds[(seeds["defense"] == defense) & (seeds["column"] == column)]
            if rows.empty:
                continue
            metric = next(m for c, _, _, m in COLUMNS if c == column)
            s = stats.t_summary(rows["value"].tolist(), level, metric)
            low, high = (s.ci_low, s.ci_high) if s.n > 1 else _single(rows, s.mean)
            diff = (math.nan,) * 3
            if defense != "none":
                diff = difference(rows.set_index("seed"), none, column, level)
            records.append((defense, column, s.mean, low, high, s.n, *diff))
    return pd.DataFrame(records, columns=FIELDS)


def _single(rows: pd.DataFrame, mean: float) -> tuple[float, float]:
    half = float(rows["half_width"].iloc[0])
    return (mean - half, mean + half) if not math.isnan(half) else (math.nan, math.nan)


def difference(rows: pd.DataFrame, none: pd.DataFrame, column: str, level: float) -> tuple[float, float, float]:
    """The defense's difference from no defense in ``column``, and its interval: paired t over the
    seeds both have, or one run's intervals combined."""
    pairs = [
        (v, none.loc[(seed, column)])
        for seed, v in rows.iterrows()
        if (seed, column) in none.index and same_threads(v, none.loc[(seed, column)])
    ]
    if not pairs:
        return math.nan, math.nan, math.nan
    deltas = np.array([d["value"] - n["value"] for d, n in pairs])
    mean = float(deltas.mean())
    if len(deltas) > 1:
        low, high = intervals.t_interval(deltas, level)
        return mean, low, high
    ((d, n),) = pairs
    half = math.hypot(d["half_width"], n["half_width"])
    return (mean, mean - half, mean + half) if not math.isnan(half) else (mean, math.nan, math.nan)


def same_threads(a: pd.Series, b: pd.Series) -> bool:
    """Whether two measurements ran under the same thread count (true where either is unrecorded)."""
    ta, tb = a.get("threads"), b.get("threads")
    return ta is None or tb is None or pd.isna(ta) or pd.isna(tb) or ta == tb


def shipped() -> tuple[pd.DataFrame, dict]:
    """The shipped trade-off table and how it was made."""
    folder = resources.files("mldoctor_bench.report")
    table = pd.read_csv(folder.joinpath(f"{NAME}.csv").open())
    if set(FIELDS) - set(table.columns):
        raise ValueError(
            f"{NAME}.csv lacks {', '.join(sorted(set(FIELDS) - set(table.columns)))}: rerun "
            "scripts/defense_tradeoffs.py on the defense_tradeoffs sweep"
        )
    return table, json.loads(folder.joinpath(f"{NAME}.json").read_text())


def difference_pvalues(rows: pd.DataFrame, level: float = 0.95) -> np.ndarray:
    """Two-sided p-value of each row's difference from no defense, read back from its ``level``
    interval as :func:`difference` made it: t with ``seeds - 1`` degrees of freedom for a paired
    difference over seeds, normal for one run's combined intervals (NaN without an interval)."""
    out = []
    for diff, low, high, seeds in rows[["difference", "difference_low", "difference_high", "seeds"]].itertuples(
        index=False, name=None
    ):
        half = (high - low) / 2
        if any(math.isnan(float(v)) for v in (diff, low, high)):
            out.append(math.nan)
        elif half <= 0:
            out.append(0.0 if diff else 1.0)
        elif seeds > 1:
            se = half / float(scipy_stats.t.ppf((1 + level) / 2, seeds - 1))
            out.append(float(2 * scipy_stats.t.sf(abs(diff) / se, seeds - 1)))
        else:
            se = half / float(scipy_stats.norm.ppf((1 + level) / 2))
            out.append(float(2 * scipy_stats.norm.sf(abs(diff) / se)))
    return np.array(out, dtype=float)


def corrected(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """The defenses' rows of ``column`` with ``p_value``, Holm's ``p_holm`` over the column's tested
    comparisons and ``significant`` (Holm rejects no difference at :data:`ALPHA`)."""
    rows = table[(table["column"] == column) & (table["defense"] != "none")].copy()
    rows["p_value"] = difference_pvalues(rows)
    rows["p_holm"], rows["significant"] = math.nan, False
    tested = rows["p_value"].notna()
    if tested.any():
        rows.loc[tested, "p_holm"] = holm_adjusted(rows.loc[tested, "p_value"].to_numpy())
        rows.loc[tested, "significant"] = holm(rows.loc[tested, "p_value"].to_numpy(), ALPHA)
    return rows


def effects(table: pd.DataFrame, family: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The defenses whose difference in ``family``'s column survives Holm's correction and is
    negative (they lower it) or positive (they raise it), cheapest in utility first."""
    rows = corrected(table, FAMILY_COLUMN[family])
    utility = table[table["column"] == UTILITY].set_index("defense")["mean"]
    rows = rows.assign(utility=rows["defense"].map(utility)).sort_values("utility", ascending=False)
    return rows[rows["significant"] & (rows["difference"] < 0)], rows[rows["significant"] & (rows["difference"] > 0)]


def wide(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the table as a reader sees it: per defense, the seeds its row rests on and
    each column's mean [interval]."""
    columns = [c for c, *_ in COLUMNS if c in set(table["column"])]
    rows = []
    for defense, group in table.groupby("defense", sort=False):
        cells = group.set_index("column")
        seeds = str(int(group["seeds"].max()))
        rows.append([defense, seeds] + [_cell(cells.loc[c]) if c in cells.index else "" for c in columns])
    return ["defense", "seeds", *columns], rows


def _cell(row: pd.Series) -> str:
    text = f"{row['mean']:.3f}"
    if not math.isnan(row["low"]):
        text += f" [{row['low']:.3f}, {row['high']:.3f}]"
    return text
