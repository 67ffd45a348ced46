"""The ``mldoctor-bench`` command: a thin Hydra app that hands the composed config to one cell.

What the two commands share (pre-flight refusals before any folder is made, exit codes, Ctrl-C) is
in :mod:`mldoctor_bench.entry`. A cell whose attacks failed is written but not marked done, and the
command exits with code 3 once the rest of the sweep has run.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mldoctor_bench import entry
from mldoctor_bench.cell import TrainedTarget


class BenchCommand(entry.Command):
    """The benchmark: the composed config is the cell's, and its target is trained (:class:`TrainedTarget`)."""

    prog, config = "mldoctor-bench", "config"

    def cell(self, cfg: DictConfig) -> tuple[DictConfig, TrainedTarget]:
        return cfg, TrainedTarget()


COMMAND = BenchCommand()


def run_job(cfg: DictConfig) -> str:
    """One Hydra job. A plain module-level function (decorated below, not in place) so that launchers
    which pickle the task, such as submitit for SLURM, pickle it by reference."""
    return entry.run_job(COMMAND, cfg)


app = hydra.main(version_base="1.3", config_path="conf", config_name="config")(run_job)


def main() -> None:
    """Console-script entry point."""
    entry.main(COMMAND, app)


if __name__ == "__main__":
    main()
