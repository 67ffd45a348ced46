"""Threshold attacks: thresholds chosen on the attacker's own data, and the per-example scores saved.

A threshold attack calls "member" when a signal (oriented so higher means member) is at least a
threshold. The threshold is chosen, as in Song & Mittal (2021), among the attacker's own signal
values to maximise the attacker's balanced accuracy ``(TPR + TNR) / 2`` on its members and
non-members; it never sees evaluation data. Ties go to the smallest such value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def best_threshold(members: np.ndarray, nonmembers: np.ndarray) -> tuple[float, float]:
    """The attacker's threshold and the balanced accuracy it reaches on ``members``/``nonmembers``.

    Candidates are the observed values; "member" means ``signal >= threshold``.
    """
    m = np.sort(np.asarray(members, dtype=np.float64))
    n = np.sort(np.asarray(nonmembers, dtype=np.float64))
    if len(m) == 0 or len(n) == 0:
        raise ValueError("a threshold needs both members and non-members")
    candidates = np.unique(np.concatenate([m, n]))
    true_pos = len(m) - np.searchsorted(m, candidates, side="left")
    true_neg = np.searchsorted(n, candidates, side="left")
    # (TPR + TNR) / 2 scaled to integers, so that ties are exact
    score = true_pos.astype(np.int64) * len(n) + true_neg.astype(np.int64) * len(m)
    best = int(np.argmax(score))
    return float(candidates[best]), float(score[best] / (2 * len(m) * len(n)))


def classwise_thresholds(
    member_signal: np.ndarray,
    member_labels: np.ndarray,
    nonmember_signal: np.ndarray,
    nonmember_labels: np.ndarray,
    num_classes: int,
) -> np.ndarray:
    """One threshold per true class (Song & Mittal's class-wise thresholds), from attacker data only.

    A class for which the attacker holds no members or no non-members gets the global threshold
    fitted on all of the attacker's data.
    """
    member_labels, nonmember_labels = np.asarray(member_labels), np.asarray(nonmember_labels)
    fallback, _ = best_threshold(member_signal, nonmember_signal)
    thresholds = np.full(num_classes, fallback, dtype=np.float64)
    for c in range(num_classes):
        m, n = member_labels == c, nonmember_labels == c
        if m.any() and n.any():
            thresholds[c], _ = best_threshold(np.asarray(member_signal)[m], np.asarray(nonmember_signal)[n])
    return thresholds


def save_scores(path: Path, scores: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write ``{variant: (labels, scores)}`` as Parquet with columns ``score, label, variant``, so
    ROC curves can be redrawn from the saved file."""
    frames = [
        pd.DataFrame({"score": np.asarray(s, dtype=np.float64), "label": np.asarray(y).astype(np.int8),
                      "variant": variant})
        for variant, (y, s) in scores.items()
    ]
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
