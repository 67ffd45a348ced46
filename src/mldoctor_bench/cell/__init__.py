"""One cell of the benchmark: planning (:mod:`.plan`), the models (:mod:`.models`), what is attacked
(:mod:`.targets`), the attacks (:mod:`.run`), the whole lifecycle (:mod:`.lifecycle`) and reloading a
finished cell's target (:mod:`.loading`). See docs/contributing.md for the words cell, run, target
and recipe."""

from mldoctor_bench.cell.lifecycle import Outcome, run_cell
from mldoctor_bench.cell.loading import load_target, predict
from mldoctor_bench.cell.plan import ConfigError, Plan, plan
from mldoctor_bench.cell.run import CellRun, prepare
from mldoctor_bench.cell.targets import Target, TrainedTarget

__all__ = [
    "CellRun",
    "ConfigError",
    "Outcome",
    "Plan",
    "Target",
    "TrainedTarget",
    "load_target",
    "plan",
    "predict",
    "prepare",
    "prepared",
    "run_cell",
]


def prepared(cfg, target: "Target | None" = None) -> CellRun:
    """A cell ready to run attacks (its target and shadow trained or loaded), for tests and scripts:
    ``prepared(cfg).context("membership", "blackbox_shadow")`` is what that attack gets in a run."""
    from mldoctor_bench import ui
    from mldoctor_bench.cell.lifecycle import read
    from mldoctor_bench.timings import Timings

    target = target or TrainedTarget()
    p = plan(cfg, target.architectures())
    p.cell_dir.mkdir(parents=True, exist_ok=True)
    timings = Timings()
    data, splits = read(p, target, timings)
    with ui.progress_bars() as bars:
        return prepare(p, data, splits, target, bars, timings)[0]
