"""Hydra callback that merges a multirun's per-cell tables into one table in the sweep folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mldoctor_bench.cellfiles import pointed_cells
from mldoctor_bench.results import merge_tables, write_table
from mldoctor_bench.ui import console


def sweep_tables(sweep_dir: Path) -> list[Path]:
    """The tables named by the ``cell.json`` pointers that the sweep's jobs left."""
    return [cell.table for cell in pointed_cells(sweep_dir)]


def merge_sweep(sweep_dir: Path) -> Path | None:
    """Write ``results.parquet``/``.csv`` in ``sweep_dir`` from its jobs' tables; return the path."""
    tables = sweep_tables(sweep_dir)
    if not tables:
        return None
    parquet, _ = write_table(merge_tables(tables), sweep_dir)
    return parquet


class MergeSweepResults(Callback):
    """At the end of a multirun, merge the jobs' tables into the sweep folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).expanduser().resolve()
        merged = merge_sweep(sweep_dir)
        if merged is None:
            console.print(f"[yellow]no finished cells in {sweep_dir}; nothing merged[/]")
        else:
            console.print(f"merged sweep table: {merged}\n                    {merged.with_suffix('.csv')}")
