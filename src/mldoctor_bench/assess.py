"""The ``mldoctor-assess`` command: the whole risk assessment of an owner's own trained model.

The owner's model is the target: nothing retrains it. ``model.weights`` (safetensors or a plain state
dict, never unpickled code) is loaded into ``model.arch`` (a registry architecture) or the owner's
``model.factory``; ``members=FILE`` names its training examples. The cell's partition puts evaluation
members (from the members file) and evaluation non-members, the attacker's shadow data and the
evaluators' heldout data (all from the other examples) in disjoint pools; only the attacker's models
are trained, with the owner's architecture where the threat model grants it. The run ends with
``report.md`` and ``report.html`` in the cell's ``report/`` folder.

Refusals are one line on stderr with exit code 2, before any training: weights and architecture
(format, pickles, the first mismatched tensor) before Hydra starts, the members file and the class
count once the data is loaded.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from mldoctor_bench import cli
from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.data import DataUnavailableError, ImageData
from mldoctor_bench.data.splits import OWNER_HELDOUT_PER_CLASS, PartitionError, owner_partition, partition
from mldoctor_bench.defenses import DEFENSES
from mldoctor_bench.defenses.base import OUTPUT
from mldoctor_bench.members import MembersError, entries, member_rows, read_members
from mldoctor_bench.models import ARCHS
from mldoctor_bench.owner_model import (OwnerClassifier, OwnerModelError, build_owner_model, check_state_dict,
                                        load_checked, load_weights)
from mldoctor_bench.provenance import stable_hash
from mldoctor_bench.registry import UnknownEntryError
from mldoctor_bench.runner import ConfigError, GivenTarget, Plan, run_cell
from mldoctor_bench.settings import SettingsError, parse, setting
from mldoctor_bench.threat_catalog import PARTIAL, THREAT_MODELS
from mldoctor_bench import ui

PROG = "mldoctor-assess"
MEMBERSHIP = "membership"  # the family's attacks are named membership*
OWNER_ARCH = "owner-"  # the owner's architecture is entered in the registry as owner-<digest of its identity>
GREY = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601 luma, as Pillow's convert("L")


def fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(cli.EXIT_BAD_INPUT)


@dataclass(frozen=True, kw_only=True)
class Normalize:
    """The normalisation the owner's model was trained with, per channel on the [0, 1] pixel scale."""

    mean: Optional[list[float]] = setting(None, example="[0.485,0.456,0.406]")
    std: Optional[list[float]] = setting(None, min=0, min_exclusive=True, example="[0.229,0.224,0.225]")


@dataclass(frozen=True, kw_only=True)
class ModelSection:
    """The ``model`` keys (``model.kwargs`` is passed to the factory as it is)."""

    weights: Optional[str] = setting(None, example="model.safetensors")
    arch: Optional[str] = setting(None, example="resnet18")
    factory: Optional[str] = setting(None, example="my_models.nets:make_net")
    num_classes: Optional[int] = setting(None, min=2, example=10)
    image_size: Optional[int] = setting(None, min=8, example=32)
    in_channels: Optional[int] = setting(None, choices=(1, 3), example=3)
    normalize: Normalize = field(default_factory=Normalize)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def factory_source(factory: Optional[str]) -> Optional[str]:
    """A digest of the factory module's source file, so an edited architecture is a new one."""
    if not factory:
        return None
    import importlib.util

    try:
        spec = importlib.util.find_spec(factory.partition(":")[0])
    except (ImportError, ValueError):
        return None
    origin = Path(spec.origin) if spec and spec.origin and spec.origin != "built-in" else None
    return file_digest(origin) if origin and origin.is_file() else None


@dataclass
class Owner:
    """What the owner gave, checked: the model settings, the weights and the members file."""

    model: ModelSection
    kwargs: dict
    weights: Path
    state: dict
    members: Optional[Path]
    arch_name: str  # the registry name the owner's architecture is entered under for this run

    def build(self, in_channels: int, num_classes: int, image_size: int) -> OwnerClassifier:
        """The owner's architecture, untrained, as the benchmark queries its models."""
        inner = build_owner_model(self.model.arch, self.model.factory, self.kwargs, num_classes=num_classes,
                                  image_size=image_size, in_channels=in_channels)
        return OwnerClassifier(inner, num_classes, in_channels, self.model.normalize.mean, self.model.normalize.std)

    def trained(self, in_channels: int, num_classes: int, image_size: int) -> OwnerClassifier:
        """The owner's trained model (eval mode), its weights checked tensor by tensor first."""
        wrapped = self.build(in_channels, num_classes, image_size)
        load_checked(wrapped.model, self.state, self.source)
        return wrapped.eval()

    @property
    def source(self) -> str:
        """How refusals name the weights."""
        return f"weights {self.weights.name}"

    def check_early(self, cfg: DictConfig) -> None:
        """Match the weights to the architecture before the data is read, where the architecture does
        not depend on it: always for a factory (built from ``model.kwargs`` alone), for a registry
        architecture when the image size, channels and classes are all given."""
        m = self.model
        if m.factory is not None:
            model = build_owner_model(None, m.factory, self.kwargs, num_classes=0, image_size=0, in_channels=0)
            check_state_dict(model, self.state, self.source)
            return
        size = m.image_size or cfg.data.get("image_size")
        channels = m.in_channels or cfg.data.get("in_channels")
        if size is not None and channels is not None and m.num_classes is not None:
            self.trained(int(channels), m.num_classes, int(size))


EXIT_GATE = 4  # a verdict reached assess.fail_on: the report is written, the release should wait


@dataclass(frozen=True, kw_only=True)
class AssessSection:
    """``assess.*``: what the command does with the verdicts."""

    fail_on: Optional[str] = setting(None, choices=("moderate", "high"), example="moderate")


def gate_level(cfg: DictConfig) -> Optional[str]:
    """``assess.fail_on``, checked; raise :class:`ConfigError`."""
    try:
        return parse(AssessSection, cfg.get("assess") or {}, "assess").fail_on
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None


def read_owner(cfg: DictConfig) -> Owner:
    """Check the ``model`` section and ``members``, read the weights (nothing in them runs) and
    enter the owner's architecture in the registry; raise :class:`OwnerModelError`, :class:`MembersError`
    or :class:`ConfigError`."""
    node = OmegaConf.to_container(cfg.model, resolve=True)
    kwargs = node.pop("kwargs", None) or {}
    try:
        section = parse(ModelSection, node, "model")
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    if not section.weights:
        raise ConfigError("model.weights is missing: give the trained model's weights, e.g. "
                          "model.weights=model.safetensors (a safetensors file or a saved state dict)")
    built_in = ", ".join(a for a in ARCHS.names() if not a.startswith(OWNER_ARCH))
    if (section.arch is None) == (section.factory is None):
        raise ConfigError(f"name the model's architecture once: model.arch=NAME (one of {built_in}) "
                          "or model.factory=package.module:callable")
    if section.arch is not None and (section.arch not in ARCHS or section.arch.startswith(OWNER_ARCH)):
        raise ConfigError(f"unknown model.arch {section.arch!r}; choose one of: {built_in}, "
                          "or give your own with model.factory=package.module:callable")
    defense = DEFENSES.get(str(cfg.defense.name))
    if defense.name != "none" and defense.kind != OUTPUT:
        raise ConfigError(f"defense={defense.name} changes training, and the owner's model is trained already; "
                          "assess it as released (defense=none) or with an output-time defense (output_topk, "
                          "output_rounding, output_labels_only)")
    audits = [a for a in cfg.attack.keys() if "auditor" in ATTACKS.get(a).threat_models]
    if audits:
        raise ConfigError(f"attack={audits[0]} retrains the target with canaries, which the owner's trained model "
                          "cannot be; leave it out of attack=")
    weights = Path(section.weights).expanduser().resolve()
    state = load_weights(weights)
    members = None
    if cfg.get("members") is not None:
        members = Path(str(cfg.members)).expanduser().resolve()
        entries(members)  # a missing or empty file is refused here, before the data is read
    identity = {"arch": section.arch, "factory": section.factory, "kwargs": kwargs,
                "source": factory_source(section.factory), "normalize": [section.normalize.mean, section.normalize.std]}
    owner = Owner(section, kwargs, weights, state, members, f"{OWNER_ARCH}{stable_hash(identity, length=8)}")
    ARCHS.define(owner.arch_name, owner.build)
    return owner


def owner_config(cfg: DictConfig, owner: Owner) -> DictConfig:
    """``cfg`` with the owner's architecture as the cell's, the data sized for the model, and the
    weights' and members' contents in the cell's identity (a retrained model is a new cell)."""
    cfg = cfg.copy()
    m = owner.model
    with open_dict(cfg):
        cfg.arch = {"name": owner.arch_name}
        if m.image_size is not None:
            cfg.data.image_size = m.image_size
        if m.in_channels is not None and "in_channels" in cfg.data:
            cfg.data.in_channels = m.in_channels
        cfg.owner = {"weights_sha256": file_digest(owner.weights),
                     "members_sha256": file_digest(owner.members) if owner.members else None}
    return cfg


def with_channels(data: ImageData, channels: int) -> ImageData:
    """``data`` with ``channels`` channels: colour to grey by luma, grey repeated to colour."""
    if data.channels == channels:
        return data
    if channels == 1:
        grey = (data.images.float() * GREY.view(1, 3, 1, 1)).sum(1, keepdim=True).round().clamp(0, 255)
        images = grey.to(torch.uint8)
    else:
        images = data.images.repeat(1, channels, 1, 1)
    return replace(data, images=images)


def check_classes(model: OwnerClassifier, data: ImageData, expected: Optional[int]) -> None:
    """Refuse a model whose outputs are not one per class of ``data`` (or of ``model.num_classes``)."""
    from mldoctor_bench.inference import predict_logits

    if expected is not None and expected != data.num_classes:
        raise ConfigError(f"model.num_classes={expected} but dataset {data.name} has {data.num_classes} classes; "
                          "assess the model on data with its classes")
    try:
        logits = predict_logits(model, data.images[:2])
    except Exception as exc:  # the owner's forward pass: any error is the owner's to fix
        raise ConfigError(f"the model fails on a batch of images of shape {tuple(data.images[:2].shape)} "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); set model.image_size and "
                          "model.in_channels to what it takes") from None
    if logits.dim() != 2 or logits.shape[1] != data.num_classes:
        raise ConfigError(f"the model gives outputs of shape {tuple(logits.shape[1:])} per image but dataset {data.name} "
                          f"has {data.num_classes} classes; assess it on data with one class per output "
                          "(for dataset=folder, one subfolder per class)")


def check_folder_members(cfg: DictConfig, owner: Owner) -> None:
    """For ``dataset=folder``, check the members file against the folder's file list before any
    image is decoded (the same check runs again on the loaded data)."""
    if owner.members is None or str(cfg.dataset.name) != "folder":
        return
    from mldoctor_bench.data.folder import find_classes, list_images

    root = Path(str(cfg.data.root)).expanduser().resolve()
    files = [f for f, _ in list_images(root, find_classes(root))]
    member_rows(owner.members, len(files), files, "folder")


def given_target(owner: Owner, cfg: DictConfig) -> GivenTarget:
    """The owner's model as the cell's target, with the owner's partition and refusals."""
    channels = owner.model.in_channels

    def adapt(data: ImageData) -> ImageData:
        data = with_channels(data, channels) if channels else data
        model = owner.trained(data.channels, owner.model.num_classes or data.num_classes, data.image_size)
        check_classes(model, data, owner.model.num_classes)
        target.model = model  # built here, once the data's channels and size are known
        return data

    def cut(p: Plan, data: ImageData):
        needs_heldout = any(ATTACKS.get(a).uses_heldout for a in p.attacks)
        sizes = {"heldout_size": p.data.heldout_size, "dataset": data.name}
        try:
            if owner.members is None:
                return partition(len(data), int(p.cfg.seed), p.data.quarter_size, reserve=p.data.reserve,
                                 min_heldout=data.num_classes if needs_heldout else 0, **sizes)
            members = read_members(owner.members, data)
            target.manifest["members_listed"] = len(members)
            return owner_partition(len(data), members, int(p.cfg.seed), p.data.quarter_size, **sizes,
                                   min_heldout=OWNER_HELDOUT_PER_CLASS * data.num_classes if needs_heldout else 0)
        except (MembersError, PartitionError) as exc:
            raise ConfigError(str(exc)) from None

    def unavailable(attack: str, tm: str) -> Optional[str]:
        if owner.members is not None:
            return None
        if attack.startswith(MEMBERSHIP):
            return "no members file: membership inference needs the model's training examples (members=FILE)"
        if THREAT_MODELS.get(tm).knowledge == PARTIAL:
            return ("no members file: the partial threat model's attacker holds known training examples "
                    "(members=FILE)")
        return None

    manifest = {"dataset": str(cfg.dataset.name), "arch": owner.arch_name, "weights": str(owner.weights),
                "model": OmegaConf.to_container(cfg.model, resolve=True),
                "members": str(owner.members) if owner.members else None, "trained_on": "elsewhere (the owner's model)"}
    target = GivenTarget(torch.nn.Identity(), adapt, cut, unavailable, owner.members is not None, manifest)
    return target


def prepare(cfg: DictConfig) -> tuple[DictConfig, GivenTarget]:
    owner = read_owner(cfg)
    cfg = owner_config(cfg, owner)
    return cfg, given_target(owner, cfg)


def run_job(cfg: DictConfig) -> str:
    hydra_cfg = HydraConfig.get()
    try:
        cfg, given = prepare(cfg)
        outcome = run_cell(cfg, given)
    except KeyboardInterrupt:
        cli.interrupted(PROG, cfg)
    except (ConfigError, DataUnavailableError, UnknownEntryError, OwnerModelError, MembersError) as exc:
        if hydra_cfg.mode == RunMode.RUN:
            cli.remove_run_folder(Path(hydra_cfg.runtime.output_dir), Path(str(cfg.results_dir)))
        fail(str(exc))
    from mldoctor_bench.report.cell_verdicts import VERDICTS, reaches
    from mldoctor_bench.report.owner import write_owner_report

    md, html = write_owner_report(outcome.cell_dir)
    print(f"risk report: {md}\n             {html}", flush=True)
    if outcome.failed:
        sys.exit(cli.EXIT_ATTACK_FAILED)
    level = gate_level(cfg)
    verdicts = outcome.cell_dir / VERDICTS
    over = reaches(json.loads(verdicts.read_text()), level) if level and verdicts.exists() else []
    if over:
        print(f"{PROG}: {', '.join(over)} at or above assess.fail_on={level} (see {verdicts}); exit code {EXIT_GATE}",
              file=sys.stderr)
        sys.exit(EXIT_GATE)
    return str(md)


app = hydra.main(version_base="1.3", config_path="conf", config_name="assess")(run_job)


def preflight(argv: list[str]) -> None:
    """Refuse bad input before Hydra makes any folder: group options, the whole config, the weights
    file and their fit to the architecture where the image size is known."""
    overrides = cli.overrides_of(argv)
    if any(o.split("=", 1)[0].lstrip("+~") == "arch" for o in overrides):
        fail("the architecture is the owner's: use model.arch=NAME or model.factory=package.module:callable, not arch=")
    message = cli.group_option_error(overrides)
    if message:
        fail(message)
    if any(a in cli.MULTIRUN_FLAGS for a in argv):
        fail("one model is assessed per run: leave out -m (run the command once per model or seed)")
    if any(a in cli.INFO_FLAGS for a in argv):
        return
    from mldoctor_bench.runner import plan

    try:
        cfg = cli.compose_checked("assess", overrides)
        gate_level(cfg)
        owner = read_owner(cfg)
        cfg = owner_config(cfg, owner)
        plan(cfg)
        owner.check_early(cfg)
        check_folder_members(cfg, owner)
    except (ConfigError, OwnerModelError, MembersError, DataUnavailableError) as exc:
        fail(str(exc))


def assess_options() -> str:
    """The config groups' options that ``mldoctor-assess`` accepts (one line each): not ``arch``
    (the architecture is the owner's), nor training-time defenses or the audit, nor experiments."""
    from mldoctor_bench.threat_catalog import THREAT_MODELS as CATALOG

    allowed = {
        "attack": [a for a in cli.group_options("attack") if "auditor" not in ATTACKS.get(a).threat_models],
        "dataset": cli.group_options("dataset"),
        "defense": [d for d in cli.group_options("defense") if d == "none" or DEFENSES.get(d).kind == OUTPUT],
        "profile": cli.group_options("profile"),
        "threat_model": [t for t in cli.group_options("threat_model") if CATALOG.get(t).knowledge != "owner"],
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
    sys.argv[1:] = argv = cli.expand_home(sys.argv[1:])
    if "--version" in argv or "-V" in argv:
        print(cli.version_text().replace("mldoctor-bench", PROG, 1))
        return
    if "--help" in argv or "-h" in argv:
        print_help()
        return
    preflight(argv)
    app()


if __name__ == "__main__":
    main()
