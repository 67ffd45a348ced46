"""Threat models as objects: what the attacker may query, and which auxiliary data it holds.

A threat model is (model access) x (auxiliary data) (ML-Doctor, Liu et al. 2022). Access is enforced by the
object an attack receives: a :class:`BlackBoxAccess` answers queries with the released outputs and
refuses to hand over the model; a :class:`LabelOnlyAccess` answers with labels alone; a
:class:`WhiteBoxAccess` also exposes weights, embeddings and gradients.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from mldoctor_bench.inference import predict_logits
from mldoctor_bench.models import Classifier

# The threat models themselves are plain data; they are re-exported here beside their access objects.
from mldoctor_bench.threat_catalog import (  # noqa: F401
    BLACKBOX,
    LABEL_ONLY,
    NONE,
    OWNER,
    PARTIAL,
    SHADOW,
    THREAT_MODELS,
    WHITEBOX,
    ThreatModel,
)

# Post-processing of released posteriors (output-time defenses): probabilities in, probabilities out.
OutputTransform = Callable[[torch.Tensor], torch.Tensor]


class LabelOnlyAccess:
    """Query access that returns only the predicted label of each image."""

    def __init__(self, model: Classifier, device: torch.device, batch_size: int = 512) -> None:
        self.__model = model.eval()
        self.device = device
        self.batch_size = batch_size
        self.num_classes = model.num_classes
        self.queries = 0

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        self.queries += len(images)
        if len(images) == 0:
            return torch.empty(0, self.num_classes, dtype=torch.float64)
        return predict_logits(self.__model, images, self.batch_size).double().cpu()

    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted class of each ``uint8`` image."""
        return self._logits(images).argmax(1)

    @property
    def model(self):
        raise PermissionError(
            f"{type(self).__name__} grants query access only; the model's weights are not reachable "
            "under a black-box threat model"
        )


class BlackBoxAccess(LabelOnlyAccess):
    """Query access returning the released posterior vector of each image.

    Posteriors are returned as float64 *log*-probabilities: a float32 softmax saturates to exactly 1
    on confident predictions and erases the membership signal (docs/attacks.md), so the API releases
    them at full precision in log space. An output transform (a defense) post-processes the
    probabilities before release.
    """

    def __init__(
        self,
        model: Classifier,
        device: torch.device,
        output_transform: Optional[OutputTransform] = None,
        batch_size: int = 512,
    ) -> None:
        super().__init__(model, device, batch_size)
        self.output_transform = output_transform

    def log_posteriors(self, images: torch.Tensor) -> torch.Tensor:
        """Released log-probabilities ``(N, classes)``, float64; ``-inf`` where a release says 0."""
        log_probs = F.log_softmax(self._logits(images), dim=1)
        if self.output_transform is None:
            return log_probs
        return torch.log(self.output_transform(log_probs.exp()))

    def posteriors(self, images: torch.Tensor) -> torch.Tensor:
        """Released probabilities ``(N, classes)``, float64."""
        return self.log_posteriors(images).exp()


class WhiteBoxAccess(BlackBoxAccess):
    """Full access: the model itself, its embeddings, and gradients."""

    def __init__(
        self,
        model: Classifier,
        device: torch.device,
        batch_size: int = 512,
        output_transform: Optional[OutputTransform] = None,
    ) -> None:
        # A transform only where posteriors stand in for a defended black-box API (an informed
        # attacker's own shadow model); the target under a white-box threat model gets none.
        super().__init__(model, device, output_transform, batch_size)
        self._whitebox_model = model

    @property
    def model(self) -> Classifier:  # type: ignore[override]
        return self._whitebox_model


def access_for(
    tm: ThreatModel, model: Classifier, device: torch.device, output_transform: Optional[OutputTransform] = None
) -> LabelOnlyAccess:
    """The access object a threat model grants to ``model``."""
    if tm.access == WHITEBOX:
        return WhiteBoxAccess(model, device)
    if tm.access == LABEL_ONLY:
        return LabelOnlyAccess(model, device)
    return BlackBoxAccess(model, device, output_transform)
