"""The tidy results table: one row per metric, keyed by the cell, with status and provenance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from mldoctor_bench.cellfiles import TABLE_STEM
from mldoctor_bench.files import atomic_write

KEY = ["dataset", "arch", "defense", "attack", "threat_model", "variant", "seed"]
# family: the attack's declared family (membership, inversion, attribute, stealing, privacy_audit),
# "target" for the target's utility rows
COLUMNS = KEY + [
    "family",
    "metric",
    "value",
    "status",
    "reason",
    "run_id",
    "config_hash",
    "code_version",
    "started_at",
    "wall_s",
]
TARGET = "target"  # the attack and family of the target's utility rows
OK, SKIPPED, FAILED = "ok", "skipped", "failed"
SKIPPED_FOR_COST = "skipped for cost"  # how a skipped row's reason begins when the attacker's budget left it out
UNSUPPORTED = " does not support "  # in the reason of an attack skipped under a threat model it does not declare


@dataclass(frozen=True)
class Cell:
    """The part of the key shared by every row of one run."""

    dataset: str
    arch: str
    defense: str
    seed: int


@dataclass(frozen=True)
class Provenance:
    run_id: str
    config_hash: str
    code_version: str
    started_at: str


def metric_rows(
    cell: Cell,
    attack: str,
    threat_model: str,
    variant: str,
    metrics: dict[str, float],
    status: str = OK,
    reason: str = "",
    family: str = "",
) -> list[dict]:
    """One row per metric (a single ``status`` row with no metric when ``metrics`` is empty);
    ``family`` is the attack's declared family (``target`` for the target's rows)."""
    base = {
        "dataset": cell.dataset,
        "arch": cell.arch,
        "defense": cell.defense,
        "attack": attack,
        "family": family,
        "threat_model": threat_model,
        "variant": variant,
        "seed": cell.seed,
        "status": status,
        "reason": reason,
    }
    if not metrics:
        return [{**base, "metric": "", "value": float("nan")}]
    return [{**base, "metric": k, "value": float(v)} for k, v in metrics.items()]


def to_frame(rows: Iterable[dict], provenance: Provenance, wall_s: float) -> pd.DataFrame:
    """Rows plus provenance columns, in :data:`COLUMNS` order."""
    frame = pd.DataFrame(list(rows))
    for name, value in vars(provenance).items():
        frame[name] = value
    frame["wall_s"] = round(wall_s, 3)
    for col in COLUMNS:
        if col not in frame:
            frame[col] = ""
    frame = frame[COLUMNS]
    frame["seed"] = frame["seed"].astype("int64")
    frame["value"] = frame["value"].astype("float64")
    return frame


def write_table(frame: pd.DataFrame, directory: Path, stem: str = TABLE_STEM) -> tuple[Path, Path]:
    """Write ``stem.parquet`` and ``stem.csv`` atomically (temporary file, then rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / f"{stem}.parquet", directory / f"{stem}.csv"
    for path, write in zip(paths, (frame.to_parquet, frame.to_csv)):
        atomic_write(path, lambda tmp, write=write: write(tmp, index=False))
    return paths


def not_run(frame: pd.DataFrame) -> pd.Series:
    """Rows of attacks that were selected under a threat model they support and did not run: skipped
    for any other reason (the budget, what the model or data lacks) or failed."""
    unsupported = frame["reason"].fillna("").str.contains(UNSUPPORTED, regex=False)
    return ((frame["status"] == SKIPPED) & ~unsupported) | (frame["status"] == FAILED)


def read_table(path: Path) -> pd.DataFrame:
    """Read one results table (Parquet)."""
    return pd.read_parquet(path)


def merge_tables(paths: Iterable[Path]) -> pd.DataFrame:
    """Concatenate tables, keeping for each (config, cell key, metric) the row of the latest run."""
    frames = [read_table(p) for p in paths if Path(p).exists()]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    merged = pd.concat(frames, ignore_index=True)
    merged = merged.sort_values("started_at").drop_duplicates(["config_hash"] + KEY + ["metric"], keep="last")
    return merged.sort_values(KEY + ["metric"]).reset_index(drop=True)
