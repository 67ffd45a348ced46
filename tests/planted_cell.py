"""The planted membership case shared by the LiRA, RMIA and QMIA tests and ``scripts/qmia_ablation.py``:
a SimpleCNN target that memorised 6 mislabelled members among 4 quarters of 150 embedded digits.

The six are the members a model trained on the attacker's shadow data finds most typical of their
class (most confidently right), so that a wrong label is far from what a model that did not train on
it predicts: further than any digit that is merely odd."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from hand_context import hand_context
from mldoctor_bench.attacks.base import AttackContext, ModelService
from mldoctor_bench.attacks.reference_models import signals
from mldoctor_bench.data import load_dataset
from mldoctor_bench.data.base import ImageData
from mldoctor_bench.models import build_model
from mldoctor_bench.store import StoredModel
from mldoctor_bench.threat_models import BlackBoxAccess
from mldoctor_bench.training import Recipe, train_classifier

RECIPE = Recipe(epochs=80, batch_size=16, lr=0.01, lr_milestones=(), precision="fp32")
PLANTED = 6


class TrainingService(ModelService):
    """Trains each classifier asked for once (by role) with the test recipe; records what each saw.
    Other models (QMIA's regressors) are trained as their request says, once per role."""

    def __init__(self):
        self.seen, self.models = {}, {}

    def classifier(self, role, images, targets, epochs=None, arch=None):
        if role not in self.models:
            self.seen[role] = images.clone()
            model = build_model("simple_cnn", images.shape[1], 10, images.shape[-1])
            self.models[role] = train_classifier(model, images, targets, RECIPE, seed=len(self.seen))
        return self.models[role]

    def cached(self, role, payload, build, train):
        if role not in self.models:
            model = build()
            train(model)
            self.models[role] = model
        return StoredModel(self.models[role], {}, None, False)


def cell_digits() -> ImageData:
    """The planted cell's 600 digits (4 quarters of 150): the first 600 rows of a seeded permutation
    of the embedded set (the null test trains its target on the next 150)."""
    digits = load_dataset("mnist5k", None)
    rows = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))[:600]
    return ImageData("digits", digits.images[rows], digits.labels[rows].clone(), 10)


def planted_context(out_dir: Path) -> tuple[AttackContext, set[int]]:
    """The (B,S) context of a target that memorised :data:`PLANTED` mislabelled members, and the
    positions of those members among the evaluation members."""
    data = cell_digits()
    torch.manual_seed(0)
    model = build_model("simple_cnn", 1, 10, 28)
    ctx = hand_context("blackbox_shadow", data, model, {}, out_dir)
    members = ctx.evaluation.members
    judge = train_classifier(
        build_model("simple_cnn", 1, 10, 28), ctx.knowledge.data.images, ctx.knowledge.data.labels, RECIPE, seed=1
    )
    typical = signals(BlackBoxAccess(judge, torch.device("cpu")), members.images, members.labels).phi
    planted = typical.argsort(descending=True)[:PLANTED]
    labels = members.labels.clone()
    labels[planted] = (labels[planted] + 5) % 10
    ctx.evaluation = replace(ctx.evaluation, members=replace(members, labels=labels))
    train_classifier(model, members.images, labels, RECIPE, seed=0)
    ctx.models = TrainingService()
    return ctx, set(planted.tolist())


def planted_above_others(scores, planted: set[int]) -> float:
    """The share of (planted, other member) pairs in which the planted member scores higher;
    ``scores`` are the evaluation members' in their order."""
    others = [i for i in range(len(scores)) if i not in planted]
    return float(sum(scores[p] > scores[o] for p in planted for o in others) / (len(planted) * len(others)))
