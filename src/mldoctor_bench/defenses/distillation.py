"""Knowledge distillation (spec section 6): the released model is a student of a teacher.

The teacher (same architecture) is trained on the model's own training data; the student learns
from the teacher's temperature-softened posteriors with ML-Doctor's loss
``KL(student/T || teacher/T) * T^2 * 2a + CE * (1 - a)`` (``defense.temperature`` T = 20,
``defense.alpha`` a = 0.7). The student sees *transfer* data disjoint from the teacher's (rows in
no quarter that the runner reserves for the defense), the setting in which distillation protects
membership: the released model never trained on a member. Without such rows it falls back to the
teacher's own data, reported as ``student_data_disjoint`` 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mldoctor_bench.defenses.base import DEFENSES, TRAINING, Defense, TrainingSet
from mldoctor_bench.inference import predict_logits
from mldoctor_bench.training import train_classifier


def distillation_loss(temperature: float, alpha: float):
    """``loss_fn(student_logits, targets, epoch)`` for targets ``[teacher_logits | label]`` rows."""

    def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        teacher, labels = targets[:, :-1], targets[:, -1].long()
        kl = F.kl_div(F.log_softmax(logits / temperature, 1), F.log_softmax(teacher / temperature, 1),
                      reduction="batchmean", log_target=True)
        return kl * temperature**2 * 2 * alpha + F.cross_entropy(logits, labels) * (1 - alpha)

    return loss


@DEFENSES.register("distillation")
class Distillation(Defense):
    """Release a student distilled from a teacher: ``defense.temperature``, ``defense.alpha``."""

    kind = TRAINING
    uses_transfer_data = True

    def fit(self, model: nn.Module, data: TrainingSet) -> dict:
        temperature = float(self.settings.get("temperature", 20.0))
        alpha = float(self.settings.get("alpha", 0.7))
        teacher = data.build().to(data.images.device)
        train_classifier(teacher, data.images, data.labels, data.recipe, data.seed + 1)
        disjoint = data.transfer is not None and len(data.transfer) > 0
        if disjoint:
            images = data.transfer.images.to(data.images.device)
            labels = data.transfer.labels.to(data.images.device)
        else:
            images, labels = data.images, data.labels
        targets = torch.cat([predict_logits(teacher, images).to(images.device), labels.view(-1, 1).float()], 1)
        # The T^2-scaled soft loss has gradients up to T times those of cross-entropy: at the
        # recipe's SGD step the student diverges (NaN) unless its gradient norm is clipped.
        train_classifier(model, images, targets, data.recipe, data.seed, on_epoch=data.on_epoch,
                         loss_fn=distillation_loss(temperature, alpha),
                         max_grad_norm=float(self.settings.get("max_grad_norm", 5.0)))
        agreement = (predict_logits(model, images).argmax(1) == targets[:, :-1].argmax(1)).float().mean()
        return {"student_data_disjoint": float(disjoint), "student_teacher_agreement": float(agreement),
                "student_train_size": float(len(images))}
