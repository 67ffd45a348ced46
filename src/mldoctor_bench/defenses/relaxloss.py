"""RelaxLoss (Chen, Yu and Fritz, ICLR 2022): keep the training loss near a target level alpha.

Per batch, with ``L`` the mean cross-entropy: on even epochs minimise ``|L - alpha|`` (gradient
ascent once the loss is below alpha); on odd epochs descend normally while ``L > alpha``, otherwise
flatten the posteriors: train towards soft targets that keep each example's own (clamped, detached)
true-class probability and spread the rest evenly over the other classes. Members then look like
non-members in loss and in posterior shape. ``defense.alpha`` (larger: more protection, less
utility) and ``defense.upper`` (the clamp on the kept probability, 1 in the paper's code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mldoctor_bench.defenses.base import DEFENSES, TRAINING, Defense, TrainingSet
from mldoctor_bench.settings import setting
from mldoctor_bench.training import predict_logits, train_classifier


def flattened_targets(logits: torch.Tensor, labels: torch.Tensor, upper: float) -> torch.Tensor:
    """Soft targets: the model's true-class probability (clamped to ``upper``) on the true class,
    the remainder split evenly over the other classes; no gradient flows through them."""
    probs = F.softmax(logits.detach(), 1)
    true = probs.gather(1, labels.view(-1, 1)).clamp(0.0, upper)
    rest = (1.0 - true) / (logits.shape[1] - 1)
    onehot = F.one_hot(labels, logits.shape[1]).to(probs.dtype)
    return onehot * true + (1 - onehot) * rest


def relaxloss(alpha: float, upper: float = 1.0):
    """The RelaxLoss ``loss_fn(logits, labels, epoch)`` for :func:`train_classifier`."""

    def loss(logits: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        ce = F.cross_entropy(logits, labels)
        if epoch % 2 == 0:
            return (ce - alpha).abs()
        if ce > alpha:
            return ce
        return F.cross_entropy(logits, flattened_targets(logits, labels, upper))

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
        train_classifier(model, data.images, data.labels, data.recipe, data.seed, on_epoch=data.on_epoch,
                         loss_fn=relaxloss(alpha, upper))
        return {"train_loss": float(F.cross_entropy(predict_logits(model, data.images), data.labels))}
