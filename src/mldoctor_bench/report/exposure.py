"""Which examples leak, and to which attacks: one cell's per-example results of every attack family
joined on the example (its dataset index and its pool in the partition), and how the attacks agree.

``exposure.parquet`` holds one row per (evaluation example, attack series) of the membership attacks
(score, percentile among the series' candidates, member truth, flagged at the threshold that flags
1% and 0.1% of the non-members, where there are enough of them), of attribute inference (whether the
attribute was inferred correctly, and ``leaked``: right where the strongest baseline is wrong) and,
per class, inversion's success (the evaluator's accuracy on that class's reconstructions).

The cross-attack rows of the results table (family ``exposure``) say how the attacks agree:
- per pair of membership series, Spearman's correlation of their scores over the candidates both
  scored (Fisher's z interval) and the Jaccard index of the members both flag at 1% FPR (bootstrap
  interval over those candidates; ``jaccard_chance``: what two independent sets of the same sizes
  share on average, ``ab / M / (a + b - ab / M)``);
- per attribute series, the odds ratio that a member flagged by the cell's strongest membership
  series has its attribute inferred correctly, against the members it does not flag (Woolf's
  interval, 0.5 added to every cell where one is empty);
- per inversion series, Spearman over classes between a class's inversion success and the mean
  membership percentile of its members under the strongest series.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from mldoctor_bench.metrics import jaccard_chance, measurable, threshold_at_fpr
from mldoctor_bench.report.collect import read_scores, score_files
from mldoctor_bench.report.stats import series_label

EXPOSURE = "exposure.parquet"
FPRS = {0.01: "flagged_1pct", 0.001: "flagged_01pct"}
RESAMPLES = 200  # bootstrap resamples of a Jaccard index (seed 0: the same files give the same table)
JOIN = ["index", "role"]


def membership_exposure(cell_dir: Path) -> pd.DataFrame:
    """The membership rows of :data:`EXPOSURE`, from every membership attack's ``scores.parquet``."""
    frames = []
    for f in score_files([Path(cell_dir)]):
        if f.family != "membership":
            continue
        for variant, scores in read_scores(f.path, with_index=True).items():
            if "index" not in scores:
                continue  # a table written before scores named their examples
            labels, values = scores["label"].to_numpy(), scores["score"].to_numpy()
            frame = pd.DataFrame(
                {
                    "family": "membership",
                    "attack": f.attack,
                    "threat_model": f.threat_model,
                    "variant": variant,
                    "series": series_label(f.attack, f.threat_model, variant),
                    "index": scores["index"].to_numpy(),
                    "member": labels.astype(int),
                    "score": values,
                    "percentile": percentiles(values),
                    "class": scores["class"].to_numpy() if "class" in scores else np.nan,
                }
            )
            frame["role"] = np.where(labels == 1, "target_train", "target_test")
            for fpr, column in FPRS.items():
                frame[column] = flags(labels, values, fpr)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def percentiles(values: np.ndarray) -> np.ndarray:
    """Each value's percentile among all of them: the share below it, ties counted half."""
    return (scipy_stats.rankdata(values) - 0.5) / len(values)


def flags(labels: np.ndarray, values: np.ndarray, fpr: float) -> np.ndarray:
    """1.0 where a candidate scores at or above the threshold that flags at most ``fpr`` of the
    non-members (as the verdicts read TPR at that FPR); NaN where too few non-members measure it."""
    if not measurable(int((labels == 0).sum()), fpr):
        return np.full(len(values), np.nan)
    threshold, _, _ = threshold_at_fpr(labels, values, fpr)
    return (values >= threshold).astype(float)


def attribute_exposure(cell_dir: Path) -> pd.DataFrame:
    """Attribute inference's rows: per example it predicted, whether it was right and whether the
    attribute leaked (right where the strongest baseline is wrong)."""
    frames = []
    for path in sorted(Path(cell_dir).glob("attribute/*/predictions.parquet")):
        rows = pd.read_parquet(path)
        if "role" not in rows:
            continue
        frames.append(
            pd.DataFrame(
                {
                    "family": "attribute",
                    "attack": "attribute",
                    "threat_model": path.parent.name,
                    "variant": "",
                    "series": series_label("attribute", path.parent.name),
                    "index": rows["index"],
                    "role": rows["role"],
                    "member": (rows["role"] == "target_train").astype(int),
                    "score": rows["confidence"],
                    "correct": (rows["predicted"] == rows["attribute"]).astype(float),
                    "leaked": rows["leaked"].astype(float),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def inversion_exposure(cell_dir: Path) -> pd.DataFrame:
    """Inversion's rows: per class, the evaluator's accuracy on that class's reconstructions."""
    from safetensors.numpy import load_file  # here: the report reads exposure.parquet, not these files

    frames = []
    for path in sorted(Path(cell_dir).glob("inversion/*/inversion_*.safetensors")):
        saved = load_file(str(path))
        if "classes" not in saved or "evaluator_prediction" not in saved:
            continue
        hits = pd.Series(saved["evaluator_prediction"] == saved["classes"]).groupby(saved["classes"]).mean()
        variant = path.stem.removeprefix("inversion_")
        frames.append(
            pd.DataFrame(
                {
                    "family": "inversion",
                    "attack": "inversion",
                    "threat_model": path.parent.name,
                    "variant": variant,
                    "series": series_label("inversion", path.parent.name, variant),
                    "class": hits.index.astype(int),
                    "success": hits.to_numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def exposure_table(cell_dir: Path, files: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """:data:`EXPOSURE` of one cell (see the module docstring); ``files``: the dataset's file names."""
    table = pd.concat(
        [membership_exposure(cell_dir), attribute_exposure(cell_dir), inversion_exposure(cell_dir)], ignore_index=True
    )
    if files is not None and "index" in table:
        table["file"] = [files[int(i)] if not pd.isna(i) else None for i in table["index"]]
    return table


def fisher_interval(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Fisher's z interval of a correlation of ``n`` pairs (Spearman's: se 1.06 / sqrt(n - 3))."""
    if n <= 3 or math.isnan(r):
        return math.nan, math.nan
    z, half = math.atanh(min(max(r, -0.999999), 0.999999)), 1.959964 * 1.06 / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else math.nan


def pair_metrics(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, float]:
    """How two membership series agree on the candidates both scored (see the module docstring)."""
    shared = a.merge(b, on=JOIN, suffixes=("_a", "_b"))
    rho = float(scipy_stats.spearmanr(shared["score_a"], shared["score_b"]).statistic) if len(shared) > 2 else math.nan
    low, high = fisher_interval(rho, len(shared))
    out = {"spearman": rho, "spearman_low": low, "spearman_high": high, "shared_examples": float(len(shared))}
    members = shared[shared["member_a"] == 1]
    fa, fb = members["flagged_1pct_a"].to_numpy(), members["flagged_1pct_b"].to_numpy()
    if len(members) and not (np.isnan(fa).any() or np.isnan(fb).any()):
        fa, fb = fa.astype(bool), fb.astype(bool)
        draws = np.random.default_rng(0).integers(0, len(fa), (RESAMPLES, len(fa)))
        union = (fa[draws] | fb[draws]).sum(1)
        boot = np.where(union > 0, (fa[draws] & fb[draws]).sum(1) / np.maximum(union, 1), np.nan)
        m, na, nb = len(fa), fa.sum(), fb.sum()
        low, high = np.nanpercentile(boot, [2.5, 97.5]) if not np.isnan(boot).all() else (math.nan, math.nan)
        out.update(
            jaccard=jaccard(fa, fb),
            jaccard_low=float(low),
            jaccard_high=float(high),
            flagged_a=float(na),
            flagged_b=float(nb),
            jaccard_chance=jaccard_chance(na, nb, m),
        )
    return out


def odds_ratio(flagged: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """The odds that a flagged member's attribute is inferred correctly over an unflagged member's."""
    a, b = float((flagged & correct).sum()), float((flagged & ~correct).sum())
    c, d = float((~flagged & correct).sum()), float((~flagged & ~correct).sum())
    if min(a, b, c, d) == 0:
        a, b, c, d = a + 0.5, b + 0.5, c + 0.5, d + 0.5
    log_or, se = math.log(a * d / (b * c)), math.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
    return {
        "odds_ratio": math.exp(log_or),
        "odds_ratio_low": math.exp(log_or - 1.959964 * se),
        "odds_ratio_high": math.exp(log_or + 1.959964 * se),
        "flagged_members": float(flagged.sum()),
        "members": float(len(flagged)),
    }


def cross_attack(table: pd.DataFrame, strongest: Optional[str]) -> list[tuple[str, dict[str, float]]]:
    """The cross-attack rows: ``(variant, metrics)``, the variant naming the two series compared."""
    if table.empty:
        return []
    out = []
    membership = table[table["family"] == "membership"]
    series = list(dict.fromkeys(membership["series"]))
    for i, first in enumerate(series):
        for second in series[i + 1 :]:
            out.append(
                (
                    f"{first} | {second}",
                    pair_metrics(membership[membership["series"] == first], membership[membership["series"] == second]),
                )
            )
    lead = membership[(membership["series"] == strongest) & (membership["member"] == 1)] if strongest else None
    if lead is None or lead.empty or lead["flagged_1pct"].isna().all():
        return out
    attribute = table[(table["family"] == "attribute") & (table["member"] == 1)]
    for name, rows in attribute.groupby("series", sort=True):
        joined = rows[JOIN + ["correct"]].merge(lead[JOIN + ["flagged_1pct"]], on=JOIN)
        if len(joined):
            flagged, correct = joined["flagged_1pct"].to_numpy() == 1, joined["correct"].to_numpy() == 1
            out.append((f"{name} | {strongest}", odds_ratio(flagged, correct)))
    inversion = table[table["family"] == "inversion"]
    if not inversion.empty:
        label = membership_classes(lead)
        for name, rows in inversion.groupby("series", sort=True):
            joined = rows.astype({"class": float}).merge(label.astype({"class": float}), on="class")
            if len(joined) > 2:
                rho = float(scipy_stats.spearmanr(joined["success"], joined["mean_percentile"]).statistic)
                low, high = fisher_interval(rho, len(joined))
                out.append(
                    (
                        f"{name} | {strongest}",
                        {"spearman": rho, "spearman_low": low, "spearman_high": high, "classes": float(len(joined))},
                    )
                )
    return out


def membership_classes(lead: pd.DataFrame) -> pd.DataFrame:
    """Per class, the mean membership percentile of the strongest series' members of that class."""
    known = lead.dropna(subset=["class"])
    return known.groupby("class")["percentile"].mean().rename("mean_percentile").reset_index()


def flagged_by_every_family(table: pd.DataFrame, strongest: Optional[str]) -> pd.DataFrame:
    """The members that every per-example family that ran exposes: flagged at 1% FPR by the strongest
    membership series and, where attribute inference ran, with their attribute leaked under some
    threat model (``index``, ``role``; ``file`` where the table has it)."""
    if strongest is None or "member" not in table:
        return pd.DataFrame(columns=JOIN)
    membership = table[(table["family"] == "membership") & (table["series"] == strongest) & (table["member"] == 1)]
    chosen = membership[membership["flagged_1pct"] == 1][JOIN + (["file"] if "file" in table else [])]
    attribute = table[(table["family"] == "attribute") & (table["member"] == 1)]
    if not attribute.empty:
        leaked = attribute[attribute["leaked"] == 1][JOIN].drop_duplicates()
        chosen = chosen.merge(leaked, on=JOIN)
    return chosen.drop_duplicates(JOIN).astype({"index": int}).reset_index(drop=True)


def strongest_measurable(table: pd.DataFrame, ranking: pd.DataFrame) -> Optional[str]:
    """The strongest membership series (``ranking``: :func:`stats.membership_ranking`) whose flags at
    1% FPR can be measured (at least 100 non-members): the one the other families are set against."""
    if table.empty or "flagged_1pct" not in table:
        return None
    measured = set(table.loc[(table["family"] == "membership") & table["flagged_1pct"].notna(), "series"])
    for attack, tm, variant in ranking[["attack", "threat_model", "variant"]].itertuples(index=False):
        if series_label(attack, tm, variant) in measured:
            return series_label(attack, tm, variant)
    return None
