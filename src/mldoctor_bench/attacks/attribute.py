"""Attribute inference (ML-Doctor's AttrInf), spec section 5.

A white-box attacker reads the target's penultimate embedding (``model.embed``, no forward hooks)
and trains a two-layer MLP to predict the *sensitive attribute* (not the task label, which the
original re-predicted by mistake) on its own data: the shadow quarters under (W,S), its known part
of target-train under (W,P). It is scored on target-test against two baselines that need no model:
``baseline_accuracy``, the majority attribute, and ``label_baseline_accuracy``, the attribute
predicted from the task label alone (each label's most frequent attribute in the attacker's data).
Where attribute and task are correlated the second is the honest one: only accuracy above
``best_baseline_accuracy``, the stronger of the two, is leakage the embedding adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mldoctor_bench.attacks.attack_model import fit_network
from mldoctor_bench.attacks.auxiliary import training_data
from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, AttackSkipped, VariantMetrics
from mldoctor_bench.inference import model_inputs
from mldoctor_bench.metrics import classification_metrics
from mldoctor_bench.models import Classifier
from mldoctor_bench.settings import setting
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
    outs = [model.embed(model_inputs(images[b].to(device))).float().cpu()
            for b in iterate_batches(len(images), batch_size, None)]
    return torch.cat(outs) if outs else torch.empty(0, model.embedding_dim)


@dataclass(frozen=True, kw_only=True)
class AttributeSettings:
    """The attribute MLP's recipe (Adam)."""

    epochs: int = setting(min=1, example=50)
    lr: float = setting(min=0, min_exclusive=True, example=1e-3)
    batch_size: int = setting(64, min=1)
    hidden: int = setting(128, min=1)


def label_baseline(train_labels: torch.Tensor, train_attribute: torch.Tensor, test_labels: torch.Tensor,
                   num_classes: int, num_attribute_classes: int) -> torch.Tensor:
    """Predict each test example's attribute from its task label: the label's most frequent
    attribute in the training data (the overall most frequent one for a label never seen)."""
    counts = torch.zeros(num_classes, num_attribute_classes, dtype=torch.long)
    counts.index_put_((train_labels.long(), train_attribute.long()), torch.ones(len(train_labels), dtype=torch.long),
                      accumulate=True)
    overall = counts.sum(0).argmax()
    by_label = torch.where(counts.sum(1) > 0, counts.argmax(1), overall)
    return by_label[test_labels.long()]


@ATTACKS.register("attribute")
class AttributeInference(Attack):
    """AttrInf (W,S) and (W,P): an MLP on the target's embeddings predicts the sensitive attribute."""

    threat_models = ("whitebox_shadow", "whitebox_partial")
    Settings = AttributeSettings

    def run(self, ctx: AttackContext) -> VariantMetrics:
        train, test = training_data(ctx), ctx.evaluation.target_test
        if ctx.num_attribute_classes == 0 or train.attribute is None or test.attribute is None:
            raise AttackSkipped("the dataset has no sensitive attribute to infer")
        model, s = ctx.target.model, ctx.settings
        fitted = fit_network(
            lambda: AttributeNet(model.embedding_dim, s.hidden, ctx.num_attribute_classes),
            [embeddings(model, train.images, ctx.device)], train.attribute,
            s.epochs, s.lr, s.batch_size, ctx.seed,
        )
        predicted = fitted.probabilities([embeddings(model, test.images, ctx.device)]).argmax(1)
        metrics = classification_metrics(test.attribute.numpy(), predicted.numpy())
        from_label = label_baseline(train.labels, train.attribute, test.labels, ctx.num_classes,
                                    ctx.num_attribute_classes)
        metrics["label_baseline_accuracy"] = float((from_label == test.attribute).double().mean())
        metrics["best_baseline_accuracy"] = max(metrics["baseline_accuracy"], metrics["label_baseline_accuracy"])
        metrics["advantage_over_baseline"] = metrics["accuracy"] - metrics["best_baseline_accuracy"]
        metrics.update(attack_train_loss=fitted.losses[-1], n_train=float(len(train)), n_test=float(len(test)))
        return {"": metrics}
