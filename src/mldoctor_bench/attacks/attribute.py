"""Attribute inference (ML-Doctor's AttrInf), spec section 5.

A white-box attacker reads the target's penultimate embedding (``model.embed``, no forward hooks)
and trains a two-layer MLP to predict the *sensitive attribute* (not the task label, which the
original re-predicted by mistake) on its own data: the shadow quarters under (W,S), its known part
of target-train under (W,P). It is scored on target-test against the majority-class baseline.
"""

from __future__ import annotations

import torch
from torch import nn

from mldoctor_bench.attacks.attack_model import fit_network
from mldoctor_bench.attacks.auxiliary import training_data
from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, AttackSkipped, VariantMetrics
from mldoctor_bench.data.base import normalise
from mldoctor_bench.metrics import classification_metrics
from mldoctor_bench.models import Classifier
from mldoctor_bench.training import iterate_batches


class AttributeNet(nn.Module):
    """Two-layer MLP from an embedding to the attribute's classes (the paper's attack model)."""

    def __init__(self, in_dim: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, groups: list[torch.Tensor]) -> torch.Tensor:
        return self.layers(torch.cat(groups, dim=1))


@torch.no_grad()
def embeddings(model: Classifier, images: torch.Tensor, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Penultimate embeddings ``(N, embedding_dim)`` of ``uint8`` images, float32 on the CPU."""
    model.eval()
    outs = [model.embed(normalise(images[b].to(device))).float().cpu()
            for b in iterate_batches(len(images), batch_size, None)]
    return torch.cat(outs) if outs else torch.empty(0, model.embedding_dim)


@ATTACKS.register("attribute")
class AttributeInference(Attack):
    """AttrInf (W,S) and (W,P): an MLP on the target's embeddings predicts the sensitive attribute."""

    threat_models = ("whitebox_shadow", "whitebox_partial")

    def run(self, ctx: AttackContext) -> VariantMetrics:
        train, test = training_data(ctx), ctx.evaluation.target_test
        if ctx.num_attribute_classes == 0 or train.attribute is None or test.attribute is None:
            raise AttackSkipped("the dataset has no sensitive attribute to infer")
        model, s = ctx.target.model, ctx.settings
        fitted = fit_network(
            lambda: AttributeNet(model.embedding_dim, int(s.hidden), ctx.num_attribute_classes),
            [embeddings(model, train.images, ctx.device)], train.attribute,
            int(s.epochs), float(s.lr), int(s.batch_size), ctx.seed,
        )
        predicted = fitted.probabilities([embeddings(model, test.images, ctx.device)]).argmax(1)
        metrics = classification_metrics(test.attribute.numpy(), predicted.numpy())
        metrics.update(attack_train_loss=fitted.losses[-1], n_train=float(len(train)), n_test=float(len(test)))
        return {"": metrics}
