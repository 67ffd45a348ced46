"""Attribute inference (ML-Doctor's AttrInf, Liu et al. 2022).

A white-box attacker reads the target's penultimate embedding (``model.embed``, no forward hooks)
and trains a two-layer MLP to predict the *sensitive attribute* (not the task label, which the
original re-predicted by mistake) on its own data: the shadow quarters under (W,S), its known part
of target-train under (W,P). The attacker holds the target's weights and images with their task
label and attribute; it wants the attribute of images it holds without it.

What the target leaks about its *training data* (Jayaraman and Evans, "Are attribute inference
attacks just imputation?", USENIX Security 2022): the attack is scored on the evaluation members
(target-train rows the attacker did not train on) and as many non-members, beside an imputation
model that needs no target (the same attack on the attacker's own model, below), and
``training_leakage`` is the attack's member-minus-non-member accuracy beyond the same difference for
imputation; the verdict tests it. What it infers about the *distribution*, scored on target-test
against three baselines that need no target, is reported as distributional inference:
``baseline_accuracy``, the majority attribute; ``label_baseline_accuracy``, the attribute predicted
from the task label alone (each label's most frequent attribute in the attacker's data);
and ``no_target_accuracy``, the same attack on the embedding of the attacker's own model of the
target's architecture (its shadow model under (W,S); under (W,P) one trained on its known examples),
which shows what any model of this kind reveals about the attribute without the target (the
imputation model). Accuracy above ``best_baseline_accuracy``, the strongest of the three, is what
the target adds about the distribution (``advantage_over_baseline``, not training-data leakage);
``only_attack_right`` and ``only_baseline_right`` count the test examples on which exactly one of
the attack and that baseline is right.

Saved in the attack's folder: ``predictions.parquet``, one row per test example (its dataset
``index``, attribute, the attack's prediction and confidence, and each baseline's prediction).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from mldoctor_bench.attacks.attack_model import fit_network
from mldoctor_bench.attacks.auxiliary import paired_counts, training_data
from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, AttackSkipped, ModelRequest, VariantMetrics
from mldoctor_bench.inference import model_inputs
from mldoctor_bench.knowledge import Labeled
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
    outs = [
        model.embed(model_inputs(images[b].to(device))).float().cpu()
        for b in iterate_batches(len(images), batch_size, None)
    ]
    return torch.cat(outs) if outs else torch.empty(0, model.embedding_dim)


@dataclass(frozen=True, kw_only=True)
class AttributeSettings:
    """The attribute MLP's recipe (Adam)."""

    epochs: int = setting(min=1, example=50)
    lr: float = setting(min=0, min_exclusive=True, example=1e-3)
    batch_size: int = setting(64, min=1)
    hidden: int = setting(128, min=1)


def label_baseline(
    train_labels: torch.Tensor,
    train_attribute: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    num_attribute_classes: int,
) -> torch.Tensor:
    """Predict each test example's attribute from its task label: the label's most frequent
    attribute in the training data (the overall most frequent one for a label never seen)."""
    counts = torch.zeros(num_classes, num_attribute_classes, dtype=torch.long)
    counts.index_put_(
        (train_labels.long(), train_attribute.long()), torch.ones(len(train_labels), dtype=torch.long), accumulate=True
    )
    overall = counts.sum(0).argmax()
    by_label = torch.where(counts.sum(1) > 0, counts.argmax(1), overall)
    return by_label[test_labels.long()]


def own_model_request(ctx: AttackContext) -> ModelRequest | None:
    """The attacker's own model of the target's architecture, when the threat model gives it none:
    trained on the data the attack trains on (under (W,P), its known members), as the shadow is."""
    if ctx.knowledge.reference is not None:
        return None
    train = training_data(ctx)
    return ModelRequest(f"attacker-own-{ctx.threat_model.name}", train.images, train.labels, defended=True)


@ATTACKS.register("attribute")
class AttributeInference(Attack):
    """AttrInf (W,S) and (W,P): an MLP on the target's embeddings predicts the sensitive attribute."""

    family = "attribute"
    threat_models = ("whitebox_shadow", "whitebox_partial")
    Settings = AttributeSettings

    def models_wanted(self, ctx: AttackContext) -> list[ModelRequest]:
        request = own_model_request(ctx) if ctx.num_attribute_classes else None
        return [request] if request is not None else []

    def run(self, ctx: AttackContext) -> VariantMetrics:
        train, test = training_data(ctx), ctx.evaluation.target_test
        if ctx.num_attribute_classes == 0 or train.attribute is None or test.attribute is None:
            raise AttackSkipped("the dataset has no sensitive attribute to infer")
        own = ctx.knowledge.reference.model if ctx.knowledge.reference is not None else None
        if own is None:
            r = own_model_request(ctx)
            own = ctx.models.classifier(r.role, r.images, r.targets)
        # scored on target-test; the evaluation members are predicted too, to link attribute leakage
        # to membership exposure example by example (they are not in the attacker's training data)
        members, nonmembers = ctx.evaluation.members, ctx.evaluation.nonmembers
        (probs, member_probs, nonmember_probs), loss = self.infer(
            ctx, ctx.target.model, train, [test, members, nonmembers]
        )
        no_target = [p.argmax(1) for p in self.infer(ctx, own, train, [test, members, nonmembers])[0]]
        majority = int(torch.bincount(test.attribute.long()).argmax())

        def guesses(data: Labeled, own_guess: torch.Tensor) -> dict[str, torch.Tensor]:
            return {
                "baseline_accuracy": torch.full_like(data.attribute, majority),
                "label_baseline_accuracy": label_baseline(
                    train.labels, train.attribute, data.labels, ctx.num_classes, ctx.num_attribute_classes
                ),
                "no_target_accuracy": own_guess,
            }

        baselines = guesses(test, no_target[0])
        predicted = probs.argmax(1)
        metrics = classification_metrics(test.attribute.numpy(), predicted.numpy())
        right = {name: guess == test.attribute for name, guess in baselines.items()}
        accuracies = {name: float(r.double().mean()) for name, r in right.items()}
        strongest = max(accuracies, key=accuracies.get)
        metrics.update(accuracies)
        metrics["best_baseline_accuracy"] = accuracies[strongest]
        metrics["advantage_over_baseline"] = metrics["accuracy"] - accuracies[strongest]
        metrics.update(paired_counts(predicted == test.attribute, right[strongest]))
        metrics.update(attack_train_loss=loss, n_train=float(len(train)), n_test=float(len(test)))
        metrics.update(
            members_beyond_imputation(
                (members.attribute, member_probs.argmax(1), no_target[1]),
                (nonmembers.attribute, nonmember_probs.argmax(1), no_target[2]),
            )
        )
        frames = [
            predictions_frame(data, p, guesses(data, own_guess), strongest, role)
            for data, p, own_guess, role in (
                (test, probs, no_target[0], "target_test"),
                (members, member_probs, no_target[1], "target_train"),
            )
        ]
        pd.concat(frames, ignore_index=True).to_parquet(ctx.out_dir / "predictions.parquet", index=False)
        return {"": metrics}

    @staticmethod
    def infer(
        ctx: AttackContext, model: Classifier, train: Labeled, sets: list[Labeled]
    ) -> tuple[list[torch.Tensor], float]:
        """The attack on ``model``'s embeddings: an MLP fitted on ``train``; its probabilities on each
        of ``sets`` and its last training loss."""
        s = ctx.settings
        fitted = fit_network(
            lambda: AttributeNet(model.embedding_dim, s.hidden, ctx.num_attribute_classes),
            [embeddings(model, train.images, ctx.device)],
            train.attribute,
            s.epochs,
            s.lr,
            s.batch_size,
            ctx.seed,
        )
        return [fitted.probabilities([embeddings(model, d.images, ctx.device)]) for d in sets], fitted.losses[-1]


def members_beyond_imputation(
    members: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    nonmembers: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> dict[str, float]:
    """Jayaraman and Evans's measure of training-data leakage (USENIX Security 2022): the attack's
    accuracy on members minus on non-members, beyond the same difference for the imputation model
    (the attack on the attacker's own model, which saw neither). Each argument is ``(attribute,
    attack's guess, imputation's guess)`` for the evaluation members, or non-members; the counts let
    a report test it (:func:`~mldoctor_bench.report.significance.difference_in_differences`)."""
    out = {}
    for name, (truth, attack, imputation) in (("member", members), ("nonmember", nonmembers)):
        attack_right, imputation_right = attack == truth, imputation == truth
        out[f"{name}_accuracy"] = float(attack_right.double().mean())
        out[f"{name}_imputation_accuracy"] = float(imputation_right.double().mean())
        out[f"{name}_only_attack_right"] = float((attack_right & ~imputation_right).sum())
        out[f"{name}_only_imputation_right"] = float((~attack_right & imputation_right).sum())
        out[f"n_{name}s_scored"] = float(len(truth))
    out["training_leakage"] = (out["member_accuracy"] - out["nonmember_accuracy"]) - (
        out["member_imputation_accuracy"] - out["nonmember_imputation_accuracy"]
    )
    return out


def predictions_frame(
    data: Labeled, probs: torch.Tensor, baselines: dict[str, torch.Tensor], strongest: str, role: str
) -> pd.DataFrame:
    """One row per example: its dataset ``index`` and ``role`` in the partition, the attribute, the
    attack's prediction and confidence, each baseline's prediction, and ``leaked``: the attack is right
    where the strongest baseline (on target-test) is wrong."""
    predicted = probs.argmax(1)
    return pd.DataFrame(
        {
            "index": data.index.numpy() if data.index is not None else range(len(data)),
            "role": role,
            "attribute": data.attribute.numpy(),
            "predicted": predicted.numpy(),
            "confidence": probs.max(1).values.numpy(),
            **{f"{name.removesuffix('_accuracy')}_predicted": guess.numpy() for name, guess in baselines.items()},
            "leaked": ((predicted == data.attribute) & (baselines[strongest] != data.attribute)).numpy(),
        }
    )
