"""Find what a report draws from: the tidy table of finished cells, their saved membership scores
and their most exposed members."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd
from omegaconf import OmegaConf

from mldoctor_bench.cellfiles import CELLS, DONE, EXPOSED, TABLE_STEM, CellFiles, pointed_cells
from mldoctor_bench.report.intervals import bootstrap_membership
from mldoctor_bench.report.settings import flatten
from mldoctor_bench.report.stats import STRENGTH, families, membership_ranking, series_label
from mldoctor_bench.results import merge_tables, read_table


@dataclass(frozen=True)
class Source:
    """Where a report's numbers come from: the table paths and the cell directories behind them."""

    tables: list[Path]
    cell_dirs: list[Path]
    report_dir: Path


def finished_cells(results_dir: Path) -> list[Path]:
    """Cell directories under ``results_dir/cells/`` whose run finished (``done.json`` and a table)."""
    cells = Path(results_dir) / CELLS
    return sorted(d for d in cells.glob("*/") if CellFiles(d).is_done())


def sweep_cells(sweep_dir: Path) -> list[Path]:
    """Cell directories named by the ``*/cell.json`` pointers of a sweep folder (may be none)."""
    return [cell.dir for cell in pointed_cells(sweep_dir) if cell.done.exists()]


def locate(path: Path) -> Source:
    """Resolve what ``path`` names: a results directory (with ``cells/``), a single table (Parquet
    file, e.g. a sweep's merged ``results.parquet``) or a folder holding one. Raise
    ``FileNotFoundError`` with what was looked for when there is nothing to report on."""
    path = Path(path).expanduser().resolve()
    if path.is_file():
        return Source([path], sweep_cells(path.parent), path.parent / "report")
    if (path / CELLS).is_dir():
        cells = finished_cells(path)
        if not cells:
            raise FileNotFoundError(f"no finished cell (a {CELLS}/*/{DONE}) under {path / CELLS}")
        return Source([CellFiles(c).table for c in cells], cells, path / "report")
    table = path / f"{TABLE_STEM}.parquet"
    if table.exists():
        return Source([table], sweep_cells(path), path / "report")
    raise FileNotFoundError(f"{path} holds neither {CELLS}/*/{DONE} nor {TABLE_STEM}.parquet")


def collect_table(path: Path) -> pd.DataFrame:
    """The merged tidy table of everything ``path`` names (see :func:`locate`)."""
    return merge_tables(locate(path).tables)


@dataclass(frozen=True)
class ScoreFile:
    """One saved per-example score file of a membership attack, with its cell's key."""

    dataset: str
    arch: str
    defense: str
    seed: int
    attack: str
    threat_model: str
    path: Path
    config_hash: str = ""
    family: str = ""


def score_files(cell_dirs: list[Path]) -> list[ScoreFile]:
    """Every ``<attack>/<threat_model>/scores*.parquet`` in the given cells."""
    out = []
    for cell in cell_dirs:
        table = read_table(CellFiles(cell).table)
        key, family_of = table.iloc[0], dict(zip(table["attack"], families(table)))
        for path in sorted(cell.glob("*/*/scores*.parquet")):
            attack = path.parent.parent.name
            out.append(
                ScoreFile(
                    str(key["dataset"]),
                    str(key["arch"]),
                    str(key["defense"]),
                    int(key["seed"]),
                    attack,
                    path.parent.name,
                    path,
                    str(key["config_hash"]),
                    family_of.get(attack, ""),
                )
            )
    return out


def read_scores(path: Path, with_index: bool = False) -> dict[str, pd.DataFrame]:
    """``{variant: frame with score, label}`` from one scores file (variant "" when it has none); with
    ``with_index``, also each example's dataset ``index`` where the file has it."""
    frame = pd.read_parquet(path)
    if "variant" not in frame:
        frame["variant"] = ""
    columns = ["score", "label"] + ([c for c in ("index", "class") if c in frame] if with_index else [])
    return {str(v): g[columns].reset_index(drop=True) for v, g in frame.groupby("variant", sort=True)}


def score_intervals(files: list[ScoreFile], runs: set[tuple[str, str, str]] | None = None) -> pd.DataFrame:
    """Bootstrap intervals over evaluation examples (see :func:`intervals.bootstrap_membership`) for
    the membership attacks' saved scores, only those of ``runs`` (``(config_hash, attack,
    threat_model)``; all when None): columns ``config_hash, attack, threat_model, variant, metric,
    estimate, ci_low, ci_high``. The privacy audit scores canaries, not members: left out."""
    records = []
    for f in files:
        if f.family != "membership" or (runs is not None and (f.config_hash, f.attack, f.threat_model) not in runs):
            continue
        for variant, frame in read_scores(f.path).items():
            boot = bootstrap_membership(frame["label"].to_numpy(), frame["score"].to_numpy())
            for metric, (estimate, low, high) in boot.items():
                records.append(
                    {
                        "config_hash": f.config_hash,
                        "attack": f.attack,
                        "threat_model": f.threat_model,
                        "variant": variant,
                        "metric": metric,
                        "estimate": estimate,
                        "ci_low": low,
                        "ci_high": high,
                    }
                )
    return pd.DataFrame(
        records, columns=["config_hash", "attack", "threat_model", "variant", "metric", "estimate", "ci_low", "ci_high"]
    )


def cell_configs(cell_dirs: list[Path]) -> pd.DataFrame:
    """One row per cell with a ``config.yaml``: its flattened settings, indexed by config hash."""
    records = {}
    for cell in cell_dirs:
        files = CellFiles(cell)
        if not files.config.exists():
            continue
        config_hash = str(read_table(files.table)["config_hash"].iloc[0])
        records[config_hash] = flatten(OmegaConf.to_container(OmegaConf.load(files.config)) or {})
    frame = pd.DataFrame.from_dict(records, orient="index")
    frame.index.name = "config_hash"
    return frame


def class_counts(cell_dirs: list[Path]) -> dict[str, int]:
    """``{dataset: number of classes}`` from the cells' target manifests (for chance levels)."""
    out = {}
    for cell in cell_dirs:
        manifest = CellFiles(cell).target_manifest
        if manifest.exists():
            info = json.loads(manifest.read_text())
            if "num_classes" in info and "dataset" in info:
                out[str(info["dataset"])] = int(info["num_classes"])
    return out


@dataclass(frozen=True)
class ExposedSet:
    """One cell's most exposed members: those its strongest membership attack that saved them
    (``exposed.parquet``) scores highest. ``examples`` is ``None`` when there are none, and
    ``note`` says why, or names stronger attacks that saved none."""

    cell_id: str  # the cell's folder name (unique, for file names)
    cell: str  # dataset/arch/defense seed<seed>, for titles
    series: str  # e.g. "membership_metric (B,S) entropy"
    tpr: float  # its stats.STRENGTH: TPR at 1% FPR, then AUC
    auc: float
    examples: pd.DataFrame | None  # member_position, label, score, image (PNG bytes), highest first
    note: str = ""


def exposed_sets(cell_dirs: list[Path], only: Optional[set[tuple[str, str, str]]] = None) -> list[ExposedSet]:
    """Per cell, the most exposed members from its strongest membership attack that saved them
    (ranked by :func:`~mldoctor_bench.report.stats.membership_ranking` on the cell's own table);
    ``only``: the series (attack, threat model, variant) that may be chosen, e.g. those that rejected
    no leakage."""
    out = []
    for cell in cell_dirs:
        files = CellFiles(cell)
        table = read_table(files.table)
        key = table.iloc[0]
        name = f"{key['dataset']}/{key['arch']}/{key['defense']} seed{key['seed']}"
        ranking, passed = membership_ranking(table), []
        if only is not None:
            ranking = ranking[[s in only for s in zip(ranking["attack"], ranking["threat_model"], ranking["variant"])]]
        found = None
        for _, row in ranking.iterrows():
            path = files.exposed(row["attack"], row["threat_model"])
            frame = pd.read_parquet(path) if path.exists() else None
            if frame is not None and (frame["variant"] == row["variant"]).any():
                found = row, frame[frame["variant"] == row["variant"]].reset_index(drop=True)
                break
            passed.append(series_label(row["attack"], row["threat_model"], row["variant"]))
        if found is None:
            why = f"no membership attack of this cell saved {EXPOSED}"
            if not len(ranking):
                none = "rejected no leakage" if only is not None else "has an ok row with TPR at 1% FPR or AUC"
                why = f"no membership series {none}"
            out.append(ExposedSet(cell.name, name, "", float("nan"), float("nan"), None, why))
            continue
        row, examples = found
        note = f"Stronger but without saved examples: {', '.join(passed)}." if passed else ""
        out.append(
            ExposedSet(
                cell.name,
                name,
                series_label(row["attack"], row["threat_model"], row["variant"]),
                float(row[STRENGTH[0]]),
                float(row[STRENGTH[1]]),
                examples,
                note,
            )
        )
    return out
