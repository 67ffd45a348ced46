"""The ``mldoctor-bench`` command: a thin Hydra entry point that hands the config to the runner.

Before Hydra starts (and so before it creates any folder), :func:`preflight` checks what can be
checked from the command line alone: config-group options (with a "did you mean"), and for a single
run the whole composed configuration (types, ranges, names) through the runner's own planning.
Every such failure is one line on stderr and exit code 2. A cell whose attacks failed is written
but not marked done, and the command exits with code 3 once the rest of the sweep has run.
"""

from __future__ import annotations

import difflib
import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mldoctor_bench import __version__
from mldoctor_bench.cellfiles import POINTER, CellFiles, pointer_payload
from mldoctor_bench.data import DataUnavailableError
from mldoctor_bench.files import atomic_write_text
from mldoctor_bench.registry import UnknownEntryError
from mldoctor_bench.runner import ConfigError, run_cell
from mldoctor_bench.sweep import FAILED_CELLS

EXIT_BAD_INPUT = 2  # nothing ran: a setting, a name or the data is wrong
EXIT_ATTACK_FAILED = 3  # everything ran, but some attack failed (its cell is not done; rerun retries it)
GROUPS = ("dataset", "arch", "attack", "threat_model", "defense", "profile", "experiment")


def fail(message: str) -> None:
    """One plain line (no console wrapping, so it reads and pastes whole in logs), exit code 2."""
    print(f"mldoctor-bench: error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it


def interrupted(prog: str, cfg: DictConfig) -> None:
    """One line on Ctrl-C, saying what was kept and how to resume, and exit code 130 (no traceback)."""
    from mldoctor_bench import ui

    ui.console.file.flush()
    cache = f" and trained models in {cfg.cache.dir}" if cfg.cache.enabled else ""
    print(f"{prog}: interrupted; finished cells are kept in {Path(str(cfg.results_dir)) / 'cells'}{cache}; "
          "run the same command again to resume (finished cells are skipped, stored models reused, the "
          "interrupted cell redone)", file=sys.stderr, flush=True)
    # At once, without waiting for training threads to finish their models: stored models are written
    # atomically (a temporary file, then a rename), so nothing half-written is ever read back.
    os._exit(EXIT_INTERRUPTED)


def run_job(cfg: DictConfig) -> str:
    """Run one cell; in a multirun, leave a pointer to its table for the sweep's merged table.

    A plain module-level function (decorated below, not in place) so that launchers which pickle
    the task, such as submitit for SLURM, pickle it by reference."""
    hydra_cfg = HydraConfig.get()
    try:
        outcome = run_cell(cfg)
    except KeyboardInterrupt:
        interrupted("mldoctor-bench", cfg)
    except (ConfigError, DataUnavailableError, UnknownEntryError) as exc:
        if hydra_cfg.mode == RunMode.RUN:  # nothing ran: leave no folder behind
            remove_run_folder(Path(hydra_cfg.runtime.output_dir), Path(str(cfg.results_dir)))
        fail(str(exc))
    atomic_write_text(Path(hydra_cfg.runtime.output_dir) / POINTER, pointer_payload(CellFiles(outcome.cell_dir)))
    if outcome.failed:
        FAILED_CELLS.add(str(outcome.cell_dir))
        if hydra_cfg.mode == RunMode.RUN:
            sys.exit(EXIT_ATTACK_FAILED)
    return str(outcome.table)


def remove_run_folder(run_dir: Path, results_dir: Path) -> None:
    """Delete Hydra's folder of a run that did nothing, and the parents that are left empty, up to
    and including ``results_dir``."""
    shutil.rmtree(run_dir, ignore_errors=True)
    stop = results_dir.expanduser().resolve().parent
    folder = run_dir.resolve().parent
    while folder != stop and folder != folder.parent and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


app = hydra.main(version_base="1.3", config_path="conf", config_name="config")(run_job)


def group_options(group: str) -> list[str]:
    """The options of a config group: the yaml files shipped in ``conf/<group>/``."""
    folder = resources.files("mldoctor_bench.conf").joinpath(group)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def override_values(value: str) -> list[str]:
    """The option names in an override's value: ``a``, ``[a,b]`` or a sweep ``a,b``."""
    if "(" in value or "$" in value:  # sweep functions (range, choice, glob) and interpolations
        return []
    return [v.strip() for v in value.strip("[]").split(",") if v.strip()]


def unknown_option(group: str, value: str) -> Optional[str]:
    """The one-line message for an option ``value`` that ``group`` does not have, else ``None``."""
    options = group_options(group)
    if value in options:
        return None
    close = [o for o in options if o.startswith(value)][:1] or difflib.get_close_matches(value, options, n=1, cutoff=0.5)
    hint = f"did you mean {group}={close[0]}? " if close else ""
    return f"unknown {group} {value!r}; {hint}choose from: {', '.join(options)}"


def overrides_of(argv: list[str]) -> list[str]:
    """The ``key=value`` overrides of a command line (flags and their arguments left out)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-cn", "-cp", "-cd", "--config-name", "--config-path", "--config-dir", "-c", "--cfg",
                     "-p", "--package", "--info"):
            skip = arg not in ("--info",)
        elif not arg.startswith("-") and "=" in arg:
            out.append(arg)
    return out


MULTIRUN_FLAGS = ("-m", "--multirun")
INFO_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "--info", "--resolve")  # print something, run nothing


def group_option_error(overrides: list[str]) -> Optional[str]:
    """The one-line message for the first override that names an option its config group lacks."""
    for override in overrides:
        key, value = override.split("=", 1)
        group = key.lstrip("+~")
        if group in GROUPS:
            for name in override_values(value):
                message = unknown_option(group, name)
                if message:
                    return message
    return None


def compose_checked(config_name: str, overrides: list[str]) -> DictConfig:
    """The config ``config_name`` composed with ``overrides`` (Hydra's own keys left out), as a
    run would see it; a config Hydra or OmegaConf refuses raises :class:`ConfigError` in one line."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    plain = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
            return compose(config_name, overrides=plain)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(" ".join(str(exc).split())) from None


def expand_home(argv: list[str]) -> list[str]:
    """``key=~/path`` overrides with the home folder written out: the shell leaves a ``~`` after ``=``
    alone, and Hydra's override grammar refuses it."""
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        out.append(f"{key}={os.path.expanduser(value)}" if eq and not arg.startswith("-") and value.startswith("~")
                   else arg)
    return out


def preflight(argv: list[str]) -> None:
    """Fail fast, before Hydra makes any folder: unknown group options and an unusable results folder
    for any run, and for a single run every setting of the composed config (the runner's planning
    checks)."""
    from mldoctor_bench.runner import writable_folder

    overrides = overrides_of(argv)
    message = group_option_error(overrides)
    if message:
        fail(message)
    if any(a in INFO_FLAGS for a in argv):
        return
    if any(a in MULTIRUN_FLAGS for a in argv):
        given = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "results_dir"]
        try:
            writable_folder(given[-1] if given else "results", "results_dir")
        except ConfigError as exc:
            fail(str(exc))
        return  # each job of a sweep is planned (and refused in one line) when it runs
    from mldoctor_bench.runner import plan

    try:
        plan(compose_checked("config", overrides))
    except ConfigError as exc:
        fail(str(exc))


def version_text() -> str:
    from mldoctor_bench.provenance import code_version

    return f"mldoctor-bench {__version__} (code {code_version()})"


def main() -> None:
    """Console-script entry point."""
    sys.argv[1:] = argv = expand_home(sys.argv[1:])
    if "--version" in argv or "-V" in argv:
        print(version_text())
        return
    preflight(argv)
    app()
    if FAILED_CELLS:
        print(f"mldoctor-bench: {len(FAILED_CELLS)} cell(s) with failed attacks; rerun the same command to retry "
              f"them: {', '.join(sorted(FAILED_CELLS))}", file=sys.stderr)
        sys.exit(EXIT_ATTACK_FAILED)


if __name__ == "__main__":
    main()
