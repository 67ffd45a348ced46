"""The worst-case defense table: per defense, the canary TPR of the leave-one-out evaluation
(``attack=worst_case``; Aerni, Zhang and Tramer, "Evaluations of machine learning privacy defenses
are misleading", CCS 2024) and whether it lies below no defense's beyond the noise, shipped with the
package for ``mldoctor-assess``'s "What to do" (made by ``make worst-case``).

A defense's canary TPR at an FPR is the largest over the attack's variants (LiRA, RMIA), as Aerni
et al. report the strongest attack; the test accounts for that choice, since every bootstrap
resample takes the maximum again. The unit of resampling is the canary: every defense's copies
train on the same canaries with the same masks (the design is drawn from the seed), so a resample
of canaries is applied to both sides of a difference (paired). The two-sided p-value of a
difference from no defense is the percentile bootstrap's, ``2 min(P*(d >= 0), P*(d <= 0))`` with
``+1`` in numerator and denominator, so that a 95% percentile interval excludes zero exactly when
it is below 0.05. A defense *lowers* the canary TPR only when its difference is negative and its
p-value survives Holm's correction over the table's comparisons (every defense against no defense).
The copies' own randomness is not resampled: the interval is over canaries given those copies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from safetensors.numpy import load_file

from mldoctor_bench.defense_catalog import ORDER
from mldoctor_bench.metrics import LOW_FPRS, measurable, tpr_at_fpr
from mldoctor_bench.report.significance import ALPHA, holm, holm_adjusted

NAME = "worst_case"  # report/worst_case.csv and .json, shipped with the package
FPRS = tuple(sorted(LOW_FPRS, reverse=True))  # 1%, then 0.1% where N >= 1,000 non-member scores support it
MATCH_TOLERANCE = 0.01  # a DP-SGD row is matched to a defense whose test accuracy is this close
FIELDS = [
    "defense",
    "label",
    "test_accuracy",
    "epsilon",
    "models",
    "canaries",
    "n_nonmembers",
    "fpr",
    "tpr",
    "low",
    "high",
    "best_variant",
    "difference",
    "difference_low",
    "difference_high",
    "p_value",
    "p_holm",
    "lowered",
    "matches",
]


@dataclass(frozen=True)
class CanaryCell:
    """One defense's evaluation: the design's masks ``(M, m)``, each variant's scores ``(M, m)``,
    the copies' mean test accuracy and (under DP-SGD) epsilon; ``label`` tells two runs of one
    defense apart (a DP-SGD matched to an accuracy)."""

    defense: str
    label: str
    masks: np.ndarray
    scores: dict[str, np.ndarray]
    test_accuracy: float
    epsilon: float = float("nan")
    config_hash: str = ""
    canary_type: str = "mislabeled"


ATTACK_DIR = Path("worst_case") / "auditor"  # where a cell keeps the attack's files


def label_of(defense: str, config: dict) -> str:
    """The defense's name, or for a DP-SGD set by its noise multiplier (a run matched to an
    accuracy) the name with the noise: two DP-SGD rows stay apart."""
    noise = (config.get("defense") or {}).get("noise_multiplier")
    return f"dp_sgd (noise {noise:.3g})" if defense == "dp_sgd" and noise is not None else defense


def load_cell(cell_dir: Path) -> Optional[CanaryCell]:
    """A finished cell's worst-case evaluation (None if it ran none): the design, the scores per
    variant, the copies' accuracy and epsilon from its results."""
    folder = cell_dir / ATTACK_DIR
    if not (folder / "canary_scores.parquet").is_file():
        return None
    masks = load_file(str(folder / "design.safetensors"))["masks"].astype(bool)
    frame = pd.read_parquet(folder / "canary_scores.parquet")
    scores = {}
    for variant, rows in frame.groupby("variant"):
        grid = np.full(masks.shape, np.nan)
        grid[rows["copy"].to_numpy(), rows["canary"].to_numpy()] = rows["score"].to_numpy()
        scores[str(variant)] = grid
    results = pd.read_parquet(cell_dir / "results.parquet")
    mine = results[(results["attack"] == "worst_case") & (results["status"] == "ok")]
    value = mine.groupby("metric")["value"].first()
    defense = str(results["defense"].iloc[0])
    config = OmegaConf.to_container(OmegaConf.load(cell_dir / "config.yaml"))
    return CanaryCell(
        defense,
        label_of(defense, config),
        masks,
        scores,
        float(value.get("test_accuracy", np.nan)),
        float(value.get("epsilon", np.nan)),
        str(results["config_hash"].iloc[0]),
        str(((config.get("attack") or {}).get("worst_case") or {}).get("canary_type", "mislabeled")),
    )


def in_order(cells: list[CanaryCell]) -> list[CanaryCell]:
    """The cells in the defense catalog's order (no defense first), then by label."""
    order = {d: i for i, d in enumerate(ORDER)}
    return sorted(cells, key=lambda c: (order.get(c.defense, len(order)), c.label))


def best_tpr(cell: CanaryCell, picks: np.ndarray, fpr: float) -> tuple[float, str]:
    """The largest pooled TPR at ``fpr`` over the variants, on the canary columns ``picks``."""
    y = cell.masks[:, picks].ravel()
    if not 0 < y.sum() < len(y):
        return float("nan"), ""
    values = {v: tpr_at_fpr(y, s[:, picks].ravel(), fpr) for v, s in cell.scores.items()}
    best = max(values, key=values.get)
    return float(values[best]), best


def resampled(cell: CanaryCell, draws: np.ndarray, fpr: float) -> np.ndarray:
    """:func:`best_tpr` on each row of canary indices ``draws``."""
    return np.array([best_tpr(cell, picks, fpr)[0] for picks in draws])


def bootstrap_pvalue(differences: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p-value of zero (see the module docstring)."""
    d = differences[~np.isnan(differences)]
    if not len(d):
        return float("nan")
    tail = min(int((d >= 0).sum()), int((d <= 0).sum()))
    return min(1.0, 2 * (tail + 1) / (len(d) + 1))


def check_same_design(cells: list[CanaryCell]) -> None:
    """Every cell must share the canaries' masks, or a paired difference means nothing."""
    first = cells[0]
    for cell in cells[1:]:
        if (
            cell.masks.shape != first.masks.shape
            or not np.array_equal(cell.masks, first.masks)
            or cell.canary_type != first.canary_type
        ):
            raise ValueError(
                f"{cell.label} and {first.label} were evaluated on different canary designs "
                f"({cell.masks.shape} and {first.masks.shape} copies x canaries of types {cell.canary_type} and "
                f"{first.canary_type}, or other masks): run every defense with the same seed and "
                "attack.worst_case.models, canaries and canary_type"
            )


def summarise(cells: list[CanaryCell], resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The long table (:data:`FIELDS`): one row per cell and FPR that enough non-member scores
    support, with the difference from the ``none`` cell and Holm's correction per FPR."""
    baseline = [c for c in cells if c.defense == "none"]
    if len(baseline) != 1:
        raise ValueError(f"the worst-case table needs exactly one cell without a defense, found {len(baseline)}")
    (none,) = baseline
    cells = in_order(cells)
    check_same_design(cells)
    m = none.masks.shape[1]
    draws = np.random.default_rng(seed).integers(0, m, (resamples, m))
    everything = np.arange(m)
    nonmembers = int((~none.masks.astype(bool)).sum())
    records = []
    for fpr in FPRS:
        if not measurable(nonmembers, fpr):
            continue
        base = resampled(none, draws, fpr)
        for cell in cells:
            tpr, variant = best_tpr(cell, everything, fpr)
            mine = resampled(cell, draws, fpr)
            low, high = np.nanpercentile(mine, [2.5, 97.5])
            diff = (float("nan"),) * 4
            if cell is not none:
                d = mine - base
                diff = (
                    tpr - best_tpr(none, everything, fpr)[0],
                    *np.nanpercentile(d, [2.5, 97.5]),
                    bootstrap_pvalue(d),
                )
            records.append(
                {
                    "defense": cell.defense,
                    "label": cell.label,
                    "test_accuracy": cell.test_accuracy,
                    "epsilon": cell.epsilon,
                    "models": cell.masks.shape[0],
                    "canaries": m,
                    "n_nonmembers": nonmembers,
                    "fpr": fpr,
                    "tpr": tpr,
                    "low": float(low),
                    "high": float(high),
                    "best_variant": variant,
                    "difference": diff[0],
                    "difference_low": float(diff[1]),
                    "difference_high": float(diff[2]),
                    "p_value": diff[3],
                }
            )
    table = pd.DataFrame(records, columns=FIELDS[:16])
    return with_corrections(table).assign(matches=lambda t: matches(t))


def with_corrections(table: pd.DataFrame) -> pd.DataFrame:
    """``p_holm`` and ``lowered`` per FPR, over every defense's comparison with no defense."""
    table = table.assign(p_holm=float("nan"), lowered=False)
    for _, rows in table[table["defense"] != "none"].groupby("fpr"):
        tested = rows[rows["p_value"].notna()]
        table.loc[tested.index, "p_holm"] = holm_adjusted(tested["p_value"].to_numpy())
        rejected = holm(tested["p_value"].to_numpy(), ALPHA)
        table.loc[tested.index, "lowered"] = rejected & (tested["difference"].to_numpy() < 0)
    return table


def matches(table: pd.DataFrame) -> pd.Series:
    """For each DP-SGD row, the other defenses whose copies' test accuracy is within
    :data:`MATCH_TOLERANCE` of its own (space-separated; empty for other rows)."""
    others = table[table["defense"] != "dp_sgd"].drop_duplicates("label")

    def near(row: pd.Series) -> str:
        if row["defense"] != "dp_sgd":
            return ""
        close = others[(others["test_accuracy"] - row["test_accuracy"]).abs() <= MATCH_TOLERANCE]
        return " ".join(close["label"])

    return table.apply(near, axis=1) if len(table) else pd.Series(dtype=str)


def shipped() -> tuple[pd.DataFrame, dict]:
    """The shipped worst-case table and how it was made."""
    folder = resources.files("mldoctor_bench.report")
    table = pd.read_csv(folder.joinpath(f"{NAME}.csv").open(), keep_default_na=True)
    if set(FIELDS) - set(table.columns):
        raise ValueError(
            f"{NAME}.csv lacks {', '.join(sorted(set(FIELDS) - set(table.columns)))}: rerun make worst-case"
        )
    table["matches"] = table["matches"].fillna("")
    return table, json.loads(folder.joinpath(f"{NAME}.json").read_text())


def at_fpr(table: pd.DataFrame, fpr: float = 0.01) -> pd.DataFrame:
    return table[np.isclose(table["fpr"], fpr)]


def matched_dp(table: pd.DataFrame, label: str) -> Optional[pd.Series]:
    """The DP-SGD row matched in accuracy to ``label`` (the highest epsilon's if several), or None."""
    rows = table[table["matches"].str.split().apply(lambda names: label in names)]
    return None if rows.empty else rows.sort_values("epsilon").iloc[-1]
