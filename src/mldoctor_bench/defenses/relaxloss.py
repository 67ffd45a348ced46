"""RelaxLoss (Chen, Yu and Fritz, ICLR 2022): keep the training loss near a target level alpha.

The training step follows the authors' released code for image data (``source/cifar/defense/
relaxloss.py``); epochs count from 0 there and here. With ``L`` the batch's mean cross-entropy:

- even epochs: minimise ``|L - alpha|`` (gradient ascent once the loss is below alpha);
- odd epochs, ``L > alpha``: ordinary descent on ``L``;
- odd epochs, ``L <= alpha`` (posterior flattening): per example, the soft-target cross-entropy
  counted only where the prediction (argmax) is wrong, minus the example's ordinary cross-entropy
  (gradient ascent on every example), averaged over the batch. The soft targets keep the model's
  own true-class probability clamped to ``[0, upper]`` and spread the rest evenly over the other
  classes; they are built from the live softmax, so gradient flows through them too.

Members then look like non-members in loss and in posterior shape. ``defense.alpha`` (larger: more
protection, less utility) and ``defense.upper`` (the clamp on the kept probability; 1 in every
config the authors ship).

The authors' code for tabular data (``source/nonimage``) differs: there the flattening loss is the
soft-target cross-entropy of every example, with no mask and no ascent term; this module follows the
image code, as the benchmark's targets are image classifiers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mldoctor_bench.defense_catalog import TRAINING
from mldoctor_bench.defenses.base import DEFENSES, Defense, TrainingSet
from mldoctor_bench.settings import setting
from mldoctor_bench.training import predict_logits, train_classifier


def flattened_targets(logits: torch.Tensor, labels: torch.Tensor, upper: float) -> torch.Tensor:
    """Soft targets: the model's true-class probability (clamped to ``[0, upper]``) on the true
    class, the remainder split evenly over the other classes. Not detached: the authors' code lets
    gradient flow through them."""
    probs = F.softmax(logits, 1)
    true = probs.gather(1, labels.view(-1, 1)).clamp(0.0, upper)
    rest = (1.0 - true) / (logits.shape[1] - 1)
    onehot = F.one_hot(labels, logits.shape[1]).to(probs.dtype)
    return onehot * true + (1 - onehot) * rest


def flattening_loss(logits: torch.Tensor, labels: torch.Tensor, upper: float) -> torch.Tensor:
    """The posterior-flattening step: mean over the batch of ``wrong * CE(soft targets) - CE``,
    where ``wrong`` marks examples whose argmax is not the label."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    soft_ce = -(flattened_targets(logits, labels, upper) * F.log_softmax(logits, 1)).sum(1)
    wrong = (logits.argmax(1) != labels).to(logits.dtype)
    return (wrong * soft_ce - ce).mean()


def relaxloss(alpha: float, upper: float = 1.0):
    """The RelaxLoss ``loss_fn(logits, labels, epoch)`` for :func:`train_classifier` (epochs from 0)."""

    def loss(logits: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        ce = F.cross_entropy(logits, labels)
        if epoch % 2 == 0:
            return (ce - alpha).abs()
        if ce > alpha:
            return ce
        return flattening_loss(logits, labels, upper)

    return loss


@dataclass(frozen=True, kw_only=True)
class RelaxLossSettings:
    alpha: float = setting(0.5, min=0, min_exclusive=True)
    upper: float = setting(1.0, min=0, max=1)


@DEFENSES.register("relaxloss")
class RelaxLoss(Defense):
    """Train with RelaxLoss at target loss ``defense.alpha``."""

    kind = TRAINING
    Settings = RelaxLossSettings

    def fit(self, model: nn.Module, data: TrainingSet) -> dict:
        alpha, upper = self.settings.alpha, self.settings.upper
        train_classifier(
            model,
            data.images,
            data.labels,
            data.recipe,
            data.seed,
            on_epoch=data.on_epoch,
            loss_fn=relaxloss(alpha, upper),
        )
        return {"train_loss": float(F.cross_entropy(predict_logits(model, data.images), data.labels))}
