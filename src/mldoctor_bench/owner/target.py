"""An owner's trained model as the cell's target (:class:`mldoctor_bench.cell.Target`): it is never
retrained; the data is fitted to it (its channels), the partition is cut around its training
examples (:func:`~mldoctor_bench.data.splits.owner_partition`), and the attacks that need what the
owner did not give (a members file) are recorded as skipped, with the reason.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf

from mldoctor_bench import ui
from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.blind_check import blind_check
from mldoctor_bench.cell.models import ModelProvider
from mldoctor_bench.cell.plan import ConfigError, Plan
from mldoctor_bench.cell.targets import Obtained, Selection, needs_shadow
from mldoctor_bench.data import ImageData, Splits
from mldoctor_bench.data.splits import OWNER_HELDOUT_PER_CLASS, PartitionError, owner_partition, partition
from mldoctor_bench.files import atomic_write_text
from mldoctor_bench.inference import accuracy, predict_logits
from mldoctor_bench.members import MembersError, read_members
from mldoctor_bench.owner.budget import over_budget
from mldoctor_bench.owner.model import OwnerClassifier
from mldoctor_bench.owner.preprocessing import preprocessing_warning
from mldoctor_bench.owner.settings import AssessSection, Owner
from mldoctor_bench.report.significance import ALPHA
from mldoctor_bench.store import StoredModel
from mldoctor_bench.threat_catalog import PARTIAL, THREAT_MODELS

GREY = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601 luma, as Pillow's convert("L")


def with_channels(data: ImageData, channels: int) -> ImageData:
    """``data`` with ``channels`` channels: colour to grey by luma, grey repeated to colour."""
    if data.channels == channels:
        return data
    if channels == 1:
        grey = (data.images.float() * GREY.view(1, 3, 1, 1)).sum(1, keepdim=True).round().clamp(0, 255)
        images = grey.to(torch.uint8)
    else:
        images = data.images.repeat(1, channels, 1, 1)
    return replace(data, images=images)


def check_classes(model: OwnerClassifier, data: ImageData, expected: Optional[int]) -> None:
    """Refuse a model whose outputs are not one per class of ``data`` (or of ``model.num_classes``)."""
    if expected is not None and expected != data.num_classes:
        raise ConfigError(
            f"model.num_classes={expected} but dataset {data.name} has {data.num_classes} classes; "
            "assess the model on data with its classes"
        )
    try:
        logits = predict_logits(model, data.images[:2])
    except Exception as exc:  # the owner's forward pass: any error is the owner's to fix
        raise ConfigError(
            f"the model fails on a batch of images of shape {tuple(data.images[:2].shape)} "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); set model.image_size and "
            "model.in_channels to what it takes"
        ) from None
    if logits.dim() != 2 or logits.shape[1] != data.num_classes:
        raise ConfigError(
            f"the model gives outputs of shape {tuple(logits.shape[1:])} per image but dataset {data.name} "
            f"has {data.num_classes} classes; assess it on data with one class per output "
            "(for dataset=folder, one subfolder per class)"
        )


class OwnerTarget:
    """The owner's model (see the module docstring); ``cfg`` is the cell's config (:func:`owner_config`),
    ``assess`` what the command was asked to do (its budget selects the membership attacks)."""

    def __init__(self, owner: Owner, cfg: DictConfig, assess: AssessSection) -> None:
        self.owner, self.assess = owner, assess
        self.members_listed = owner.members_listed
        self.manifest = {
            "dataset": str(cfg.dataset.name),
            "folder": str(cfg.dataset.get("folder")) if cfg.dataset.get("folder") else None,
            "arch": owner.arch_name,
            "weights": str(owner.weights),
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "members": str(owner.members) if owner.members else None,
            "members_listed": self.members_listed,
            "trained_on": "elsewhere (the owner's model)",
        }

    def architectures(self) -> dict:
        return {self.owner.arch_name: self.owner.build}

    def model(self, data: ImageData) -> OwnerClassifier:
        """The owner's trained model for ``data`` (its weights checked tensor by tensor)."""
        m = self.owner.model
        return self.owner.trained(data.channels, m.num_classes or data.num_classes, data.image_size)

    def adapt(self, data: ImageData) -> ImageData:
        channels = self.owner.model.in_channels
        data = with_channels(data, channels) if channels else data
        check_classes(self.model(data), data, self.owner.model.num_classes)  # refused here, before any training
        return data

    def partition(self, plan: Plan, data: ImageData) -> Splits:
        needs_heldout = plan.needs_heldout
        sizes = {"heldout_size": plan.data.heldout_size, "dataset": data.name}
        seed, quarter = plan.seed, plan.data.quarter_size
        try:
            if self.owner.members is None:
                return self.unlisted_partition(plan, data, needs_heldout)
            members = read_members(self.owner.members, data)
            return owner_partition(
                len(data),
                members,
                seed,
                quarter,
                **sizes,
                min_heldout=OWNER_HELDOUT_PER_CLASS * data.num_classes if needs_heldout else 0,
            )
        except (MembersError, PartitionError) as exc:
            raise ConfigError(str(exc)) from None

    @staticmethod
    def unlisted_partition(plan: Plan, data: ImageData, needs_heldout: bool) -> Splits:
        """Without a members file no pool is known to be training data, so the quarters need not
        match a training set: where the profile's ``data.quarter_size`` does not fit the data, they
        are sized from the data instead."""
        args = dict(
            reserve=plan.data.reserve,
            min_heldout=data.num_classes if needs_heldout else 0,
            heldout_size=plan.data.heldout_size,
            dataset=data.name,
        )
        sized = [plan.data.quarter_size, None] if plan.data.quarter_size is not None else [None]
        for quarter in sized:
            try:
                return partition(len(data), plan.seed, quarter, **args)
            except PartitionError as exc:
                error = exc
        raise PartitionError(
            f"{error}; without a members file the {len(data)} images are cut into random parts for the "
            "attacker and the evaluators, and these are too few: give more images, or members=FILE (the "
            "model's training examples, one a line) to assess membership too"
        )

    def training_size(self, splits: Splits) -> int:
        return self.members_listed or len(splits.target_train)

    def leave_out(self, selection: Selection) -> dict[tuple[str, str], str]:
        """The membership attacks over the owner's budget (:mod:`.budget`)."""
        return over_budget(selection, self.assess.budget_models)

    def unavailable(self, attack: str, threat_model: str) -> Optional[str]:
        if self.owner.members is not None:
            return None
        if ATTACKS.get(attack).family == "membership":
            return (
                "no members file: membership inference needs the model's training examples; pass "
                "members=FILE (one a line: paths relative to data.root, or row indices)"
            )
        if THREAT_MODELS.get(threat_model).knowledge == PARTIAL:
            return "no members file: the partial threat model's attacker holds known training examples (members=FILE)"
        return None

    @staticmethod
    def blind(data: ImageData, splits: Splits, seed: int) -> dict[str, float]:
        """The blind check of the owner's split (:mod:`mldoctor_bench.blind_check`): the evaluation
        members against as many non-members, told apart from the images alone; one line where they can be."""
        n = min(len(splits.target_train), len(splits.target_test))
        members, nonmembers = splits.target_train[:n], splits.target_test[:n]
        found = blind_check(
            data.images[members],
            data.labels[members],
            data.images[nonmembers],
            data.labels[nonmembers],
            data.num_classes,
            seed,
        )
        if found["blind_p_value"] <= ALPHA:
            ui.console.print(
                "[yellow]warning: the listed members and the other images differ without the model (a classifier "
                f"of the images alone tells them apart, AUC {found['blind_auc']:.3f}, "
                f"p = {found['blind_p_value']:.3f}): membership will not be judged; offer non-members from the "
                "same collection as the members[/]",
                soft_wrap=True,
            )
        return found

    def obtain(self, plan: Plan, data: ImageData, splits: Splits, provider: ModelProvider) -> Obtained:
        """Only the attacker's shadow model is trained; the owner's model is measured as it is, first,
        and checked for inputs prepared otherwise than in its training (:mod:`.preprocessing`)."""
        model, device = self.model(data).to(plan.device).eval(), plan.device
        test = splits.target_test
        utility = {
            "test_accuracy": accuracy(model, data.images[test].to(device), data.labels[test]),
            "n_test": float(len(test)),
        }
        warning = None
        if self.owner.members is not None:
            idx = splits.target_train
            utility["train_accuracy"] = accuracy(model, data.images[idx].to(device), data.labels[idx])
            utility["n_train"] = float(len(idx))
            warning = preprocessing_warning(
                self.owner, data, idx, utility["train_accuracy"], utility["test_accuracy"], device
            )
            if warning:
                ui.console.print(f"[yellow]warning: {warning}[/]", soft_wrap=True)
            utility.update(self.blind(data, splits, plan.seed))
        shadow_model = provider.obtain([provider.shadow_spec()])[0] if needs_shadow(plan) else None
        manifest = {
            **self.manifest,
            "accuracy": {"members": utility.get("train_accuracy"), "nonmembers": utility["test_accuracy"]},
            "preprocessing_warning": warning,
            "splits": plan.files.splits.name,
            "sizes": splits.sizes(),
            "examples": len(data),
            "num_classes": data.num_classes,
            "in_channels": data.channels,
            "image_size": data.image_size,
        }
        if data.files is not None:  # a folder's classes are its subfolders, in sorted order
            manifest["class_names"] = sorted({f.split("/")[0] for f in data.files})
        if data.files is not None and self.owner.members is not None:  # so that a report can name exposed files
            manifest["evaluation_member_files"] = {str(i): data.files[i] for i in splits.target_train.tolist()}
        atomic_write_text(plan.files.target_manifest, json.dumps(manifest, indent=2))
        return Obtained(StoredModel(model, {"metrics": utility}, None, False), shadow_model, utility)
