"""One assessment cell: load data, split, train (or reuse) target and shadow, run attacks, write rows.

A cell is one (dataset, arch, defense, seed) with its selected attacks and threat models. Its
directory under ``results_dir/cells/`` is named by the hash of its configuration; ``done.json`` is
written last, so a rerun skips a finished cell and redoes an interrupted one from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from mldoctor_bench.attacks import ATTACKS, AttackContext, AttackSkipped
from mldoctor_bench.attacks.base import CachedRequest, ModelRequest, ModelService, ReleasedModel
from mldoctor_bench.cellfiles import LOCATION_DATA_KEYS, LOCATION_KEYS, CellFiles
from mldoctor_bench.data import DATASETS, ImageData, Splits, load_dataset
from mldoctor_bench.data.base import Feedback
from mldoctor_bench.data.splits import DEFAULT_RESERVE, PartitionError, partition
from mldoctor_bench.defenses import DEFENSES, Defense, TrainingSet, build_defense
from mldoctor_bench.defenses.base import OUTPUT
from mldoctor_bench.knowledge import Labeled, attacker_knowledge
from mldoctor_bench.models import ARCHS, build_model
from mldoctor_bench.provenance import code_version, source_hash, stable_hash
from mldoctor_bench.report.cell_verdicts import VERDICTS, write_cell_verdicts
from mldoctor_bench.settings import SettingsError, parse, setting
from mldoctor_bench.results import FAILED, SKIPPED, Cell, Provenance, metric_rows, to_frame, write_table
from mldoctor_bench.files import atomic_write_text, save_weights
from mldoctor_bench.store import ModelStore, StoredModel
from mldoctor_bench.threat_catalog import short_name
from mldoctor_bench.threat_models import BLACKBOX, THREAT_MODELS, WHITEBOX, BlackBoxAccess, WhiteBoxAccess, access_for
from mldoctor_bench.inference import accuracy, predict_logits
from mldoctor_bench.many_models import (STACKED, SEQUENTIAL, THREADS, TrainingRows, choose_mode, device_rule,
                                        train_in_threads, train_many)
from mldoctor_bench.timings import ATTACK, DATA, MODEL, Timings
from mldoctor_bench.training import Recipe, TrainJob, configure_backends, resolve_device, seeded_model
from mldoctor_bench import ui

# Keys that say where things go, not what is computed: they do not enter the cell's hash.
MIN_IMAGE_SIZE = 8  # the smallest side every architecture accepts


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the problem and the fix."""


@dataclass
class Plan:
    """A validated configuration, ready to run."""

    cfg: DictConfig
    attacks: list[str]
    threat_models: list[str]
    settings: dict  # attack name -> its typed settings
    defense: Defense
    data: DataSection
    device: torch.device
    config_hash: str
    files: CellFiles
    store: ModelStore

    @property
    def cell_dir(self) -> Path:
        """The cell's folder (see :class:`CellFiles` for what it holds)."""
        return self.files.dir


def selected(cfg: DictConfig, group: str) -> list[str]:
    """Names chosen in a multi-select group (``attack``, ``threat_model``): the node's keys."""
    node = cfg.get(group)
    return list(node.keys()) if node else []


def semantic_config(cfg: DictConfig) -> dict:
    """The resolved config without location keys: what the cell's results depend on."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in LOCATION_KEYS:
        plain.pop(key, None)
    for key in LOCATION_DATA_KEYS:
        plain.get("data", {}).pop(key, None)
    return plain


@dataclass(frozen=True, kw_only=True)
class DataSection:
    """The whole ``data`` section's types and ranges, checked at planning: how much of the data a
    cell uses (the loaders read their part, where and at what size, as
    :class:`mldoctor_bench.data.sources.DataSettings`)."""

    root: str = setting("data")
    quarter_size: Optional[int] = setting(None, min=1, example=500)
    reserve: float = setting(DEFAULT_RESERVE, min=0, max=0.9, example=0.2)
    heldout_size: Optional[int] = setting(None, min=1, example=1000)
    image_size: Optional[int] = setting(None, min=MIN_IMAGE_SIZE, example=64)
    download: bool = setting(False)
    cache_dir: Optional[str] = setting(None, example="~/.cache/mldoctor-bench/data")
    # only dataset=folder has these two (its yaml adds them); see mldoctor_bench.data.folder
    in_channels: Optional[int] = setting(None, choices=(1, 3), example=1)
    attributes: Optional[str] = setting(None, example="attributes.csv")


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Top-level plain keys."""

    seed: int = setting(0, min=0, example=1)


def check_plain_keys(cfg: DictConfig) -> DataSection:
    """Types and ranges of ``seed``, ``train.*`` and ``data.*`` (returned typed); raise :class:`ConfigError`."""
    try:
        parse(RunSettings, {"seed": cfg.seed}, "")
        Recipe.from_config(cfg.train)
        return parse(DataSection, cfg.data, "data")
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None


def writable_folder(value: str, key: str) -> Path:
    """``value`` as an absolute folder this process can write into (or create); raise
    :class:`ConfigError` for a file, or a folder that cannot be written or made."""
    path = Path(value).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={value} is a file, not a folder; give a folder, e.g. {key}={path.parent / 'results'}")
    existing = next(p for p in (path, *path.parents) if p.exists())
    problem = f"{existing} is a file" if not existing.is_dir() else None
    if problem is None:
        try:  # what mkdir would meet: permissions, a read-only file system, a pseudo file system
            os.rmdir(tempfile.mkdtemp(prefix=".mldoctor-probe-", dir=existing))
        except OSError as exc:
            problem = f"{existing} is not writable ({exc.strerror})"
    if problem:
        what = "cannot be written" if existing == path else "cannot be created"
        raise ConfigError(f"{key}={value} {what}: {problem}; give a folder you can write to, e.g. {key}=/tmp/results")
    return path


def plan(cfg: DictConfig) -> Plan:
    """Validate everything that can be checked before long work; raise :class:`ConfigError`."""
    data = check_plain_keys(cfg)
    for group, name, registry in [("dataset", cfg.dataset.name, DATASETS), ("arch", cfg.arch.name, ARCHS)]:
        if name not in registry:
            raise ConfigError(f"unknown {group} {name!r}; choose one of: {', '.join(registry.names())}")
    if cfg.defense.name not in DEFENSES:
        raise ConfigError(f"unknown defense {cfg.defense.name!r}; choose one of: {', '.join(DEFENSES.names())}")
    attacks, tms = selected(cfg, "attack"), selected(cfg, "threat_model")
    if not attacks or not tms:
        raise ConfigError("select at least one attack and one threat model, e.g. attack=membership threat_model=blackbox_shadow")
    settings = {}
    for name in attacks:
        if name not in ATTACKS:
            raise ConfigError(f"unknown attack {name!r}; choose from: {', '.join(ATTACKS.names())}")
        attack = ATTACKS.get(name)()
        try:
            settings[name] = parse(attack.Settings, cfg.attack[name], f"attack.{name}")
        except SettingsError as exc:
            raise ConfigError(str(exc)) from None
        try:
            attack.check_settings(settings[name])
        except ValueError as exc:
            raise ConfigError(f"attack.{name}: {exc}") from None
    try:
        defense = build_defense(cfg.defense)
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    for name in tms:
        if name not in THREAT_MODELS:
            raise ConfigError(f"unknown threat model {name!r}; choose from: {', '.join(THREAT_MODELS.names())}")
    supported = {a: ATTACKS.get(a).threat_models for a in attacks}
    if not any(t in supported[a] for a in attacks for t in tms):
        options = "; ".join(f"{a} supports {', '.join(supported[a])}" for a in attacks)
        example = f"attack={attacks[0]} threat_model={supported[attacks[0]][0]}"
        raise ConfigError(f"no selected attack supports a selected threat model ({', '.join(tms)}), so nothing would "
                          f"run: {options}; e.g. {example}")
    try:
        device = resolve_device(str(cfg.device))
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    config_hash = stable_hash(semantic_config(cfg))
    results_dir = writable_folder(str(cfg.results_dir), "results_dir")
    files = CellFiles.under(results_dir, cfg.dataset.name, cfg.arch.name, cfg.defense.name, cfg.seed, config_hash)
    store_dir = Path(str(cfg.cache.dir)).expanduser().resolve() if cfg.cache.enabled else None
    return Plan(cfg, attacks, tms, settings, defense, data, device, config_hash, files, ModelStore(store_dir))


@dataclass
class GivenTarget:
    """A target trained elsewhere (an owner's model), assessed in place of one the runner trains.

    ``adapt_data`` turns the loaded dataset into what the model takes (its channels); ``partition``
    cuts the cell's pools around the model's training rows, raising :class:`ConfigError` (both run
    before any training); ``unavailable(attack, threat_model)`` is the reason a pair cannot run with
    what the owner gave, else ``None``; ``members_known``: whether ``target_train`` holds the model's
    training examples (the members file), so that a training accuracy means something; ``manifest``
    describes the model in the cell's ``target.json``."""

    model: torch.nn.Module
    adapt_data: Callable[[ImageData], ImageData]
    partition: Callable[[Plan, ImageData], Splits]
    unavailable: Callable[[str, str], Optional[str]]
    members_known: bool
    manifest: dict


def cell_partition(p: Plan, n: int, num_classes: int) -> Splits:
    """The cell's partition of ``n`` rows: the quarters, a transfer pool if the defense trains a
    student, a canary pool if an audit adds canaries, and the heldout pool (at least one row per
    class where an attack's evaluator needs it)."""
    needs_heldout = any(ATTACKS.get(a).uses_heldout for a in p.attacks)
    canaries = max([ATTACKS.get(a)().pool_sizes(p.settings[a]).get("canary", 0) for a in p.attacks], default=0)
    try:
        return partition(
            n, int(p.cfg.seed), p.data.quarter_size, reserve=p.data.reserve,
            transfer_size=p.defense.transfer_size() if p.defense.uses_transfer_data else 0, canary_size=canaries,
            heldout_size=p.data.heldout_size, min_heldout=num_classes if needs_heldout else 0,
            dataset=str(p.cfg.dataset.name),
        )
    except PartitionError as exc:
        raise ConfigError(str(exc)) from None


def group_name(roles: list[str], shown: int = 4) -> str:
    """The roles of models trained together, joined by ``+``; beyond ``shown``, the first and last
    with the count (a sweep of reference models names dozens)."""
    if len(roles) <= shown:
        return "+".join(roles)
    return f"{roles[0]}+...+{roles[-1]} ({len(roles)} models)"


def derive_seed(seed: int, role: str) -> int:
    """A per-role seed, so target and shadow start from different weights for the same run seed."""
    return int(stable_hash([seed, role], length=8), 16) % (2**31)


@dataclass
class Training:
    """One model to obtain from the store: loaded if stored, else built and trained by ``fit``
    (which trains in place and returns the metrics its manifest keeps)."""

    role: str
    payload: dict
    build: Callable[[], torch.nn.Module]
    fit: Callable[[torch.nn.Module], dict]
    images_seen: Optional[int] = None  # images x epochs, for images per second
    # Trains by the plain recipe on these rows (no defense): may be stacked with models of the same
    # (recipe, arch, size); ``measure`` gives its metrics after such training.
    plain: Optional[tuple[TrainingRows, Recipe, str]] = None
    measure: Optional[Callable[[torch.nn.Module], dict]] = None
    thread_safe: bool = False  # draws nothing from the global random generator while training

    def stack_signature(self) -> Optional[tuple]:
        return None if self.plain is None else (self.plain[1], self.plain[2], len(self.plain[0].images))


class CellModels(ModelService):
    """The runner's :class:`ModelService`: attacker-side models cached per cell identity."""

    def __init__(self, assessment: "Assessment", splits: Splits) -> None:
        self.a = assessment
        self.identity = {"dataset": assessment.data.fingerprint(), "splits": splits.digest(),
                         "seed": int(assessment.cfg.seed)}

    def job(self, role: str, images: torch.Tensor, targets: torch.Tensor, recipe: Recipe,
            arch: Optional[str] = None) -> TrainJob:
        """The training job of an attacker-side model: keyed by its role and the exact data it sees."""
        digest = hashlib.sha256(images.cpu().numpy().tobytes() + targets.cpu().numpy().tobytes()).hexdigest()[:16]
        return TrainJob(role, arch or self.a.cfg.arch.name, recipe, derive_seed(int(self.a.cfg.seed), role),
                        self.identity["dataset"], digest)

    def training(self, request: ModelRequest | CachedRequest) -> Training:
        if isinstance(request, CachedRequest):
            key = {"role": request.role, "cell": self.identity, "payload": request.payload,
                   "code": source_hash(("attacks",))}
            return Training(request.role, key, request.build, request.train, request.images_seen,
                            thread_safe=request.thread_safe)
        recipe = replace(self.a.recipe, epochs=int(request.epochs)) if request.epochs else self.a.recipe
        job = self.job(request.role, request.images, request.targets, recipe, request.arch)
        defense = self.a.defense if request.defended and self.a.knows_defense else None
        return self.a.classifier_training(job, request.images, request.targets, defense)

    def prepare(self, requests):
        return [s.model for s in self.a.obtain_all([self.training(r) for r in requests])]

    def classifier(self, role, images, targets, epochs=None, arch=None):
        return self.prepare([ModelRequest(role, images, targets, epochs, arch)])[0]

    def defended_classifier(self, role, images, labels):
        job = self.job(role, images, labels, self.a.recipe)
        [stored] = self.a.obtain([self.a.classifier_training(job, images, labels, self.a.defense)])
        # released to its owner as the target is to everyone: black-box, through the output-time defense
        access = access_for(THREAT_MODELS.get("auditor"), stored.model, self.a.p.device, self.a.defense.output_transform())
        return ReleasedModel(access, dict(stored.manifest["metrics"]))

    def cached(self, role, payload, build, train):
        return self.a.obtain([self.training(CachedRequest(role, payload, build, train))])[0]

    def released(self, model):
        return BlackBoxAccess(model, self.a.p.device, self.a.defense.output_transform() if self.a.knows_defense else None)


class Assessment:
    """Runs one planned cell and writes its results."""

    def __init__(self, p: Plan, data: ImageData, splits: Splits, bars: ui.Bars,
                 timings: Optional[Timings] = None, given: Optional[GivenTarget] = None) -> None:
        self.p, self.cfg, self.data, self.splits, self.bars = p, p.cfg, data, splits, bars
        self.given = given
        self.timings = timings or Timings()
        self.recipe = Recipe.from_config(self.cfg.train).resolved(p.device)
        configure_backends(self.recipe, p.device)
        self.defense = p.defense
        self.knows_defense = bool(OmegaConf.select(self.cfg, "attacker.knows_defense", default=True))

    @cached_property
    def transfer(self) -> Optional[Labeled]:
        """The partition's transfer pool, for a defense that trains a student on it."""
        idx = self.splits.pool("transfer")
        return Labeled.take(self.data, idx) if len(idx) else None

    @cached_property
    def heldout_data(self) -> Optional[Labeled]:
        """The partition's heldout pool, for evaluators (rows no other model sees)."""
        idx = self.splits.pool("heldout")
        return Labeled.take(self.data, idx) if len(idx) else None

    def classifier_training(self, job: TrainJob, images: torch.Tensor, targets: torch.Tensor,
                            defense: Optional[Defense] = None) -> Training:
        """The :class:`Training` of ``job`` on ``images`` and ``targets`` with the training-time part
        of ``defense`` (plain training when ``None``)."""
        defense = defense or DEFENSES.get("none")()
        job = replace(job, extra={**job.extra, **defense.cache_payload()})
        images = images.to(self.p.device, non_blocking=True)
        targets = targets.to(self.p.device, non_blocking=True)

        def build() -> torch.nn.Module:
            return defense.prepare_model(seeded_model(job, self.data))

        epochs = defense.training_recipe(job.recipe).epochs

        def measure(model: torch.nn.Module) -> dict:
            hard = targets if targets.dim() == 1 else targets.argmax(1)
            return {"train_accuracy": accuracy(model, images, hard)}

        def fit(model: torch.nn.Module) -> dict:
            advance = self.bars(f"train {job.role} ({job.arch})", epochs)
            extra = defense.fit(model, TrainingSet(images, targets, job.recipe, job.seed, build, self.transfer,
                                                   on_epoch=lambda e, n, loss: advance(1, f"loss {loss:.3f}")))
            return {**measure(model), **extra}

        plain = (TrainingRows(images, targets, job.seed), job.recipe, job.arch) if defense.plain_training else None
        return Training(job.role, job.cache_key_payload(), build, fit, len(images) * epochs,
                        plain, measure, thread_safe=plain is not None)

    def obtain_all(self, trainings: list[Training]) -> list[StoredModel]:
        """:meth:`obtain` in groups that can train together on this device: on CUDA, the models of one
        recipe, architecture and data size (stacked); on a multi-core CPU, all at once (threads)."""
        if device_rule(self.recipe.batch_models, self.p.device) != STACKED:
            return self.obtain(trainings)
        groups: dict[object, list[int]] = {}
        for i, t in enumerate(trainings):
            groups.setdefault(t.stack_signature() or ("alone", i), []).append(i)
        out: dict[int, StoredModel] = {}
        for members in groups.values():
            out.update(zip(members, self.obtain([trainings[i] for i in members])))
        return [out[i] for i in range(len(trainings))]

    def obtain(self, trainings: list[Training]) -> list[StoredModel]:
        """The models of ``trainings``: loaded where stored, the rest trained together where they
        can be (:meth:`together`), as one timed phase. A model asked for twice is trained once."""
        keys = [stable_hash(t.payload) for t in trainings]
        if len(set(keys)) < len(keys):
            unique = {k: t for k, t in zip(keys, trainings)}
            stored = dict(zip(unique, self.obtain(list(unique.values()))))
            return [stored[k] for k in keys]
        names = group_name([t.role for t in trainings])
        with self.timings.phase(f"train {names}", MODEL) as phase:

            def train(models: list[torch.nn.Module], which: list[int]) -> list[dict]:
                chosen = [trainings[i] for i in which]
                mode = phase.info["batch_models"] = self.together(chosen, models)
                if mode == STACKED:
                    _, recipe, arch = chosen[0].plain
                    advance = self.bars(f"train {names} stacked ({arch})", recipe.epochs * len(models))
                    train_many(models, [t.plain[0] for t in chosen], recipe, STACKED,
                               on_epoch=lambda e, n, loss: advance(1, f"loss {loss:.3f}"))
                    return [t.measure(m) for t, m in zip(chosen, models)]
                if mode == THREADS:
                    return train_in_threads([lambda t=t, m=m: t.fit(m) for t, m in zip(chosen, models)],
                                            sizes=[t.images_seen or 0 for t in chosen])
                return [t.fit(m) for t, m in zip(chosen, models)]

            stored = self.p.store.get_or_train_many([t.payload for t in trainings], lambda i: trainings[i].build(),
                                                    train, images_seen=[t.images_seen for t in trainings])
            if all(s.reused for s in stored):
                phase.name = f"load {names}"
            phase.info["models"] = [
                {"role": t.role, "reused": s.reused,
                 **{k: s.manifest[k] for k in ("train_seconds", "images_per_second", "trained_together") if k in s.manifest}}
                for t, s in zip(trainings, stored)]
        for t, s in zip(trainings, stored):
            s.model.to(self.p.device)
            if s.reused and s.path is not None:
                ui.console.print(f"[dim]reused cached {t.role} model {s.path.name}[/]")
        return stored

    def together(self, chosen: list[Training], models: list[torch.nn.Module]) -> str:
        """How ``chosen`` train (see :mod:`mldoctor_bench.many_models`): stacked only when all train
        by one plain recipe on one architecture and data size, threads only when none draws from
        the global random generator, else one after another."""
        signatures = {t.stack_signature() for t in chosen}
        mode = choose_mode(self.recipe.batch_models, self.p.device, models,
                           same_size=None not in signatures and len(signatures) == 1)
        if mode == THREADS and not all(t.thread_safe for t in chosen):
            return SEQUENTIAL
        return mode

    def train(self, quarters: dict[str, str], defended: bool = True) -> list[StoredModel]:
        """Train (or load) one model per ``role: quarter`` of ``quarters`` with the cell's recipe
        and, if ``defended``, the cell's training-time defense (together where they can be)."""
        data, splits = self.data, self.splits
        trainings = []
        for role, quarter in quarters.items():
            idx = getattr(splits, quarter)
            job = TrainJob(role, self.cfg.arch.name, self.recipe, derive_seed(int(self.cfg.seed), role),
                           data.fingerprint(), splits.digest(quarter))
            trainings.append(self.classifier_training(job, data.images[idx], data.labels[idx],
                                                      self.defense if defended else None))
        return self.obtain(trainings)

    def prepare(self) -> list[dict]:
        """Split, train (or load) the target and, if a threat model needs it, the shadow model.

        Returns the target's utility rows; the models stay on ``self`` for :meth:`context`.
        """
        cfg, p, data = self.cfg, self.p, self.data
        self.cell = Cell(cfg.dataset.name, cfg.arch.name, cfg.defense.name, int(cfg.seed))
        splits = self.splits
        splits.save(p.files.splits)
        needs_shadow = any(THREAT_MODELS.get(t).knowledge == "shadow" for t in p.threat_models)
        if self.given is not None:
            return self.prepare_given(needs_shadow)
        if needs_shadow and (self.knows_defense or self.defense.plain_training):  # one recipe: together
            self.target, self.shadow = self.train({"target": "target_train", "shadow": "shadow_train"})
        else:
            [self.target] = self.train({"target": "target_train"})
            self.shadow = (self.train({"shadow": "shadow_train"}, defended=self.knows_defense)[0]
                           if needs_shadow else None)
        test_idx = splits.target_test
        utility = {
            **self.target.manifest["metrics"],
            "test_accuracy": accuracy(self.target.model, data.images[test_idx].to(p.device), data.labels[test_idx]),
            "n_train": float(len(splits.target_train)), "n_test": float(len(test_idx)),  # for intervals
        }
        if self.defense.kind == OUTPUT:
            utility["output_defense_applies_to_whitebox"] = 0.0
        if self.defense.uses_transfer_data:
            transfer = set(splits.pool("transfer").tolist())
            utility["transfer_size"] = float(len(transfer))
            # measured on the saved indices, not assumed: no row of the student's data is a member
            utility["student_data_disjoint"] = float(bool(transfer) and transfer.isdisjoint(splits.target_train.tolist()))
        self.save_target(self.target, data, splits)
        return metric_rows(self.cell, "target", "none", "", utility)

    def prepare_given(self, needs_shadow: bool) -> list[dict]:
        """:meth:`prepare` for a target trained elsewhere: only the attacker's shadow model is trained."""
        given, data, splits, device = self.given, self.data, self.splits, self.p.device
        self.shadow = (self.train({"shadow": "shadow_train"}, defended=self.knows_defense)[0] if needs_shadow else None)
        model = given.model.to(device).eval()
        test = splits.target_test
        utility = {"test_accuracy": accuracy(model, data.images[test].to(device), data.labels[test]),
                   "n_test": float(len(test))}
        if given.members_known:
            idx = splits.target_train
            utility["train_accuracy"] = accuracy(model, data.images[idx].to(device), data.labels[idx])
            utility["n_train"] = float(len(idx))
        self.target = StoredModel(model, {"metrics": utility}, None, False)
        manifest = {**given.manifest, "splits": self.p.files.splits.name, "sizes": splits.sizes(), "examples": len(data),
                    "num_classes": data.num_classes, "in_channels": data.channels, "image_size": data.image_size}
        if data.files is not None and given.members_known:  # so that a report can name the exposed files
            manifest["evaluation_member_files"] = [data.files[i] for i in splits.target_train.tolist()]
        atomic_write_text(self.p.files.target_manifest, json.dumps(manifest, indent=2))
        return metric_rows(self.cell, "target", "none", "", utility)

    def run(self, only: Optional[set[tuple[str, str]]] = None) -> list[dict]:
        """Target utility rows, then every selected attack x threat model (or the pairs in ``only``)."""
        rows = self.prepare()
        pairs = [(a, t) for a in self.p.attacks for t in self.p.threat_models if only is None or (a, t) in only]
        self.train_ahead([(a, t) for a, t in pairs if not self.unavailable(a, t)])
        for attack_name, tm_name in pairs:
            rows += self.run_attack(attack_name, tm_name)
        return rows

    def train_ahead(self, pairs: list[tuple[str, str]]) -> None:
        """Train the models the attacks say they will need (:meth:`Attack.models_wanted`), together
        where they can be; each attack then finds its own trained. An attack that cannot say, or
        whose models fail to train here, is left to train them itself and report any failure
        against its own rows when it runs."""
        requests = []
        for attack_name, tm_name in pairs:
            attack = ATTACKS.get(attack_name)()
            if tm_name not in attack.threat_models:
                continue
            try:
                requests += attack.models_wanted(self.context(attack_name, tm_name))
            except Exception:  # noqa: BLE001 - run_attack records the same error against the attack
                continue
        if len(requests) > 1:
            try:
                CellModels(self, self.splits).prepare(requests)
            except Exception as exc:  # noqa: BLE001 - one attack's model must not stop the others
                ui.console.print(f"[yellow]training the attacks' models ahead failed ({exc!r}); each attack "
                                 "trains its own when it runs[/]")

    def context(self, attack_name: str, tm_name: str) -> AttackContext:
        """What attack ``attack_name`` receives under threat model ``tm_name`` (after :meth:`prepare`)."""
        tm = THREAT_MODELS.get(tm_name)
        out_dir = self.p.files.attack_dir(attack_name, tm_name)
        out_dir.mkdir(parents=True, exist_ok=True)
        transform = self.defense.output_transform()
        # An informed attacker passes its shadow's posteriors through the same release transform.
        shadow_transform = transform if self.knows_defense and tm.access == BLACKBOX else None
        shadow_access = (WhiteBoxAccess(self.shadow.model, self.p.device, output_transform=shadow_transform)
                         if self.shadow else None)
        knowledge, evaluation = attacker_knowledge(tm, self.data, self.splits, shadow_access)
        return AttackContext(
            threat_model=tm, target=access_for(tm, self.target.model, self.p.device, transform), knowledge=knowledge,
            evaluation=evaluation, settings=self.p.settings[attack_name], out_dir=out_dir,
            device=self.p.device, seed=derive_seed(int(self.cfg.seed), f"{attack_name}/{tm_name}"),
            cell_seed=int(self.cfg.seed),
            num_classes=self.data.num_classes, num_attribute_classes=self.data.num_attribute_classes,
            target_arch=str(self.cfg.arch.name),
            heldout=self.heldout_data, models=CellModels(self, self.splits), progress=self.bars,
            training_size=self.training_size,
        )

    @property
    def training_size(self) -> int:
        """How many examples the target trained on: the owner's listed members, else target-train."""
        listed = self.given.manifest.get("members_listed") if self.given is not None else None
        return int(listed or len(self.splits.target_train))

    def run_attack(self, attack_name: str, tm_name: str) -> list[dict]:
        """Rows of one attack under one threat model: its metrics, or a skipped/failed row."""
        attack, cell = ATTACKS.get(attack_name)(), self.cell
        if tm_name not in attack.threat_models:
            reason = f"{attack_name} does not support {tm_name}; supported: {', '.join(attack.threat_models)}"
            return metric_rows(cell, attack_name, tm_name, "", {}, SKIPPED, reason)
        reason = self.unavailable(attack_name, tm_name)
        if reason:
            return metric_rows(cell, attack_name, tm_name, "", {}, SKIPPED, reason)
        ctx = self.context(attack_name, tm_name)
        advance = self.bars(f"attack {attack_name} {ctx.threat_model.short}", 1)
        try:
            with self.timings.phase(f"attack {attack_name} {ctx.threat_model.short}", ATTACK):
                results = attack.run(ctx)
        except AttackSkipped as exc:
            advance(1)
            return metric_rows(cell, attack_name, tm_name, "", {}, SKIPPED, str(exc))
        except Exception as exc:  # one broken attack must not lose the rest of the sweep
            advance(1)
            error = self.p.files.error(attack_name, tm_name)
            error.write_text(traceback.format_exc())
            ui.console.print(f"[red]{attack_name} {tm_name} failed: {exc!r} (traceback in {error})[/]")
            return metric_rows(cell, attack_name, tm_name, "", {}, FAILED, f"{type(exc).__name__}: {exc}")
        advance(1)  # not on Ctrl-C: an interrupted attack is reported as stopped early, never done
        note = ""
        if self.defense.kind == OUTPUT and ctx.threat_model.access == WHITEBOX:
            note = f"output-time defense {self.defense.name} does not apply to white-box access"
        rows = []
        for variant, metrics in results.items():
            rows += metric_rows(cell, attack_name, tm_name, variant, metrics, reason=note)
        return rows

    def unavailable(self, attack_name: str, tm_name: str) -> Optional[str]:
        """Why this pair cannot run on a given target with what its owner gave (``None``: it can)."""
        if self.given is None or tm_name not in ATTACKS.get(attack_name).threat_models:
            return None
        return self.given.unavailable(attack_name, tm_name)

    def save_target(self, target: StoredModel, data: ImageData, splits: Splits) -> None:
        """Copy the target's weights and a manifest into the cell, to reload model and data."""
        weights = self.p.files.target_weights
        if target.path is not None:
            shutil.copyfile(target.path, weights)
        else:
            save_weights(target.model, weights)
        manifest = {
            "dataset": data.name,
            "arch": self.cfg.arch.name,
            "in_channels": data.channels,
            "num_classes": data.num_classes,
            "image_size": data.image_size,
            "weights": weights.name,
            "splits": self.p.files.splits.name,
            "trained_on": "target_train",
            "seed": int(self.cfg.seed),
            "recipe": OmegaConf.to_container(self.cfg.train, resolve=True),
            "store_key": target.manifest.get("key"),
            "defense": OmegaConf.to_container(self.cfg.defense, resolve=True),
        }
        atomic_write_text(self.p.files.target_manifest, json.dumps(manifest, indent=2))


def load_target(cell_dir: Path | str) -> tuple[torch.nn.Module, Splits, dict]:
    """Reload a cell's target model (eval mode, on the CPU), its partition and its manifest.

    The model expects :func:`mldoctor_bench.data.base.normalise`'d inputs, ``uint8`` pixels scaled
    to ``[-1, 1]`` (not ``/ 255``); :func:`predict` applies that for you."""
    from safetensors.torch import load_file

    cell_dir = Path(cell_dir).expanduser()

    manifest = json.loads(CellFiles(cell_dir).target_manifest.read_text())
    model = build_model(manifest["arch"], manifest["in_channels"], manifest["num_classes"], manifest["image_size"])
    model = build_defense(manifest.get("defense", {"name": "none"})).prepare_model(model)
    model.load_state_dict(load_file(str(cell_dir / manifest["weights"])))
    return model.eval(), Splits.load(cell_dir / manifest["splits"]), manifest


def predict(cell_dir: Path | str, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(N, classes)`` of a cell's target for ``uint8`` images ``(N, C, H, W)``
    of the dataset's channels and size (as the dataset's ``images`` hold them), with the model's own
    preprocessing applied: ``predict(cell, data.images[splits.target_test])``."""
    model, _, manifest = load_target(cell_dir)
    expected = (manifest["in_channels"], manifest["image_size"], manifest["image_size"])
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"predict takes uint8 images of shape (N, {', '.join(map(str, expected))}), got "
                         f"{images.dtype} {tuple(images.shape)}; pass the dataset's images (0-255), not normalised ones")
    with torch.no_grad():
        return torch.softmax(predict_logits(model, images), dim=1)


@dataclass
class Outcome:
    cell_dir: Path
    table: Path
    reused: bool
    failed: int = 0  # attack x threat-model pairs whose attack failed (the cell is then not done)


def failed_pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    """The (attack, threat model) pairs of ``frame`` whose attack failed."""
    bad = frame[frame["status"] == FAILED]
    return set(zip(bad["attack"], bad["threat_model"]))


def earlier_rows(p: Plan) -> Optional[pd.DataFrame]:
    """The table of an earlier run of this cell that finished with failed attacks (it has a table
    but no ``done.json``); ``None`` when there is none (a killed run leaves no table)."""
    if p.files.table.exists() and not p.files.is_done():
        return pd.read_parquet(p.files.table)
    return None


def print_outcome(p: Plan, frame: pd.DataFrame, headline: str = "") -> None:
    """The cell's summary, its verdicts, where its time went and where its files are, on stdout."""
    verdicts_file = p.cell_dir / VERDICTS
    levels = []
    if verdicts_file.exists():
        levels = [f"{f} {v['level']}" for f, v in json.loads(verdicts_file.read_text())["families"].items()]
    cfg = p.cfg
    ui.print_summary(frame, f"{cfg.dataset.name} / {cfg.arch.name} / defense={cfg.defense.name} / seed={cfg.seed}",
                     levels)
    print("\n".join(([headline] if headline else []) + [
        f"results: {p.files.table}", f"         {p.files.csv}", f"cell:    {p.cell_dir}",
        f"verdicts: {verdicts_file} (rules and evidence: mldoctor-report {p.cell_dir.parent.parent})"]), flush=True)


def run_cell(cfg: DictConfig, given: Optional[GivenTarget] = None) -> Outcome:
    """Plan, then run the cell unless it is already done; return where its table is.

    A run whose attacks all finished writes ``done.json`` last. A run with failed attacks writes its
    rows but no ``done.json``; the next run of the same cell keeps the rows that succeeded and
    retries only the failed attack x threat-model pairs. A folder without a table (a killed run)
    is cleaned and the cell redone. With ``given``, its model is the target (see :class:`GivenTarget`)."""
    p = plan(cfg)
    if p.files.is_done():
        ui.console.print(f"[green]cell already done[/], nothing retrained or rerun: {p.cell_dir}")
        if not (p.cell_dir / VERDICTS).exists():  # a cell finished before verdicts were written
            write_cell_verdicts(p.cell_dir)
        print_outcome(p, pd.read_parquet(p.files.table))
        return Outcome(p.cell_dir, p.files.table, True)
    notes: list[str] = []  # the loader's news, shown once the data is known to fit the cell
    timings = Timings()
    with ui.progress_bars() as bars, timings.phase("load data", DATA):  # missing files fail here, before any work
        data = load_dataset(cfg.dataset.name, cfg.data, Feedback(bars, notes.append))
    if given is not None:  # the owner's checks (members, classes) refuse here, before any training
        data = given.adapt_data(data)
        splits = given.partition(p, data)
    else:
        splits = cell_partition(p, len(data), data.num_classes)  # so do sizes the data cannot hold
    for text in notes:
        ui.console.print(text)
    earlier = earlier_rows(p)
    retry = None
    if earlier is not None:
        retry = failed_pairs(earlier)
        names = ", ".join(f"{a} {short_name(t)}" for a, t in sorted(retry)) or "none"
        ui.console.print(f"retrying the failed attacks of {p.cell_dir.name}: {names}")
        for attack_name, tm_name in retry:
            shutil.rmtree(p.files.attack_dir(attack_name, tm_name), ignore_errors=True)
    else:
        if p.cell_dir.exists():  # an interrupted earlier attempt: start clean
            shutil.rmtree(p.cell_dir)
        p.cell_dir.mkdir(parents=True)
        atomic_write_text(p.files.config, OmegaConf.to_yaml(cfg, resolve=True))
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    with ui.progress_bars() as bars:
        rows = Assessment(p, data, splits, bars, timings, given).run(only=retry)
    prov = Provenance(f"{started:%Y%m%dT%H%M%S}-{p.config_hash[:8]}", p.config_hash, code_version(), started.isoformat())
    frame = to_frame(rows, prov, time.perf_counter() - t0)
    if earlier is not None:  # keep what succeeded before; the target rows and retried pairs are new
        kept = earlier[(earlier["attack"] != "target")
                       & ~pd.Series(list(zip(earlier["attack"], earlier["threat_model"])), index=earlier.index).isin(retry)]
        frame = pd.concat([frame, kept], ignore_index=True)
    parquet, _ = write_table(frame, p.cell_dir)
    timings.write(p.files.timings)
    members = given.manifest.get("members_listed") if given is not None else len(splits.target_train)
    write_cell_verdicts(p.cell_dir, members or None, data.files)
    failed = failed_pairs(frame)
    if not failed:
        atomic_write_text(p.files.done, json.dumps({"config_hash": p.config_hash,
                                                    "finished_at": datetime.now(timezone.utc).isoformat()}))
    print_outcome(p, frame, timings.headline())
    if failed:
        ui.console.print(f"[red]{len(failed)} attack(s) failed[/]; the cell is not marked done: run the same "
                         "command again to retry only what failed (tracebacks in each attack's error.txt)")
    return Outcome(p.cell_dir, parquet, False, len(failed))
