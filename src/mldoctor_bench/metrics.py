"""Pure metric functions for attacks. No I/O, no model calls."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

LOW_FPRS = (0.001, 0.01)


def measurable(nonmembers: float, fpr: float) -> bool:
    """Whether a TPR at ``fpr`` rests on at least one non-member: ``N >= 1 / fpr``."""
    return nonmembers * fpr >= 1 - 1e-9


def threshold_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_limit: float) -> tuple[float, float, float]:
    """The threshold whose FPR is at most ``fpr_limit`` with the largest TPR (the first such ROC point),
    and its TPR and FPR: "member" means ``score >= threshold`` (``inf``: nothing is flagged)."""
    fpr, tpr, thresholds = roc_curve(labels, scores)
    ok = np.flatnonzero(fpr <= fpr_limit + 1e-12)
    best = ok[np.argmax(tpr[ok])]
    return float(thresholds[best]), float(tpr[best]), float(fpr[best])


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_limit: float) -> float:
    """Largest TPR over thresholds whose FPR is at most ``fpr_limit`` (0 if none qualifies)."""
    return threshold_at_fpr(labels, scores, fpr_limit)[1]


def membership_metrics(labels: Sequence[int], scores: Sequence[float], predictions: Sequence[int]) -> dict[str, float]:
    """Metrics of a membership attack.

    Args:
        labels: 1 for members, 0 for non-members.
        scores: higher means "more likely a member" (for ROC, AUC, advantage, TPR at low FPR).
        predictions: the attack's hard decisions (for accuracy, precision, recall, F1).

    Returns:
        ``accuracy, precision, recall, f1, auc, advantage`` (max TPR - FPR over thresholds) and
        ``tpr_at_fpr_<x>`` for each x in :data:`LOW_FPRS`, plus ``n_members``, ``n_nonmembers``.
    """
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(predictions).astype(int)
    if not (len(y) == len(s) == len(p)):
        raise ValueError("labels, scores and predictions differ in length")
    if y.min() == y.max():
        raise ValueError("membership metrics need both members and non-members")
    tp = int(((p == 1) & (y == 1)).sum())
    fp = int(((p == 1) & (y == 0)).sum())
    fn = int(((p == 0) & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    fpr, tpr, _ = roc_curve(y, s)
    out = {
        "accuracy": float((p == y).mean()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auc": float(roc_auc_score(y, s)),
        "advantage": float((tpr - fpr).max()),
    }
    for limit in LOW_FPRS:
        out[f"tpr_at_fpr_{limit:g}"] = tpr_at_fpr(y, s, limit)
    out["n_members"] = float((y == 1).sum())
    out["n_nonmembers"] = float((y == 0).sum())
    return out


def classification_metrics(labels: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """Accuracy and macro F1 of a multi-class prediction, and the majority-class baseline."""
    y = np.asarray(labels).astype(int)
    p = np.asarray(predictions).astype(int)
    classes = np.unique(np.concatenate([y, p]))
    f1s = []
    for c in classes:
        tp = ((p == c) & (y == c)).sum()
        fp = ((p == c) & (y != c)).sum()
        fn = ((p != c) & (y == c)).sum()
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {
        "accuracy": float((p == y).mean()),
        "f1": float(np.mean(f1s)),
        "baseline_accuracy": float(np.bincount(y).max() / len(y)),
    }


def agreement(predictions: Sequence[int], reference: Sequence[int]) -> float:
    """Fraction of inputs on which two models predict the same class (model stealing's fidelity)."""
    a, b = np.asarray(predictions).astype(int), np.asarray(reference).astype(int)
    if len(a) != len(b):
        raise ValueError("the two prediction vectors differ in length")
    return float((a == b).mean())


def jaccard_chance(a: float, b: float, m: float) -> float:
    """The Jaccard index two independent random sets of ``a`` and ``b`` of ``m`` items share on
    average (to first order): ``ab/m / (a + b - ab/m)``; NaN where both are empty."""
    expected = a * b / m if m else 0.0
    return float(expected / (a + b - expected)) if a + b > expected else float("nan")


def too_few_negatives(metric: str, n_nonmembers: float | None) -> bool:
    """Whether ``tpr_at_fpr_<x>`` rests on fewer than ``1/x`` non-members."""
    if not metric.startswith("tpr_at_fpr_") or n_nonmembers is None:
        return False
    return n_nonmembers < 1.0 / float(metric.removeprefix("tpr_at_fpr_"))


def intraclass_correlation(groups: Sequence[Sequence[float]]) -> float:
    """The one-way ANOVA estimate of the intra-class correlation, ``(MSB - MSW) / (MSB + (k - 1) MSW)``,
    of equally sized ``groups`` (NaN where it is undefined, e.g. no variation at all)."""
    x = np.asarray(groups, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        return math.nan
    g, k = x.shape
    msb = k * ((x.mean(1) - x.mean()) ** 2).sum() / (g - 1)
    msw = ((x - x.mean(1, keepdims=True)) ** 2).sum() / (g * (k - 1))
    denominator = msb + (k - 1) * msw
    return float((msb - msw) / denominator) if denominator > 0 else math.nan
