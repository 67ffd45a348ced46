"""The names of the files a cell leaves, in one place.

A cell's run writes them, the command line and the sweep callback point at them, the report reads
them. A cell's folder is ``<results_dir>/cells/<dataset>_<arch>_<defense>_seed<seed>_<hash>``;
``done.json`` is written last, so a folder without it is an interrupted run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CELLS = "cells"  # the folder of cells under a results directory
TABLE_STEM = "results"  # the tidy table is <stem>.parquet, with a <stem>.csv copy
DONE = "done.json"  # a cell's marker, written last
POINTER = "cell.json"  # what a sweep job leaves in its own folder: where its cell is
EXPOSED = "exposed.parquet"  # a membership attack's highest-scoring members, beside its scores
# Dotted keys of config.yaml that say where things are or what is done with the results, not what a
# cell computes: left out of its hash (and of the settings a report compares across cells).
# mldoctor-assess's exit policy is one of them, and so is the list of output-time defenses it measures
# after the cell (each in a cell of its own); its budget (``assess.budget_models``) decides which
# attacks run, so it is part of the hash.
LOCATION_KEYS = (
    "results_dir",
    "device",
    "cache",
    "hydra",
    "data.root",
    "data.cache_dir",
    "data.download",
    "assess.fail_on",
    "assess.allow_incomplete",
    "assess.output_defenses",
)


def without_location(config: dict) -> dict:
    """A plain config without its :data:`LOCATION_KEYS` (a section left empty by them goes too)."""
    config = dict(config)
    for key in LOCATION_KEYS:
        section, _, leaf = key.rpartition(".")
        if not section:
            config.pop(key, None)
        elif isinstance(config.get(section), dict):
            config[section] = {k: v for k, v in config[section].items() if k != leaf}
            if not config[section]:
                config.pop(section)
    return config


def cell_name(dataset: str, arch: str, defense: str, seed: int, config_hash: str) -> str:
    """The folder name of one cell: readable key first, then the configuration's hash."""
    return f"{dataset}_{arch}_{defense}_seed{seed}_{config_hash}"


@dataclass(frozen=True)
class CellFiles:
    """Paths of everything one cell folder holds."""

    dir: Path

    @classmethod
    def under(
        cls, results_dir: Path, dataset: str, arch: str, defense: str, seed: int, config_hash: str
    ) -> "CellFiles":
        """The cell of this key and configuration hash under ``results_dir``."""
        return cls(Path(results_dir) / CELLS / cell_name(dataset, arch, defense, seed, config_hash))

    @property
    def table(self) -> Path:
        """The cell's tidy results table (Parquet)."""
        return self.dir / f"{TABLE_STEM}.parquet"

    @property
    def csv(self) -> Path:
        """The same table as CSV."""
        return self.dir / f"{TABLE_STEM}.csv"

    @property
    def done(self) -> Path:
        """The marker written last: the cell finished."""
        return self.dir / DONE

    @property
    def config(self) -> Path:
        """The resolved configuration the cell ran with."""
        return self.dir / "config.yaml"

    @property
    def timings(self) -> Path:
        """Where the run's time went: every model trained or loaded and every attack."""
        return self.dir / "timings.json"

    @property
    def splits(self) -> Path:
        """The cell's partition: every pool's indices by name, as safetensors."""
        return self.dir / "splits.safetensors"

    @property
    def target_weights(self) -> Path:
        """The target model's weights."""
        return self.dir / "target.safetensors"

    @property
    def target_manifest(self) -> Path:
        """What it takes to rebuild the target: architecture, shapes, recipe, defense."""
        return self.dir / "target.json"

    def attack_dir(self, attack: str, threat_model: str) -> Path:
        """The folder an attack writes into under one threat model (scores, images, ``error.txt``)."""
        return self.dir / attack / threat_model

    def exposed(self, attack: str, threat_model: str) -> Path:
        """A membership attack's most exposed members under one threat model (images included)."""
        return self.attack_dir(attack, threat_model) / EXPOSED

    def error(self, attack: str, threat_model: str) -> Path:
        """The traceback of an attack that failed under one threat model."""
        return self.attack_dir(attack, threat_model) / "error.txt"

    def is_done(self) -> bool:
        """Whether the cell finished: its ``done.json`` and its table are there."""
        return self.done.exists() and self.table.exists()


def pointer_payload(cell: CellFiles) -> str:
    """The text of a sweep job's :data:`POINTER` to ``cell``."""
    return json.dumps({"cell_dir": str(cell.dir), "table": str(cell.table)})


def pointed_cells(sweep_dir: Path) -> list[CellFiles]:
    """The cells named by the ``*/cell.json`` pointers of a sweep folder, in job order."""
    return [
        CellFiles(Path(json.loads(p.read_text())["cell_dir"])) for p in sorted(Path(sweep_dir).glob(f"*/{POINTER}"))
    ]
