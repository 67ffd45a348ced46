"""One cell from configuration to results: plan, read and partition the data, resume what an earlier
run left, obtain the target, run the attacks, write the table, the verdicts and ``done.json`` (last).

A rerun of a done cell trains and runs nothing. A run with failed attacks writes its rows but no
``done.json``; the next run of the same cell keeps the rows that succeeded and retries only the
failed attack x threat-model pairs. A folder without a table (a killed run) is cleaned and redone.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from mldoctor_bench import ui
from mldoctor_bench.attacks.scoring import png_bytes
from mldoctor_bench.cell.plan import Plan, plan
from mldoctor_bench.cell.run import prepare
from mldoctor_bench.cell.targets import Target, TrainedTarget
from mldoctor_bench.data import ImageData, Splits, load_dataset
from mldoctor_bench.data.base import Feedback
from mldoctor_bench.files import atomic_write_text
from mldoctor_bench.provenance import code_version
from mldoctor_bench.report.cell_verdicts import VERDICTS, refresh_cell_verdicts, write_cell_verdicts
from mldoctor_bench.report.exposure import (
    EXPOSURE,
    cross_attack,
    exposure_table,
    flagged_by_every_family,
    strongest_measurable,
)
from mldoctor_bench.report.stats import membership_ranking
from mldoctor_bench.results import FAILED, TARGET, Cell, Provenance, metric_rows, to_frame, write_table
from mldoctor_bench.settings import as_dict
from mldoctor_bench.threat_catalog import short_name
from mldoctor_bench.timings import DATA, Timings

Pairs = set[tuple[str, str]]
EXPOSURE_ATTACK = "exposure"  # the attack and family of the cross-attack rows
FLAGGED_BY_EVERY_FAMILY = "flagged_by_every_family.parquet"
FLAGGED_IMAGES = 64  # at most this many images of the members every family exposes


@dataclass(frozen=True)
class Outcome:
    cell_dir: Path
    table: Path
    reused: bool
    failed: int = 0  # attack x threat-model pairs whose attack failed (the cell is then not done)


def run_cell(cfg: DictConfig, target: Optional[Target] = None) -> Outcome:
    """Plan, then run the cell unless it is already done (see the module docstring); ``target``:
    what the cell attacks (default: the benchmark's :class:`TrainedTarget`)."""
    target = target or TrainedTarget()
    p = plan(cfg, target.architectures())
    if p.files.is_done():
        return finished(p)
    timings = Timings(torch_threads=torch.get_num_threads())  # pair measurements only under the same count
    data, splits = read(p, target, timings)  # refusals of the data (sizes, members, classes) come here
    earlier, retry = resume(p)
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    with ui.progress_bars() as bars:
        run, utility = prepare(p, data, splits, target, bars, timings)
        rows = utility + run.attacks(only=retry)
    prov = Provenance(
        f"{started:%Y%m%dT%H%M%S}-{p.config_hash[:8]}", p.config_hash, code_version(), started.isoformat()
    )
    wall = time.perf_counter() - t0
    frame = kept(to_frame(rows, prov, wall), earlier, retry)
    write_table(frame, p.cell_dir)  # the attacks' rows first: the exposure step reads them back
    frame = pd.concat([frame, to_frame(exposure(p, run.key, data, frame), prov, wall)], ignore_index=True)
    write_table(frame, p.cell_dir)
    timings.write(p.files.timings)
    write_cell_verdicts(p.cell_dir, run.training_size, data.files)
    failed = failed_pairs(frame)
    if not failed:
        atomic_write_text(
            p.files.done,
            json.dumps({"config_hash": p.config_hash, "finished_at": datetime.now(timezone.utc).isoformat()}),
        )
    print_outcome(p, frame, timings.headline())
    if failed:
        ui.console.print(
            f"[red]{len(failed)} attack(s) failed[/]; the cell is not marked done: run the same "
            "command again to retry only what failed (tracebacks in each attack's error.txt)"
        )
    return Outcome(p.cell_dir, p.files.table, False, len(failed))


def finished(p: Plan) -> Outcome:
    """A done cell: nothing is loaded or trained; its summary is printed again."""
    ui.console.print(f"[green]cell already done[/], nothing retrained or rerun: {p.cell_dir}")
    if refresh_cell_verdicts(p.cell_dir):  # written by other verdict rules, or before there were verdicts
        ui.console.print(f"verdicts rewritten under the rules in force: {p.cell_dir / VERDICTS}")
    print_outcome(p, pd.read_parquet(p.files.table))
    return Outcome(p.cell_dir, p.files.table, True)


def read(p: Plan, target: Target, timings: Timings) -> tuple[ImageData, Splits]:
    """The cell's data as its target takes it, and its partition (missing files fail here, before
    any work)."""
    notes: list[str] = []  # the loader's news, shown once the data is known to fit the cell
    with ui.progress_bars() as bars, timings.phase("load data", DATA):
        data = load_dataset(p.dataset, as_dict(p.data), Feedback(bars, notes.append))
    data = target.adapt(data)
    splits = target.partition(p, data)
    for text in notes:
        ui.console.print(text)
    return data, splits


def resume(p: Plan) -> tuple[Optional[pd.DataFrame], Optional[Pairs]]:
    """What an earlier run of this cell left: its table and failed pairs (to retry only those), or
    nothing, in a clean cell folder with the config written."""
    if p.files.table.exists() and not p.files.is_done():
        earlier = pd.read_parquet(p.files.table)
        retry = failed_pairs(earlier)
        names = ", ".join(f"{a} {short_name(t)}" for a, t in sorted(retry)) or "none"
        ui.console.print(f"retrying the failed attacks of {p.cell_dir.name}: {names}")
        for attack_name, tm_name in retry:
            shutil.rmtree(p.files.attack_dir(attack_name, tm_name), ignore_errors=True)
        return earlier, retry
    if p.cell_dir.exists():  # an interrupted earlier attempt: start clean
        shutil.rmtree(p.cell_dir)
    p.cell_dir.mkdir(parents=True)
    atomic_write_text(p.files.config, OmegaConf.to_yaml(p.cfg, resolve=True))
    return None, None


def failed_pairs(frame: pd.DataFrame) -> Pairs:
    """The (attack, threat model) pairs of ``frame`` whose attack failed."""
    bad = frame[frame["status"] == FAILED]
    return set(zip(bad["attack"], bad["threat_model"]))


def kept(frame: pd.DataFrame, earlier: Optional[pd.DataFrame], retry: Optional[Pairs]) -> pd.DataFrame:
    """``frame`` with what succeeded before; the target rows and retried pairs are the new ones."""
    if earlier is None:
        return frame
    pairs = pd.Series(list(zip(earlier["attack"], earlier["threat_model"])), index=earlier.index)
    redone = earlier["attack"].isin([TARGET, EXPOSURE_ATTACK]) | pairs.isin(retry)
    return pd.concat([frame, earlier[~redone]], ignore_index=True)


def exposure(p: Plan, cell: Cell, data: ImageData, frame: pd.DataFrame) -> list[dict]:
    """Write ``exposure.parquet`` (which examples leak, to which attacks) and the images of the
    members every family exposes; the cross-attack rows of the results table."""
    table = exposure_table(p.cell_dir, data.files)
    table.to_parquet(p.cell_dir / EXPOSURE, index=False)
    strongest = strongest_measurable(table, membership_ranking(frame))
    every = flagged_by_every_family(table, strongest) if not table.empty else pd.DataFrame()
    if len(every):
        chosen = every.head(FLAGGED_IMAGES)
        pd.DataFrame(
            {
                "series": strongest,
                **{c: chosen[c] for c in chosen.columns},
                "label": data.labels[chosen["index"].tolist()].numpy(),
                "image": [png_bytes(data.images[i].numpy()) for i in chosen["index"]],
            }
        ).to_parquet(p.cell_dir / FLAGGED_BY_EVERY_FAMILY, index=False)
    return [
        row
        for variant, metrics in cross_attack(table, strongest)
        for row in metric_rows(cell, EXPOSURE_ATTACK, "none", variant, metrics, family=EXPOSURE_ATTACK)
    ]


def print_outcome(p: Plan, frame: pd.DataFrame, headline: str = "") -> None:
    """The cell's summary, its verdicts, where its time went and where its files are, on stdout."""
    verdicts_file = p.cell_dir / VERDICTS
    levels = []
    if verdicts_file.exists():
        levels = [
            f"{f} {v.get('label', v['level'])}" for f, v in json.loads(verdicts_file.read_text())["families"].items()
        ]
    ui.print_summary(frame, f"{p.dataset} / {p.arch} / defense={p.defense.name} / seed={p.seed}", levels)
    print(
        "\n".join(
            ([headline] if headline else [])
            + ui.labelled("results:", [str(p.files.table), str(p.files.csv)])
            + ui.labelled("cell:   ", [str(p.cell_dir)])
            + ui.labelled("verdicts:", [str(verdicts_file)])
            + ui.labelled("rules and evidence:", [f"mldoctor-report {p.cell_dir.parent.parent}"])
        ),
        flush=True,
    )
