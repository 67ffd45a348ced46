"""Threshold attacks: thresholds chosen on the attacker's own data, and the per-example scores saved.

A threshold attack calls "member" when a signal (oriented so higher means member) is at least a
threshold. The threshold is chosen, as in Song & Mittal (2021), among the attacker's own signal
values to maximise the attacker's balanced accuracy ``(TPR + TNR) / 2`` on its members and
non-members; it never sees evaluation data. Ties go to the smallest such value.

Beside the scores, :func:`save_exposed` keeps each variant's highest-scoring members with their
images, so a report can show which training examples an attack exposes most.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from PIL import Image

from mldoctor_bench.cellfiles import EXPOSED

if TYPE_CHECKING:
    from mldoctor_bench.knowledge import Labeled


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


Scores = dict[str, tuple[np.ndarray, np.ndarray]]  # variant -> (is_member 0/1, score), one row per example scored


def _scored_for(scored: Labeled | Mapping[str, Labeled] | None, variant: str) -> Labeled | None:
    return scored.get(variant) if isinstance(scored, Mapping) else scored


MEMBERSHIP_ROLES = ("target_test", "target_train")  # pools of a label-0 and a label-1 evaluation example


def save_scores(
    path: Path,
    scores: Scores,
    scored: Labeled | Mapping[str, Labeled] | None = None,
    roles: tuple[str, str] = MEMBERSHIP_ROLES,
) -> None:
    """Write ``{variant: (labels, scores)}`` as Parquet with columns ``score, label, variant``,
    ``role`` (the pool of the partition each example comes from: ``roles[label]``) and, where
    ``scored`` (the examples scored, in the same row order; one per variant for an attack whose
    variants score different examples) is given, ``class`` (the task label) and, where it knows their
    dataset indices, ``index``: so ROC curves can be redrawn, and every score named by the example it
    is about."""
    frames = []
    for variant, (y, s) in scores.items():
        labels = np.asarray(y).astype(np.int8)
        frame = pd.DataFrame({"score": np.asarray(s, dtype=np.float64), "label": labels, "variant": variant})
        frame["role"] = np.where(labels == 1, roles[1], roles[0])
        examples = _scored_for(scored, variant)
        if examples is not None and examples.index is not None:
            if len(examples) != len(frame):
                raise ValueError(f"variant {variant!r} has {len(frame)} scores but {len(examples)} examples")
            frame["index"] = examples.index.numpy().astype(np.int64)
        if examples is not None and len(examples) == len(frame):
            frame["class"] = examples.labels.numpy().astype(np.int64)
        frames.append(frame)
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)


def png_bytes(image: np.ndarray) -> bytes:
    """One ``uint8`` CHW image as PNG (grey for one channel)."""
    pixels = np.ascontiguousarray(np.moveaxis(np.asarray(image, dtype=np.uint8), 0, -1))
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def save_exposed(out_dir: Path, scores: Scores, scored: Labeled | Mapping[str, Labeled], count: int = 32) -> None:
    """For each variant of ``scores``, the ``count`` highest-scoring members of ``scored`` (the examples
    scored, in the scores' row order, or ``{variant: examples}`` for an attack whose variants score
    different examples, e.g. a capped subset): columns ``variant``, ``member_position`` (the member's
    position among the members scored), ``index`` (its dataset index, where known), ``label``,
    ``score`` and ``image`` (PNG bytes), highest score first, ties by position; writes
    ``out_dir / "exposed.parquet"``. Raises ``ValueError`` if scores and examples differ in number.
    """
    frames = []
    for variant, (is_member, score) in scores.items():
        examples = _scored_for(scored, variant)
        is_member = np.asarray(is_member) == 1
        if examples is None or len(examples) != len(is_member):
            raise ValueError(
                f"variant {variant!r} scores {len(is_member)} rows but "
                f"{0 if examples is None else len(examples)} examples were given; pass the examples it "
                "scored, in its order"
            )
        mine = examples.rows(torch.as_tensor(is_member))
        member_scores = np.asarray(score, dtype=np.float64)[is_member]
        top = np.argsort(-member_scores, kind="stable")[:count]
        images = mine.images[top].numpy()
        frame = pd.DataFrame({"variant": variant, "member_position": top.astype(np.int64)})
        if mine.index is not None:
            frame["index"] = mine.index[top].numpy().astype(np.int64)
        frames.append(
            frame.assign(
                label=mine.labels[top].numpy().astype(np.int64),
                score=member_scores[top],
                image=[png_bytes(x) for x in images],
            )
        )
    pd.concat(frames, ignore_index=True).to_parquet(Path(out_dir) / EXPOSED, index=False)
