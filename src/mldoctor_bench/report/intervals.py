"""Confidence intervals that stay inside a metric's range: t over seeds (clipped), Wilson for a
proportion of a known count, and a percentile bootstrap over evaluation examples for one run.

Pure functions of numbers; nothing reads files or draws.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats

from mldoctor_bench.metrics import LOW_FPRS

# Metrics that are proportions or rates, or averages of values in [0, 1] (pixel MSE on [0, 1] images).
UNIT_METRICS = frozenset(
    {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "auc",
        "advantage",
        "agreement",
        "eval_accuracy",
        "baseline_accuracy",
        "label_baseline_accuracy",
        "best_baseline_accuracy",
        "train_accuracy",
        "test_accuracy",
        "target_confidence",
        "target_accuracy",
        "mse",
        "mse_start",
        "no_target_accuracy",
        "no_target_eval_accuracy",
        "member_accuracy",
        "nonmember_accuracy",
        "member_imputation_accuracy",
        "nonmember_imputation_accuracy",
        *(f"tpr_at_fpr_{x:g}" for x in LOW_FPRS),
    }
)
# Differences of two [0, 1] quantities.
DIFFERENCE_METRICS = frozenset(
    {"gap", "advantage_over_baseline", "agreement_over_baseline", "eval_accuracy_over_baseline"}
)
NON_NEGATIVE_METRICS = frozenset(
    {
        "epsilon",
        "epsilon_lower_bound",
        "fdp_epsilon_lower_bound",
        "fdp_mu_lower_bound",
        "fdp_guesses",
        "fdp_correct_guesses",
        "n_members",
        "n_nonmembers",
        "reconstructions",
        "guesses",
        "correct_guesses",
        "canaries",
        "delta",
    }
)
# The membership metrics a bootstrap over (score, label) pairs recomputes exactly as the attack did.
BOOTSTRAP_METRICS = ("auc", "advantage", *(f"tpr_at_fpr_{x:g}" for x in LOW_FPRS))
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0  # fixed: the same scores give the same report


def metric_range(metric: str) -> tuple[float, float]:
    """The values ``metric`` can take: ``(0, 1)`` for rates and accuracies, ``(-1, 1)`` for their
    differences, ``(0, inf)`` for counts and epsilons, else unbounded."""
    if metric in UNIT_METRICS or metric.startswith("tpr_at_fpr_"):
        return 0.0, 1.0
    if metric in DIFFERENCE_METRICS:
        return -1.0, 1.0
    if metric in NON_NEGATIVE_METRICS:
        return 0.0, math.inf
    return -math.inf, math.inf


def clip_interval(low: float, high: float, metric: str) -> tuple[float, float]:
    """``[low, high]`` cut to :func:`metric_range` (NaN stays NaN)."""
    lo, hi = metric_range(metric)
    return (low if math.isnan(low) else min(max(low, lo), hi), high if math.isnan(high) else min(max(high, lo), hi))


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """``mean +- t((1+level)/2, n-1) * sd / sqrt(n)`` of two or more values (NaN for fewer)."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    half = float(scipy_stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def wilson_interval(p: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` trials (inside [0, 1] by construction)."""
    if not n or n <= 0 or math.isnan(p) or math.isnan(n):
        return math.nan, math.nan
    z = float(scipy_stats.norm.ppf((1 + level) / 2))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def roc_statistics(labels: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """AUC, advantage (max TPR - FPR) and TPR at each of :data:`LOW_FPRS`, for every row of
    ``scores`` (shape ``(B, N)``) with the same ``labels`` (``N``, 1 = member), vectorised over rows.

    Ties count as in scikit-learn: AUC from average ranks, ROC points only between distinct scores.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    ranks = scipy_stats.rankdata(scores, axis=1)
    auc = (ranks[:, y].sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=1)
    hits = y[order]
    tpr = np.cumsum(hits, axis=1) / n_pos
    fpr = np.cumsum(~hits, axis=1) / n_neg
    # a threshold lies only after the last of a run of equal scores
    cut = np.ones_like(ranked, dtype=bool)
    cut[:, :-1] = ranked[:, 1:] != ranked[:, :-1]
    out = {"auc": auc, "advantage": np.maximum(np.where(cut, tpr - fpr, -np.inf).max(1), 0.0)}
    for x in LOW_FPRS:
        allowed = cut & (fpr <= x + 1e-12)
        out[f"tpr_at_fpr_{x:g}"] = np.where(allowed, tpr, 0.0).max(1)
    return out


def bootstrap_membership(
    labels: np.ndarray,
    scores: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = BOOTSTRAP_SEED,
    chunk: int = 100,
) -> dict[str, tuple[float, float, float]]:
    """``{metric: (estimate, low, high)}`` for :data:`BOOTSTRAP_METRICS`: the percentile interval of
    ``resamples`` stratified resamples of the evaluation examples (members and non-members each
    drawn with replacement to their own count), with a fixed ``seed``."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return {}
    resampled_labels = np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {m: [] for m in BOOTSTRAP_METRICS}
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        draws = np.concatenate(
            [pos[rng.integers(0, len(pos), (b, len(pos)))], neg[rng.integers(0, len(neg), (b, len(neg)))]], axis=1
        )
        for metric, values in roc_statistics(resampled_labels, draws).items():
            parts[metric].append(values)
    estimate = roc_statistics(resampled_labels, np.concatenate([pos, neg])[None])
    tail = (1 - level) / 2 * 100
    out = {}
    for metric, chunks in parts.items():
        low, high = np.percentile(np.concatenate(chunks), [tail, 100 - tail])
        out[metric] = (float(estimate[metric][0]), float(low), float(high))
    return out
