"""What a cell attacks. A :class:`Target` knows how to fit the data to its model, how to cut the
cell's partition around its training data, which attack x threat-model pairs it cannot support and
which it leaves out (an owner's budget), and how to obtain the model (with the attacker's shadow
model) and its utility. The benchmark's target is :class:`TrainedTarget`; an owner's trained model is
:class:`mldoctor_bench.owner.OwnerTarget`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from typing import Optional, Protocol

from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.attacks.base import CachedRequest, ModelRequest
from mldoctor_bench.cell.models import ModelProvider
from mldoctor_bench.cell.plan import Plan, cell_partition
from mldoctor_bench.data import ImageData, Splits
from mldoctor_bench.defense_catalog import OUTPUT
from mldoctor_bench.files import atomic_write_text, save_weights
from mldoctor_bench.inference import accuracy, layout_of
from mldoctor_bench.settings import as_dict
from mldoctor_bench.store import StoredModel
from mldoctor_bench.threat_models import THREAT_MODELS


@dataclass(frozen=True)
class Obtained:
    """A cell's target model and its attacker's shadow model (``None`` when no threat model needs
    one), and the target's utility metrics."""

    target: StoredModel
    shadow: Optional[StoredModel]
    utility: dict[str, float]


@dataclass(frozen=True)
class Selection:
    """What a target decides which attacks to leave out by: the models each runnable (attack, threat
    model) pair declared it will need (:meth:`Attack.models_wanted`), the cell's model provider and the
    attacker's shadow model (``None``: the cell has none)."""

    wanted: dict[tuple[str, str], list[ModelRequest | CachedRequest]]
    models: ModelProvider
    shadow: Optional[StoredModel]


class Target(Protocol):
    """The model a cell attacks (see the module docstring)."""

    def adapt(self, data: ImageData) -> ImageData:
        """The data as the model takes it; raise ``ConfigError`` for data it cannot take."""

    def partition(self, plan: Plan, data: ImageData) -> Splits:
        """The cell's pools; raise ``ConfigError`` when the data cannot hold them."""

    def training_size(self, splits: Splits) -> int:
        """How many examples the model trained on."""

    def architectures(self) -> dict:
        """Builders of architecture names outside the registry that this target's cell uses."""

    def unavailable(self, attack: str, threat_model: str) -> Optional[str]:
        """Why this pair cannot run on this target (``None``: it can)."""

    def leave_out(self, selection: Selection) -> dict[tuple[str, str], str]:
        """The pairs this target leaves out, with the reason (the benchmark's: none)."""

    def obtain(self, plan: Plan, data: ImageData, splits: Splits, provider: ModelProvider) -> Obtained:
        """The model, the attacker's shadow model and the model's utility; the target's manifest
        (``target.json``) written into the cell."""


def needs_shadow(plan: Plan) -> bool:
    """The attacker's shadow model serves the shadow threat models, and as the control (a model that
    never saw the training data) the attacks whose baselines need one."""
    return any(THREAT_MODELS.get(t).knowledge == "shadow" for t in plan.threat_models) or any(
        ATTACKS.get(a).uses_control for a in plan.attacks
    )


class TrainedTarget:
    """The benchmark's target: the cell's architecture trained by its recipe and training-time
    defense on the ``target_train`` pool, beside the attacker's shadow on ``shadow_train``."""

    def adapt(self, data: ImageData) -> ImageData:
        return data

    def partition(self, plan: Plan, data: ImageData) -> Splits:
        return cell_partition(plan, len(data), data.num_classes)

    def training_size(self, splits: Splits) -> int:
        return len(splits.target_train)

    def architectures(self) -> dict:
        return {}

    def unavailable(self, attack: str, threat_model: str) -> Optional[str]:
        return None

    def leave_out(self, selection: Selection) -> dict[tuple[str, str], str]:
        return {}

    def obtain(self, plan: Plan, data: ImageData, splits: Splits, provider: ModelProvider) -> Obtained:
        defense, knows = plan.defense, plan.attacker.knows_defense
        target = provider.pool_spec("target", "target_train", defended=True)
        shadow = provider.shadow_spec() if needs_shadow(plan) else None
        if shadow is not None and (knows or defense.plain_training):  # one recipe: together
            trained, shadow_model = provider.obtain([target, shadow])
        else:
            [trained] = provider.obtain([target])
            shadow_model = provider.obtain([shadow])[0] if shadow is not None else None
        test = splits.target_test
        utility = {
            **trained.manifest["metrics"],
            "test_accuracy": accuracy(trained.model, data.images[test].to(plan.device), data.labels[test]),
            "n_train": float(len(splits.target_train)),
            "n_test": float(len(test)),  # for intervals
        }
        if defense.kind == OUTPUT:
            utility["output_defense_applies_to_whitebox"] = 0.0
        if defense.uses_transfer_data:
            transfer = set(splits.pool("transfer").tolist())
            utility["transfer_size"] = float(len(transfer))
            # measured on the saved indices, not assumed: no row of the student's data is a member
            utility["student_data_disjoint"] = float(
                bool(transfer) and transfer.isdisjoint(splits.target_train.tolist())
            )
        self.save(plan, trained, data)
        return Obtained(trained, shadow_model, utility)

    @staticmethod
    def save(plan: Plan, target: StoredModel, data: ImageData) -> None:
        """Copy the target's weights and a manifest into the cell, to reload model and data."""
        weights = plan.files.target_weights
        if target.path is not None:
            shutil.copyfile(target.path, weights)
        else:
            save_weights(target.model, weights)
        manifest = {
            "dataset": data.name,
            "arch": plan.arch,
            "in_channels": data.channels,
            "num_classes": data.num_classes,
            "image_size": data.image_size,
            "weights": weights.name,
            "splits": plan.files.splits.name,
            "trained_on": "target_train",
            "seed": plan.seed,
            "recipe": asdict(plan.recipe),
            "store_key": target.manifest.get("key"),
            "layout": layout_of(target.model),
            "defense": {"name": plan.defense.name, **as_dict(plan.defense.settings)},
        }
        atomic_write_text(plan.files.target_manifest, json.dumps(manifest, indent=2))
