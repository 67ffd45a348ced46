"""Model stealing (ML-Doctor's ModSteal, Liu et al. 2022).

The attacker queries the target with its own images (the shadow quarters under (B,S), its known
part of target-train under (B,P)) and trains a surrogate of the target's architecture and recipe on
the answers: soft labels with cross-entropy to the released probabilities (the original fitted
logits to probabilities with MSE), or hard labels when only labels are released. The surrogate is
scored on target-test by its accuracy and its agreement with the target.

What querying adds is measured against a model the attacker could train without the target: the
same architecture, recipe and images with their true labels (``baseline_agreement``,
``baseline_accuracy``); ``agreement_over_baseline`` is the difference, and ``only_attack_right``
and ``only_baseline_right`` count the test examples on which only the surrogate, or only the
baseline, agrees with the target (for a paired test). A surrogate that agrees with the target no
more than that baseline has stolen nothing a labelled dataset would not give.

A training-time defense that costs accuracy moves that baseline: a weaker target errs where a plain
model is right, so the no-query model agrees less with it and ``agreement_over_baseline`` rises with
nothing more stolen. ``target_accuracy`` and ``accuracy_ratio`` (how much of the target's accuracy
the surrogate reaches) stand beside agreement, and agreement is split where the target is right and
where it is wrong (``agreement_where_target_right`` / ``_wrong``, and the baseline's): copying the
target's mistakes is what only querying gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from mldoctor_bench.attacks.auxiliary import paired_counts, training_data
from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, ModelRequest, VariantMetrics
from mldoctor_bench.inference import predict_logits
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.metrics import agreement
from mldoctor_bench.settings import setting
from mldoctor_bench.threat_models import BlackBoxAccess, LabelOnlyAccess


def query_answers(access: LabelOnlyAccess, images: torch.Tensor) -> tuple[str, torch.Tensor]:
    """The variant and the surrogate's training targets: float32 probability rows where the access
    releases posteriors, else int64 labels."""
    if isinstance(access, BlackBoxAccess):
        return "posteriors", access.posteriors(images).float()
    return "labels", access.labels(images)


def score_surrogate(
    surrogate: nn.Module, target_labels: torch.Tensor, test: Labeled
) -> tuple[dict[str, float], torch.Tensor]:
    """Surrogate accuracy on ``test`` and its agreement with the target's predicted ``target_labels``,
    and per test example whether it agrees."""
    predicted = predict_logits(surrogate, test.images).argmax(1).cpu()
    return {
        "accuracy": float((predicted == test.labels).double().mean()),
        "agreement": agreement(predicted.numpy(), target_labels.numpy()),
    }, predicted == target_labels


def split_by_target(
    agrees: torch.Tensor, baseline_agrees: torch.Tensor, target_right: torch.Tensor
) -> dict[str, float]:
    """Agreement with the target where it is right (there agreeing is being right) and where it is
    wrong (there it is copying the target's own mistakes, which a no-query model rarely does), for
    the surrogate and the no-query model: a weaker target (a training-time defense that costs
    accuracy) lowers the no-query model's agreement without any more being stolen, and these show
    which part of the agreement moved."""
    out = {}
    for where, rows in (("right", target_right), ("wrong", ~target_right)):
        n = max(int(rows.sum()), 1)
        out[f"agreement_where_target_{where}"] = float(agrees[rows].sum()) / n
        out[f"baseline_agreement_where_target_{where}"] = float(baseline_agrees[rows].sum()) / n
    # what querying adds where the target's own errors cannot count: comparable across defenses
    out["agreement_over_baseline_where_target_right"] = (
        out["agreement_where_target_right"] - out["baseline_agreement_where_target_right"]
    )
    return out


def against_baseline(
    metrics: dict[str, float], agrees: torch.Tensor, base: dict[str, float], base_agrees: torch.Tensor, target_right
) -> dict[str, float]:
    """What the stealing verdict compares: the no-query model's agreement and accuracy, the margin
    over it, the paired counts, and the target's own accuracy."""
    return {
        "baseline_agreement": base["agreement"],
        "baseline_accuracy": base["accuracy"],
        "agreement_over_baseline": metrics["agreement"] - base["agreement"],
        **paired_counts(agrees, base_agrees),
        "target_accuracy": float(target_right.double().mean()),
    }


@dataclass(frozen=True, kw_only=True)
class StealingSettings:
    """Surrogate epochs (the target's recipe otherwise) and the query budget (null: all queries)."""

    epochs: int = setting(min=1, example=50)
    budget: Optional[int] = setting(None, min=1, example=500)


@ATTACKS.register("stealing")
class ModelStealing(Attack):
    """ModSteal (B,S), (B,P) and label-only: a surrogate trained on the target's answers."""

    family = "stealing"
    threat_models = ("blackbox_shadow", "blackbox_partial", "blackbox_label_only")
    Settings = StealingSettings

    @staticmethod
    def surrogate(ctx: AttackContext) -> tuple[str, ModelRequest]:
        """The variant and the surrogate to train: the attacker's images with the target's answers."""
        images = training_data(ctx).images
        if ctx.settings.budget is not None:
            images = images[: ctx.settings.budget]
        variant, answers = query_answers(ctx.target, images)
        return variant, ModelRequest(
            f"surrogate-{variant}-{ctx.threat_model.name}", images, answers, epochs=ctx.settings.epochs
        )

    @staticmethod
    def baseline(ctx: AttackContext, request: ModelRequest) -> ModelRequest:
        """The model the attacker trains on the surrogate's images with their true labels, no query
        made (the same images give the same model under every threat model: trained once)."""
        data = training_data(ctx)
        return ModelRequest(
            "stealing-baseline", request.images, data.labels[: len(request.images)], epochs=request.epochs
        )

    def models_wanted(self, ctx: AttackContext) -> list[ModelRequest]:
        request = self.surrogate(ctx)[1]
        return [request, self.baseline(ctx, request)]

    def run(self, ctx: AttackContext) -> VariantMetrics:
        variant, request = self.surrogate(ctx)
        surrogate, baseline = ctx.models.prepare([request, self.baseline(ctx, request)])
        test = ctx.evaluation.target_test
        target_labels = ctx.target.labels(test.images)
        metrics, agrees = score_surrogate(surrogate, target_labels, test)
        base, base_agrees = score_surrogate(baseline, target_labels, test)
        target_right = target_labels == test.labels
        metrics.update(
            **against_baseline(metrics, agrees, base, base_agrees, target_right),
            **split_by_target(agrees, base_agrees, target_right),
            accuracy_ratio=metrics["accuracy"] / max(float(target_right.double().mean()), 1e-12),
            queries=float(len(request.images)),
            n_test=float(len(test)),
        )
        return {variant: metrics}
