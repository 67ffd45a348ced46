"""Knowledge distillation (ML-Doctor, Liu et al. 2022): the released model is a student of a teacher.

The teacher (same architecture) is trained on the model's own training data; the student learns
from the teacher's temperature-softened posteriors with ML-Doctor's loss
``KL(student/T || teacher/T) * T^2 * 2a + CE * (1 - a)`` (``defense.temperature`` T = 20,
``defense.alpha`` a = 0.7). The student sees *transfer* data disjoint from the teacher's (rows in
no quarter that the cell's partition reserves for the defense), the setting in which distillation protects
membership: the released model never trained on a member. The transfer pool comes from the cell's
partition (``defense.transfer_size`` rows, by default as many as the teacher's), which refuses to
run without one; the cell reports ``transfer_size`` and ``student_data_disjoint`` from the saved
indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from mldoctor_bench.defense_catalog import TRAINING
from mldoctor_bench.defenses.base import DEFENSES, Defense, TrainingSet
from mldoctor_bench.inference import predict_logits
from mldoctor_bench.settings import setting
from mldoctor_bench.training import train_classifier


def distillation_loss(temperature: float, alpha: float):
    """``loss_fn(student_logits, targets, epoch)`` for targets ``[teacher_logits | label]`` rows."""

    def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        teacher, labels = targets[:, :-1], targets[:, -1].long()
        kl = F.kl_div(
            F.log_softmax(logits / temperature, 1),
            F.log_softmax(teacher / temperature, 1),
            reduction="batchmean",
            log_target=True,
        )
        return kl * temperature**2 * 2 * alpha + F.cross_entropy(logits, labels) * (1 - alpha)

    return loss


@dataclass(frozen=True, kw_only=True)
class DistillationSettings:
    temperature: float = setting(20.0, min=0, min_exclusive=True)
    alpha: float = setting(0.7, min=0, max=1)
    # Clip the student's gradient norm: the T^2-scaled soft loss diverges at the recipe's step otherwise.
    max_grad_norm: float = setting(5.0, min=0, min_exclusive=True)
    # Rows of the student's transfer pool; null: as many as the teacher's training set.
    transfer_size: Optional[int] = setting(None, min=1, example=500)


@DEFENSES.register("distillation")
class Distillation(Defense):
    """Release a student distilled from a teacher: ``defense.temperature``, ``defense.alpha``."""

    kind = TRAINING
    uses_transfer_data = True
    Settings = DistillationSettings

    def transfer_size(self) -> Optional[int]:
        return self.settings.transfer_size

    def fit(self, model: nn.Module, data: TrainingSet) -> dict:
        s = self.settings
        if data.transfer is None or len(data.transfer) == 0:
            raise ValueError("distillation needs the partition's transfer pool (rows no other model uses)")
        teacher = data.build().to(data.images.device)
        train_classifier(teacher, data.images, data.labels, data.recipe, data.seed + 1)
        images = data.transfer.images.to(data.images.device)
        labels = data.transfer.labels.to(data.images.device)
        targets = torch.cat([predict_logits(teacher, images).to(images.device), labels.view(-1, 1).float()], 1)
        # The T^2-scaled soft loss has gradients up to T times those of cross-entropy: at the
        # recipe's SGD step the student diverges (NaN) unless its gradient norm is clipped.
        train_classifier(
            model,
            images,
            targets,
            data.recipe,
            data.seed,
            on_epoch=data.on_epoch,
            loss_fn=distillation_loss(s.temperature, s.alpha),
            max_grad_norm=s.max_grad_norm,
        )
        agreement = (predict_logits(model, images).argmax(1) == targets[:, :-1].argmax(1)).float().mean()
        return {"student_teacher_agreement": float(agreement), "student_train_size": float(len(images))}
