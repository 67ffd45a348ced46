"""What every defense provides, and the defense registry.

A defense acts at training time (it trains the released model differently: :meth:`Defense.fit`,
with :meth:`Defense.cache_payload` keying the stored model by its settings), at output time (it
post-processes the posteriors the black-box API releases: :meth:`Defense.output_transform`), or
both. White-box access bypasses output-time defenses: the attacker holds the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import torch
from omegaconf import OmegaConf
from torch import nn

from mldoctor_bench.defense_catalog import NONE, TRAINING, check_entry
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.provenance import source_hash
from mldoctor_bench.registry import Registry
from mldoctor_bench.settings import NoSettings, as_dict, parse
from mldoctor_bench.threat_models import OutputTransform
from mldoctor_bench.training import ProgressHook, Recipe, train_classifier


@dataclass
class TrainingSet:
    """What a training-time defense trains on: the model's own data (on the training device) and
    the means to build more models (a teacher) and to use data outside the four quarters."""

    images: torch.Tensor
    labels: torch.Tensor
    recipe: Recipe
    seed: int
    build: Callable[[], nn.Module]
    transfer: Optional[Labeled] = None  # rows in no quarter, reserved for the defense
    on_epoch: Optional[ProgressHook] = None


class Defense:
    """Base class, and the ``none`` defense: ordinary training, posteriors released as they are."""

    name: ClassVar[str]
    kind: ClassVar[str] = NONE
    uses_transfer_data: ClassVar[bool] = False
    Settings: ClassVar[type] = NoSettings

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings if isinstance(settings, self.Settings) else parse(self.Settings, settings, "defense")

    def cache_payload(self) -> dict:
        """What enters the stored model's key: the settings of a training-time defense, else nothing
        (an output-time defense releases the same model as ``none``)."""
        if self.kind != TRAINING:
            return {}
        return {"defense": self.name, "settings": as_dict(self.settings), "code": source_hash(("defenses",))}

    def transfer_size(self) -> Optional[int]:
        """Rows the partition's ``transfer`` pool must hold when :attr:`uses_transfer_data` (``None``:
        as many as a quarter)."""
        return None

    def training_recipe(self, recipe: Recipe) -> Recipe:
        """The recipe a model of ``recipe`` actually trains by under this defense (DP-SGD has its own
        batch size, learning rate and epochs); the same by default."""
        return recipe

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The module to train (a defense may need to change the architecture); same by default."""
        return model

    def fit(self, model: nn.Module, data: TrainingSet) -> dict:
        """Train ``model`` in place; return metrics about the training to keep with the model."""
        train_classifier(model, data.images, data.labels, data.recipe, data.seed, on_epoch=data.on_epoch)
        return {}

    @property
    def plain_training(self) -> bool:
        """Whether training is the plain recipe (no training-time change): such models of one
        recipe can be trained together (:mod:`mldoctor_bench.many_models`)."""
        return type(self).fit is Defense.fit

    def output_transform(self) -> Optional[OutputTransform]:
        """The post-processing applied to released probabilities, if any."""
        return None


DEFENSES: Registry[type[Defense]] = Registry("defense", check=check_entry)
DEFENSES.register("none")(type("NoDefense", (Defense,), {"__doc__": Defense.__doc__}))


def build_defense(cfg: Any) -> Defense:
    """The defense named by ``cfg.name``, with the rest of ``cfg`` as its typed settings (a bad value
    raises :class:`~mldoctor_bench.settings.SettingsError`)."""
    settings = dict(OmegaConf.to_container(cfg, resolve=True)) if OmegaConf.is_config(cfg) else dict(cfg)
    name = settings.pop("name")
    return DEFENSES.get(name)(settings)
