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
from mldoctor_bench.cellfiles import LOCATION_ASSESS_KEYS, LOCATION_DATA_KEYS, LOCATION_KEYS, CellFiles
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


@dataclass(frozen=True)
class Plan:
    """A validated configuration, ready to run: the cell's settings, typed."""

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
    for key in LOCATION_ASSESS_KEYS:
        plain.get("assess", {}).pop(key, None)
    if plain.get("assess") == {}:
        plain.pop("assess")
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


def plan(cfg: DictConfig, architectures: Iterable[str] = ()) -> Plan:
    """Validate everything that can be checked before long work; raise :class:`ConfigError`.
    ``architectures``: names outside the registry that the cell's target brings (an owner's)."""
    data = check_plain_keys(cfg)
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
        raise ConfigError(
            f"no selected attack supports a selected threat model ({', '.join(tms)}), so nothing would "
            f"run: {options}; e.g. {example}"
        )
    try:
        device = resolve_device(str(cfg.device))
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    config_hash = stable_hash(semantic_config(cfg))
    results_dir = writable_folder(str(cfg.results_dir), "results_dir")
    files = CellFiles.under(results_dir, cfg.dataset.name, cfg.arch.name, cfg.defense.name, cfg.seed, config_hash)
    store_dir = Path(str(cfg.cache.dir)).expanduser().resolve() if cfg.cache.enabled else None
    return Plan(cfg, attacks, tms, settings, defense, data, device, config_hash, files, ModelStore(store_dir))


def cell_partition(p: Plan, n: int, num_classes: int) -> Splits:
    """The cell's partition of ``n`` rows: the quarters, a transfer pool if the defense trains a
    student, a canary pool if an audit adds canaries, and the heldout pool (at least one row per
    class where an attack's evaluator needs it)."""
    needs_heldout = any(ATTACKS.get(a).uses_heldout for a in p.attacks)
    canaries = max([ATTACKS.get(a)().pool_sizes(p.settings[a]).get("canary", 0) for a in p.attacks], default=0)
    try:
        return partition(
            n,
            int(p.cfg.seed),
            p.data.quarter_size,
            reserve=p.data.reserve,
            transfer_size=p.defense.transfer_size() if p.defense.uses_transfer_data else 0,
            canary_size=canaries,
            heldout_size=p.data.heldout_size,
            min_heldout=num_classes if needs_heldout else 0,
            dataset=str(p.cfg.dataset.name),
        )
    except PartitionError as exc:
        raise ConfigError(str(exc)) from None
