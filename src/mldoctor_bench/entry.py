"""What ``mldoctor-bench`` and ``mldoctor-assess`` share as Hydra command-line apps: reading the command
line before Hydra starts, refusing bad input in one line before any folder is made, running one cell
as a Hydra job, exit codes, Ctrl-C, and finding the cells of a sweep whose attacks failed.

A :class:`Command` says what differs between the two: the config, how a composed config becomes a
cell's config and target, what is checked before Hydra starts, and what happens after the cell
(:class:`mldoctor_bench.cli.BenchCommand`, :class:`mldoctor_bench.assess.AssessCommand`).
"""

from __future__ import annotations

import difflib
import os
import shutil
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Callable, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mldoctor_bench.cell import ConfigError, Outcome, Target, run_cell
from mldoctor_bench.cellfiles import CELLS, POINTER, CellFiles, pointed_cells, pointer_payload
from mldoctor_bench.data import DataUnavailableError
from mldoctor_bench.files import atomic_write_text
from mldoctor_bench.members import MembersError
from mldoctor_bench.owner.model import OwnerModelError
from mldoctor_bench.registry import UnknownEntryError
from mldoctor_bench.version import __version__

EXIT_BAD_INPUT = 2  # nothing ran: a setting, a name or the data is wrong
EXIT_ATTACK_FAILED = 3  # everything ran, but some attack failed (its cell is not done; rerun retries it)
EXIT_GATE = 4  # mldoctor-assess: a verdict reached assess.fail_on (the report is written)
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it
GROUPS = ("dataset", "arch", "attack", "threat_model", "defense", "profile", "experiment")
MULTIRUN_FLAGS = ("-m", "--multirun")
INFO_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "--info", "--resolve")  # print something, run nothing
BAD_INPUT = (ConfigError, DataUnavailableError, UnknownEntryError, OwnerModelError, MembersError)


class Command:
    """One command line app: :attr:`prog` (its name in messages) and :attr:`config` (its primary
    config); subclasses say how a composed config becomes a cell (:meth:`cell`) and may add refusals
    and what follows the cell."""

    prog: str
    config: str

    def cell(self, cfg: DictConfig) -> tuple[DictConfig, Target]:
        """The cell's config and its target, from the composed config; may refuse (``BAD_INPUT``)."""
        raise NotImplementedError

    def checks(self, cfg: DictConfig) -> None:
        """More refusals before Hydra starts, on the cell's config (:meth:`cell`'s)."""

    def refuse(self, argv: list[str]) -> Optional[str]:
        """The one-line refusal of the command line itself, if any."""
        return None

    def after(self, cfg: DictConfig, outcome: Outcome) -> None:
        """What follows the cell (a report, a release gate)."""

    def fail(self, message: str) -> None:
        """One plain line (no console wrapping, so it reads and pastes whole in logs), exit code 2."""
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def run_job(command: Command, cfg: DictConfig) -> str:
    """Run one cell as a Hydra job; in a multirun, leave a pointer to its table for the sweep's
    merged table. Bad input: one line, exit 2, and (a single run) no folder left behind; Ctrl-C: one
    line, exit 130; a failed attack in a single run: exit 3 once the rest has run."""
    hydra_cfg = HydraConfig.get()
    try:
        cfg, target = command.cell(cfg)
        outcome = run_cell(cfg, target)
    except KeyboardInterrupt:
        interrupted(command.prog, cfg)
    except BAD_INPUT as exc:
        if hydra_cfg.mode == RunMode.RUN:  # nothing ran: leave no folder behind
            remove_run_folder(Path(hydra_cfg.runtime.output_dir), Path(str(cfg.results_dir)))
        command.fail(str(exc))
    atomic_write_text(Path(hydra_cfg.runtime.output_dir) / POINTER, pointer_payload(CellFiles(outcome.cell_dir)))
    command.after(cfg, outcome)
    if outcome.failed and hydra_cfg.mode == RunMode.RUN:
        sys.exit(EXIT_ATTACK_FAILED)
    return str(outcome.table)


def interrupted(prog: str, cfg: DictConfig) -> None:
    """One line on Ctrl-C, saying what was kept and how to resume, and exit code 130 (no traceback)."""
    from mldoctor_bench import ui

    ui.console.file.flush()
    cache = f" and trained models in {cfg.cache.dir}" if cfg.cache.enabled else ""
    print(
        f"{prog}: interrupted; finished cells are kept in {Path(str(cfg.results_dir)) / CELLS}{cache}; "
        "run the same command again to resume (finished cells are skipped, stored models reused, the "
        "interrupted cell redone)",
        file=sys.stderr,
        flush=True,
    )
    # At once, without waiting for training threads to finish their models: stored models are written
    # atomically (a temporary file, then a rename), so nothing half-written is ever read back.
    os._exit(EXIT_INTERRUPTED)


def remove_run_folder(run_dir: Path, results_dir: Path) -> None:
    """Delete Hydra's folder of a run that did nothing, and the parents that are left empty, up to
    and including ``results_dir``."""
    shutil.rmtree(run_dir, ignore_errors=True)
    stop = results_dir.expanduser().resolve().parent
    folder = run_dir.resolve().parent
    while folder != stop and folder != folder.parent and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


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
    close = [o for o in options if o.startswith(value)][:1] or difflib.get_close_matches(
        value, options, n=1, cutoff=0.5
    )
    hint = f"did you mean {group}={close[0]}? " if close else ""
    return f"unknown {group} {value!r}; {hint}choose from: {', '.join(options)}"


def overrides_of(argv: list[str]) -> list[str]:
    """The ``key=value`` overrides of a command line (flags and their arguments left out)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in (
            "-cn",
            "-cp",
            "-cd",
            "--config-name",
            "--config-path",
            "--config-dir",
            "-c",
            "--cfg",
            "-p",
            "--package",
            "--info",
        ):
            skip = arg not in ("--info",)
        elif not arg.startswith("-") and "=" in arg:
            out.append(arg)
    return out


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


FREE_FORM = ("model.kwargs",)  # settings whose value is a dict of the owner's own keys


def dotted_keys(node: object, prefix: str = "") -> list[str]:
    """Every dotted key of a config container (nested dicts descended)."""
    if not isinstance(node, dict):
        return []
    out = []
    for key, value in node.items():
        out += [f"{prefix}{key}", *dotted_keys(value, f"{prefix}{key}.")]
    return out


def unknown_setting_error(config_name: str, overrides: list[str]) -> Optional[str]:
    """The one-line message for the first ``key=value`` (or ``+key=value``) override whose key the
    config does not have, with the nearest key it does have. Hydra's own message suggests ``+key``,
    which adds the key and then runs as if it were not given."""
    keys = [o.split("=", 1)[0] for o in overrides]
    groups = [o for o, k in zip(overrides, keys) if k.lstrip("+~") in GROUPS]
    plain = [k.lstrip("+") for k in keys if not k.startswith("~") and k.lstrip("+") not in GROUPS]
    plain = [k for k in plain if not k.startswith("hydra")]
    if not plain:
        return None
    try:
        known = dotted_keys(OmegaConf.to_container(compose_checked(config_name, groups), resolve=False))
    except ConfigError:  # a sweep over a group's options composes per job: checked there by Hydra
        return None
    for key in plain:
        if key in known or any(key.startswith(f"{free}.") for free in FREE_FORM):
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6) or difflib.get_close_matches(
            key.rsplit(".", 1)[-1], known, n=1, cutoff=0.8
        )
        hint = f"did you mean {close[0]}=? " if close else ""
        return f"unknown setting {key!r}; {hint}(--cfg job prints every setting)"
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
        out.append(
            f"{key}={os.path.expanduser(value)}" if eq and not arg.startswith("-") and value.startswith("~") else arg
        )
    return out


def results_dir_of(overrides: list[str]) -> str:
    given = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "results_dir"]
    return given[-1] if given else "results"


def preflight(command: Command, argv: list[str]) -> None:
    """Fail fast, before Hydra makes any folder: the command line's own refusals, unknown group
    options and an unusable results folder for any run, and for a single run every setting of the
    composed config (the cell's planning checks and the command's)."""
    from mldoctor_bench.cell.plan import plan, writable_folder

    overrides = overrides_of(argv)
    message = (
        command.refuse(argv)
        or group_option_error(overrides)
        or (None if any(a in INFO_FLAGS for a in argv) else unknown_setting_error(command.config, overrides))
    )
    if message:
        command.fail(message)
    if any(a in INFO_FLAGS for a in argv):
        return
    try:
        writable_folder(results_dir_of(overrides), "results_dir")
        if any(a in MULTIRUN_FLAGS for a in argv):
            return  # each job of a sweep is planned (and refused in one line) when it runs
        cfg, target = command.cell(compose_checked(command.config, overrides))
        plan(cfg, target.architectures())
        command.checks(cfg)
    except BAD_INPUT as exc:
        command.fail(str(exc))


def failed_cells(results_dir: str, since: float) -> list[str]:
    """Cells of the sweeps started under ``results_dir`` since ``since`` (a time stamp) whose attacks
    failed: jobs of any launcher leave a pointer to their cell, which has a table but no ``done.json``."""
    sweeps = Path(results_dir).expanduser() / "hydra" / "sweeps"
    recent = [d for d in sweeps.glob("*/") if d.stat().st_mtime >= since] if sweeps.is_dir() else []
    return sorted(str(c.dir) for d in recent for c in pointed_cells(d) if c.table.exists() and not c.is_done())


def version_text(prog: str) -> str:
    from mldoctor_bench.provenance import code_version

    return f"{prog} {__version__} (code {code_version()})"


def main(command: Command, app: Callable[[], None]) -> None:
    """A console script: ``--version``, pre-flight, then Hydra's ``app``; after a multirun, exit code 3
    when any of its cells has a failed attack."""
    sys.argv[1:] = argv = expand_home(sys.argv[1:])
    if "--version" in argv or "-V" in argv:
        print(version_text(command.prog))
        return
    preflight(command, argv)
    started = time.time()
    app()
    if any(a in MULTIRUN_FLAGS for a in argv):
        failed = failed_cells(results_dir_of(overrides_of(argv)), started)
        if failed:
            print(
                f"{command.prog}: {len(failed)} cell(s) with failed attacks; rerun the same command to retry "
                f"them: {', '.join(failed)}",
                file=sys.stderr,
            )
            sys.exit(EXIT_ATTACK_FAILED)
