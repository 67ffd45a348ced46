"""Metric-based membership inference (Song & Mittal, "Systematic Evaluation of Privacy Risks of
Machine Learning Models", USENIX Security 2021).

Four variants, each a threshold on one signal of the released posterior, oriented so that higher
means "member":

- ``correctness``: the prediction is right (no threshold; Yeom et al.'s gap attack);
- ``confidence``: the true class's confidence, thresholded as the logit-scaled confidence
  ``log p_y - log(1 - p_y)``; a monotone map of ``p_y``, so the same attack, but it keeps its
  resolution where float64 ``p_y`` rounds to 1 (docs/attacks.md);
- ``entropy``: minus the posterior's entropy;
- ``modified_entropy``: minus Song & Mittal's label-aware entropy.

Thresholds are class-wise (one per true class) and chosen on the attacker's data only: the shadow
model's outputs on shadow-train vs shadow-test under (B,S), the target's outputs on the known
halves under (B,P) (:mod:`mldoctor_bench.attacks.scoring`). The evaluation score of an example is
its *margin* ``signal - threshold[its class]``: the attack predicts "member" where the margin is
``>= 0``, and ROC, AUC and TPR at low FPR are computed on that margin, so they describe the
class-wise thresholded attack rather than the raw signal (margins of different classes share one
ROC). ``signal_auc`` is the threshold-free AUC of the raw signal, for comparison with attacks that
use none. Per-example margins and membership labels are saved to ``scores.parquet``, the
highest-margin members to ``exposed.parquet``, and the thresholds to ``thresholds.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, VariantMetrics
from mldoctor_bench.attacks.scoring import best_threshold, classwise_thresholds, save_exposed, save_scores
from mldoctor_bench.attacks.signals import LOG_FLOOR, entropy, loss_and_confidence, modified_entropy
from mldoctor_bench.knowledge import Labeled, balanced
from mldoctor_bench.metrics import membership_metrics
from mldoctor_bench.settings import setting
from mldoctor_bench.threat_models import BlackBoxAccess

VARIANTS = ("correctness", "confidence", "entropy", "modified_entropy")
UNTHRESHOLDED = ("correctness",)


def metric_signals(log_probs: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
    """The four signals of :data:`VARIANTS` for each example, float64, higher = more likely member."""
    lp = log_probs.clamp_min(LOG_FLOOR)
    _, confidence = loss_and_confidence(lp, labels)
    signals = {
        "correctness": (lp.argmax(1) == labels).double(),
        "confidence": confidence,
        "entropy": -entropy(lp),
        "modified_entropy": -modified_entropy(lp, labels),
    }
    return {k: v.numpy() for k, v in signals.items()}


def signals_of(access: BlackBoxAccess, data: Labeled) -> dict[str, np.ndarray]:
    return metric_signals(access.log_posteriors(data.images), data.labels)


def fit_thresholds(
    members: dict[str, np.ndarray],
    member_labels: np.ndarray,
    nonmembers: dict[str, np.ndarray],
    nonmember_labels: np.ndarray,
    variants: list[str],
    num_classes: int,
    classwise: bool,
) -> dict[str, np.ndarray]:
    """Per-class thresholds of each thresholded variant, from the attacker's signals alone.

    With ``classwise=False`` every class gets the one global threshold.
    """
    out = {}
    for v in variants:
        if v in UNTHRESHOLDED:
            continue
        if classwise:
            out[v] = classwise_thresholds(members[v], member_labels, nonmembers[v], nonmember_labels, num_classes)
        else:
            out[v] = np.full(num_classes, best_threshold(members[v], nonmembers[v])[0])
    return out


def margins(signal: np.ndarray, classes: np.ndarray, thresholds: np.ndarray | None) -> np.ndarray:
    """``signal - threshold[class]`` (the signal itself for an unthresholded variant)."""
    return signal if thresholds is None else signal - thresholds[classes]


@dataclass(frozen=True, kw_only=True)
class MetricSettings:
    """Which of the four metric attacks to run, and class-wise (Song & Mittal) or global thresholds."""

    variants: list[str] = setting(list(VARIANTS), choices=VARIANTS, example="[entropy]")
    classwise: bool = setting(True)


@ATTACKS.register("membership_metric")
class MetricMembershipInference(Attack):
    """Song & Mittal's correctness, confidence, entropy and modified-entropy attacks, (B,S) and (B,P)."""

    family = "membership"
    threat_models = ("blackbox_shadow", "blackbox_partial")
    Settings = MetricSettings

    def run(self, ctx: AttackContext) -> VariantMetrics:
        variants = list(ctx.settings.variants)
        a_in, a_out = balanced(ctx.knowledge.members, ctx.knowledge.nonmembers)
        n = len(a_in)
        att_in, att_out = signals_of(ctx.reference, a_in), signals_of(ctx.reference, a_out)
        thresholds = fit_thresholds(
            att_in,
            a_in.labels.numpy(),
            att_out,
            a_out.labels.numpy(),
            variants,
            ctx.num_classes,
            ctx.settings.classwise,
        )

        e_in, e_out = balanced(ctx.evaluation.members, ctx.evaluation.nonmembers)
        m = len(e_in)
        ev_in, ev_out = signals_of(ctx.target, e_in), signals_of(ctx.target, e_out)
        is_member = np.concatenate([np.ones(m, dtype=int), np.zeros(m, dtype=int)])
        ev_classes = torch.cat([e_in.labels, e_out.labels]).numpy()
        att_member = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
        att_classes = torch.cat([a_in.labels, a_out.labels]).numpy()

        results, saved = {}, {}
        for v in variants:
            thr = thresholds.get(v)
            cut = 0.5 if thr is None else 0.0  # correctness is 0/1: "member" iff correct
            signal = np.concatenate([ev_in[v], ev_out[v]])
            score = margins(signal, ev_classes, thr)
            metrics = membership_metrics(is_member, score, (score >= cut).astype(int))
            metrics["signal_auc"] = float(roc_auc_score(is_member, signal))
            att_score = margins(np.concatenate([att_in[v], att_out[v]]), att_classes, thr)
            metrics["attack_train_accuracy"] = float(((att_score >= cut) == att_member).mean())
            results[v] = metrics
            saved[v] = (is_member, score)
        scored = Labeled.concat([e_in, e_out])
        save_scores(ctx.out_dir / "scores.parquet", saved, scored)
        save_exposed(ctx.out_dir, saved, scored)
        (ctx.out_dir / "thresholds.json").write_text(
            json.dumps({v: t.tolist() for v, t in thresholds.items()}, indent=2)
        )
        return results
