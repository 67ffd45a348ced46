"""The ``mldoctor-bench`` command: a thin Hydra entry point that hands the config to the runner."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mldoctor_bench.cellfiles import POINTER, CellFiles, pointer_payload
from mldoctor_bench.data import DataUnavailableError
from mldoctor_bench.registry import UnknownEntryError
from mldoctor_bench.runner import ConfigError, run_cell
from mldoctor_bench.files import atomic_write_text


def run_job(cfg: DictConfig) -> str:
    """Run one cell; in a multirun, leave a pointer to its table for the sweep's merged table.

    A plain module-level function (decorated below, not in place) so that launchers which pickle
    the task, such as submitit for SLURM, pickle it by reference."""
    try:
        outcome = run_cell(cfg)
    except (ConfigError, DataUnavailableError, UnknownEntryError) as exc:
        # one plain line (no console wrapping), so it reads and pastes whole in logs
        print(f"mldoctor-bench: error: {exc}", file=sys.stderr)
        sys.exit(2)
    job_dir = HydraConfig.get().runtime.output_dir
    atomic_write_text(Path(job_dir) / POINTER, pointer_payload(CellFiles(outcome.cell_dir)))
    return str(outcome.table)


app = hydra.main(version_base="1.3", config_path="conf", config_name="config")(run_job)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
