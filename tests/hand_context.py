"""Attack contexts built by hand around a tiny model and synthetic data, for fast attack tests.

The knowledge and evaluation sets come from the real ``four_quarters`` and ``attacker_knowledge``,
and the access object from ``access_for``, so an attack sees what a cell would give it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf

from mldoctor_bench.attacks.base import AttackContext, ModelService
from mldoctor_bench.data.base import ImageData
from mldoctor_bench.data.splits import four_quarters
from mldoctor_bench.knowledge import attacker_knowledge
from mldoctor_bench.models import Classifier
from mldoctor_bench.threat_models import THREAT_MODELS, WhiteBoxAccess, access_for

CPU = torch.device("cpu")


def noise_data(quarter: int, size: int, classes: int, attribute: bool = False) -> ImageData:
    """``4 * quarter`` random grey ``size`` x ``size`` images with random labels (and a random
    binary attribute): data no model generalises on, so whatever it learns is memorised."""
    g = torch.Generator().manual_seed(0)
    n = 4 * quarter
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    if not attribute:
        return ImageData("tiny", images, labels, classes)
    return ImageData(
        "tiny",
        images,
        labels,
        classes,
        attribute=torch.randint(0, 2, (n,), generator=g),
        num_attribute_classes=2,
        attribute_name="noise",
    )


class OneModel(ModelService):
    """A model service that answers every classifier request with one given model (and records the
    requests): for attacks that ask for a model of their own."""

    def __init__(self, model: Classifier) -> None:
        self.model, self.requests = model, []

    def classifier(self, role, images, targets, epochs=None, arch=None):
        self.requests.append((role, images, targets))
        return self.model


def hand_context(
    tm_name: str,
    data: ImageData,
    model: Classifier,
    settings: dict,
    out_dir: Path,
    models: Optional[ModelService] = None,
    seed: int = 0,
    target_arch: str = "simple_cnn",
) -> AttackContext:
    """The context of ``tm_name`` on ``data`` with ``model`` (of architecture ``target_arch``) as
    target (and as the shadow model, and the control of the baselines that need one)."""
    tm = THREAT_MODELS.get(tm_name)
    splits = four_quarters(len(data), seed)
    knowledge, evaluation = attacker_knowledge(tm, data, splits, WhiteBoxAccess(model, CPU))
    return AttackContext(
        threat_model=tm,
        target=access_for(tm, model, CPU),
        knowledge=knowledge,
        evaluation=evaluation,
        settings=OmegaConf.create(settings),
        out_dir=out_dir,
        device=CPU,
        seed=seed,
        num_classes=data.num_classes,
        num_attribute_classes=data.num_attribute_classes,
        models=models,
        target_arch=target_arch,
        control=WhiteBoxAccess(model, CPU),
    )
