"""The ``mldoctor-assess`` command: the whole risk assessment of an owner's own trained model.

The owner's model is the target and is never retrained (:mod:`mldoctor_bench.owner`); only the
attacker's models are trained, with the owner's architecture where the threat model grants it. The
run ends with ``report.md`` and ``report.html`` in the cell's ``report/`` folder, and exit code 4
when a verdict reaches ``assess.fail_on``. Before the report, each output-time defense of
``assess.output_defenses`` is measured on the owner's model: a cell of its own with the same
selection's black-box attacks, the outputs released through the defense (the owner's model is never
retrained; the attacker's models come from the store where the defense leaves them unchanged);
``releases.json`` in the cell's folder names those cells for the report. Refusals are one line on
stderr with exit code 2, before any training: weights and architecture before Hydra starts, the
members file and the class count once the data is read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mldoctor_bench import entry, ui
from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.cell import Outcome, run_cell
from mldoctor_bench.cell.plan import selected
from mldoctor_bench.defense_catalog import OUTPUT
from mldoctor_bench.defenses import DEFENSES
from mldoctor_bench.files import atomic_write_text
from mldoctor_bench.owner import OwnerTarget, assess_settings, owner_config, read_owner
from mldoctor_bench.owner.settings import Owner, check_folder_members
from mldoctor_bench.threat_catalog import THREAT_MODELS, WHITEBOX

PROG = "mldoctor-assess"


class AssessCommand(entry.Command):
    """The owner's assessment: the cell's config carries the owner's architecture and the digests of
    the weights and members, its target is the owner's model (:class:`OwnerTarget`); the report and
    the release gate follow the cell. The weights are read once per process (pre-flight and the run
    share them)."""

    prog, config = PROG, "assess"

    def __init__(self) -> None:
        self.read: dict[str, Owner] = {}  # by what identifies the owner's files (:meth:`owner`)

    def owner(self, cfg: DictConfig) -> Owner:
        """The owner's model, read once for the same ``model`` section, members and files on disk."""
        files = [Path(str(p)).expanduser() for p in (cfg.model.get("weights"), cfg.get("members")) if p]
        stamp = [(str(f.resolve()), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.is_file()]
        key = json.dumps([OmegaConf.to_container(cfg.model, resolve=True), str(cfg.get("members")), stamp], default=str)
        if key not in self.read:
            self.read[key] = read_owner(cfg)
        return self.read[key]

    def cell(self, cfg: DictConfig) -> tuple[DictConfig, OwnerTarget]:
        """The cell's config (the owner's architecture, the weights' and members' digests) and target."""
        gate = assess_settings(cfg)
        owner = self.owner(cfg)
        cfg = owner_config(cfg, owner)
        return cfg, OwnerTarget(owner, cfg, gate)

    def checks(self, cfg: DictConfig) -> None:
        """Before Hydra starts: the weights against the architecture where it is known without the
        data, and a folder's members file against its file list."""
        owner = self.owner(cfg)
        owner.check_early(cfg)
        check_folder_members(cfg, owner)

    def refuse(self, argv: list[str]) -> Optional[str]:
        if any(o.split("=", 1)[0].lstrip("+~") == "arch" for o in entry.overrides_of(argv)):
            return (
                "the architecture is the owner's: use model.arch=NAME or "
                "model.factory=package.module:callable, not arch="
            )
        if any(a in entry.MULTIRUN_FLAGS for a in argv):
            return "one model is assessed per run: leave out -m (run the command once per model or seed)"
        return None

    def after(self, cfg: DictConfig, outcome: Outcome) -> None:
        """The risk report; then the release gate: exit code 4 when a family reaches assess.fail_on, or
        is incomplete (some of its attacks did not run) without assess.allow_incomplete."""
        from mldoctor_bench.report.cell_verdicts import VERDICTS, failing
        from mldoctor_bench.report.owner import write_owner_report

        self.measure_releases(cfg, outcome)
        md, html = write_owner_report(outcome.cell_dir)
        print("\n".join(ui.labelled("risk report:", [str(md), str(html)])), flush=True)
        if outcome.failed:
            sys.exit(entry.EXIT_ATTACK_FAILED)
        gate, verdicts = assess_settings(cfg), outcome.cell_dir / VERDICTS
        if not gate.fail_on or not verdicts.exists():
            return
        over = failing(json.loads(verdicts.read_text()), gate.fail_on, gate.allow_incomplete)
        if over:
            print(
                f"{PROG}: {'; '.join(over)} (assess.fail_on={gate.fail_on}; see {verdicts}); "
                f"exit code {entry.EXIT_GATE}",
                file=sys.stderr,
            )
            sys.exit(entry.EXIT_GATE)

    def measure_releases(self, cfg: DictConfig, outcome: Outcome) -> None:
        """Each output-time defense of ``assess.output_defenses`` on the owner's model: the selection's
        black-box attacks rerun against the outputs that defense releases, one cell each; their folders
        go to ``releases.json`` (a defense whose cell failed is recorded with the reason)."""
        names = assess_settings(cfg).output_defenses
        attacks, threat_models = blackbox_selection(cfg)
        if not names or str(cfg.defense.name) != "none" or not threat_models:
            return
        from hydra import compose

        from mldoctor_bench.report.owner_releases import RELEASES

        kept = [o for o in HydraConfig.get().overrides.task if o.split("=", 1)[0].lstrip("+~") not in SELECTION]
        cells = {}
        for i, name in enumerate(names, 1):
            print(f"{PROG}: output-time defense {i} of {len(names)} on your model: {name}", flush=True)
            release = compose(
                "assess",
                overrides=[
                    *kept,
                    f"defense={name}",
                    f"attack=[{','.join(attacks)}]",
                    f"threat_model=[{','.join(threat_models)}]",
                ],
            )
            try:
                mine = run_cell(*self.cell(release))
                cells[name] = {"cell": mine.cell_dir.name, "failed": bool(mine.failed)}
            except KeyboardInterrupt:
                entry.interrupted(PROG, release)  # what was kept and how to resume; exit 130
            except Exception as exc:  # noqa: BLE001 - the assessment stands; the report says what failed
                cells[name] = {"cell": None, "failed": True, "reason": f"{type(exc).__name__}: {exc}"}
        atomic_write_text(outcome.cell_dir / RELEASES, json.dumps(cells, indent=2) + "\n")


SELECTION = ("defense", "attack", "threat_model")  # the keys a release's cell sets itself


def blackbox_selection(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """The selected threat models without white-box access (an output-time defense changes only what
    is released) and the selected attacks that run under one of them."""
    threat_models = [t for t in selected(cfg, "threat_model") if THREAT_MODELS.get(t).access != WHITEBOX]
    attacks = [a for a in selected(cfg, "attack") if set(ATTACKS.get(a).threat_models) & set(threat_models)]
    return attacks, threat_models


COMMAND = AssessCommand()


def run_job(cfg: DictConfig) -> str:
    """One Hydra job (module-level, so that launchers pickle it by reference)."""
    return entry.run_job(COMMAND, cfg)


app = hydra.main(version_base="1.3", config_path="conf", config_name="assess")(run_job)


def assess_options() -> str:
    """The config groups' options that ``mldoctor-assess`` accepts (one line each): not ``arch``
    (the architecture is the owner's), nor training-time defenses or the audit, nor experiments."""
    allowed = {
        "attack": [a for a in entry.group_options("attack") if "auditor" not in ATTACKS.get(a).threat_models],
        "dataset": entry.group_options("dataset"),
        "defense": [d for d in entry.group_options("defense") if d == "none" or DEFENSES.get(d).kind == OUTPUT],
        "profile": entry.group_options("profile"),
        "threat_model": [t for t in entry.group_options("threat_model") if THREAT_MODELS.get(t).knowledge != "owner"],
    }
    return "\n".join(f"{group}: {', '.join(options)}" for group, options in allowed.items()) + "\n"


def print_help() -> None:
    """``--help``: the app's help template with the groups it accepts (Hydra's would list them all)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
        cfg = compose("assess", return_hydra_config=True)
    print(str(cfg.hydra.help.template).replace("$ASSESS_CONFIG_GROUPS", assess_options()))


def main() -> None:
    """Console-script entry point."""
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print_help()
        return
    entry.main(COMMAND, app)


if __name__ == "__main__":
    main()
