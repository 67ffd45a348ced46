"""Planning a cell: the configuration checked and typed before any long work, and the cell's
partition.

A *cell* is one (dataset, architecture, defense, seed) with its selected attacks and threat models
and every other setting; its folder under ``results_dir/cells/`` is named by the hash of that
configuration (without the keys that only say where things go).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.cellfiles import CellFiles, without_location
from mldoctor_bench.data import DATASETS, Splits
from mldoctor_bench.data.splits import DEFAULT_RESERVE, PartitionError, partition
from mldoctor_bench.defenses import DEFENSES, Defense, build_defense
from mldoctor_bench.models import ARCHS
from mldoctor_bench.provenance import stable_hash
from mldoctor_bench.settings import SettingsError, parse, setting
from mldoctor_bench.store import ModelStore
from mldoctor_bench.threat_models import THREAT_MODELS
from mldoctor_bench.training import Recipe, resolve_device

MIN_IMAGE_SIZE = 8  # the smallest side every architecture accepts


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the problem and the fix."""


@dataclass(frozen=True, kw_only=True)
class AttackerSection:
    """``attacker.*``: what the attacker knows of the target's training."""

    # The shadow model trains with the target's training-time defense and its black-box outputs go
    # through the target's output-time defense (an informed attacker).
    knows_defense: bool = setting(True)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A validated configuration, ready to run: every setting a cell uses, typed. Nothing below
    :func:`plan` reads the configuration itself; ``cfg`` is kept to write the cell's ``config.yaml``."""

    cfg: DictConfig
    seed: int
    dataset: str
    arch: str
    recipe: Recipe  # the ``train`` section with the profile's recipe, made concrete for ``device``
    attacker: AttackerSection
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

    @property
    def needs_heldout(self) -> bool:
        """Whether an attack's evaluator needs the partition's heldout pool."""
        return any(ATTACKS.get(a).uses_heldout for a in self.attacks)


def selected(cfg: DictConfig, group: str) -> list[str]:
    """Names chosen in a multi-select group (``attack``, ``threat_model``): the node's keys."""
    node = cfg.get(group)
    return list(node.keys()) if node else []


def semantic_config(cfg: DictConfig) -> dict:
    """The resolved config without location keys: what the cell's results depend on."""
    return without_location(OmegaConf.to_container(cfg, resolve=True))


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


@dataclass(frozen=True)
class PlainKeys:
    """The top-level keys and sections every cell has, typed."""

    seed: int
    recipe: Recipe  # not yet made concrete for a device
    data: DataSection
    attacker: AttackerSection


def check_plain_keys(cfg: DictConfig) -> PlainKeys:
    """Types and ranges of ``seed``, ``train.*``, ``data.*`` and ``attacker.*``; raise :class:`ConfigError`."""
    try:
        return PlainKeys(
            parse(RunSettings, {"seed": cfg.seed}, "").seed,
            Recipe.from_config(cfg.train),
            parse(DataSection, cfg.data, "data"),
            parse(AttackerSection, cfg.get("attacker") or {}, "attacker"),
        )
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


def attack_settings(cfg: DictConfig, attacks: list[str]) -> dict:
    """Each selected attack's settings, typed and checked together; raise :class:`ConfigError`."""
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
    return settings


def check_threat_models(attacks: list[str], tms: list[str]) -> None:
    """Refuse an unknown threat model, and a selection in which no attack supports any threat model."""
    for name in tms:
        if name not in THREAT_MODELS:
            raise ConfigError(f"unknown threat model {name!r}; choose from: {', '.join(THREAT_MODELS.names())}")
    supported = {a: ATTACKS.get(a).threat_models for a in attacks}
    if not any(t in supported[a] for a in attacks for t in tms):
        options = "; ".join(f"{a} supports {', '.join(supported[a])}" for a in attacks)
        example = f"attack={attacks[0]} threat_model={supported[attacks[0]][0]}"
        raise ConfigError(
            f"no selected attack supports a selected threat model ({', '.join(tms)}), so nothing would "
            f"run: {options}; e.g. {example}"
        )


def plan(cfg: DictConfig, architectures: Iterable[str] = ()) -> Plan:
    """Validate everything that can be checked before long work; raise :class:`ConfigError`.
    ``architectures``: names outside the registry that the cell's target brings (an owner's)."""
    keys = check_plain_keys(cfg)
    for group, name, registry in [("dataset", cfg.dataset.name, DATASETS), ("arch", cfg.arch.name, ARCHS)]:
        if name not in registry and name not in architectures:
            raise ConfigError(f"unknown {group} {name!r}; choose one of: {', '.join(registry.names())}")
    if cfg.defense.name not in DEFENSES:
        raise ConfigError(f"unknown defense {cfg.defense.name!r}; choose one of: {', '.join(DEFENSES.names())}")
    attacks, tms = selected(cfg, "attack"), selected(cfg, "threat_model")
    if not attacks or not tms:
        raise ConfigError(
            "select at least one attack and one threat model, e.g. attack=membership threat_model=blackbox_shadow"
        )
    settings = attack_settings(cfg, attacks)
    try:
        defense = build_defense(cfg.defense)
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    check_threat_models(attacks, tms)
    try:
        device = resolve_device(str(cfg.device))
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    config_hash = stable_hash(semantic_config(cfg))
    results_dir = writable_folder(str(cfg.results_dir), "results_dir")
    dataset, arch = str(cfg.dataset.name), str(cfg.arch.name)
    files = CellFiles.under(results_dir, dataset, arch, defense.name, keys.seed, config_hash)
    store_dir = Path(str(cfg.cache.dir)).expanduser().resolve() if cfg.cache.enabled else None
    return Plan(
        cfg=cfg,
        seed=keys.seed,
        dataset=dataset,
        arch=arch,
        recipe=keys.recipe.resolved(device),
        attacker=keys.attacker,
        attacks=attacks,
        threat_models=tms,
        settings=settings,
        defense=defense,
        data=keys.data,
        device=device,
        config_hash=config_hash,
        files=files,
        store=ModelStore(store_dir),
    )


def cell_partition(p: Plan, n: int, num_classes: int) -> Splits:
    """The cell's partition of ``n`` rows: the quarters, a transfer pool if the defense trains a
    student, a canary pool if an audit adds canaries, and the heldout pool (at least one row per
    class where an attack's evaluator needs it)."""
    canaries = max([ATTACKS.get(a)().pool_sizes(p.settings[a]).get("canary", 0) for a in p.attacks], default=0)
    try:
        return partition(
            n,
            p.seed,
            p.data.quarter_size,
            reserve=p.data.reserve,
            transfer_size=p.defense.transfer_size() if p.defense.uses_transfer_data else 0,
            canary_size=canaries,
            heldout_size=p.data.heldout_size,
            min_heldout=num_classes if p.needs_heldout else 0,
            dataset=p.dataset,
        )
    except PartitionError as exc:
        raise ConfigError(str(exc)) from None
