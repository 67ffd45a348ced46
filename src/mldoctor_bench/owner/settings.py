"""What an owner gives ``mldoctor-assess``, read and checked: the ``model`` section, the weights (never
unpickled code), the members file, and the policy of what can be assessed on a model trained
elsewhere (no training-time defense, no audit that retrains the target, no ``arch=``).

The owner's architecture enters the cell under the name ``owner-<digest>`` (:attr:`Owner.arch_name`)
of everything that defines it (registry name or factory, its kwargs and its module's source, the
normalisation), so shadow models and surrogates use it and cache keys tell architectures apart;
its builder is handed to the cell's model provider, never entered in the global registry.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf, open_dict

from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.cell.plan import ConfigError
from mldoctor_bench.defense_catalog import OUTPUT, names_of
from mldoctor_bench.defenses import DEFENSES
from mldoctor_bench.members import as_posix, entries, member_rows
from mldoctor_bench.models import ARCHS
from mldoctor_bench.owner.model import OwnerClassifier, build_owner_model, check_state_dict, load_checked, load_weights
from mldoctor_bench.provenance import stable_hash
from mldoctor_bench.settings import SettingsError, parse, setting

OWNER_ARCH = "owner-"  # the owner's architecture is named owner-<digest of its identity>


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
    try:
        spec = importlib.util.find_spec(factory.partition(":")[0])
    except (ImportError, ValueError):
        return None
    origin = Path(spec.origin) if spec and spec.origin and spec.origin != "built-in" else None
    return file_digest(origin) if origin and origin.is_file() else None


@dataclass(frozen=True)
class Owner:
    """What the owner gave, checked: the model settings, the weights and the members file."""

    model: ModelSection
    kwargs: dict
    weights: Path
    state: dict = field(repr=False)
    members: Optional[Path]
    arch_name: str  # the name the owner's architecture has in this cell

    @property
    def members_listed(self) -> int:
        """How many examples the members file names (the model's training set size), 0 without one."""
        return len({as_posix(text) for _, text in entries(self.members)}) if self.members else 0

    def build(self, in_channels: int, num_classes: int, image_size: int) -> OwnerClassifier:
        """The owner's architecture, untrained, as the benchmark queries its models."""
        inner = build_owner_model(
            self.model.arch,
            self.model.factory,
            self.kwargs,
            num_classes=num_classes,
            image_size=image_size,
            in_channels=in_channels,
        )
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
        architecture when the image size, channels and classes are known without decoding an image
        (given, or from an image folder's layout and ``data`` settings)."""
        m = self.model
        if m.factory is not None:
            model = build_owner_model(None, m.factory, self.kwargs, num_classes=0, image_size=0, in_channels=0)
            check_state_dict(model, self.state, self.source)
            return
        size = m.image_size or cfg.data.get("image_size")
        channels = m.in_channels or cfg.data.get("in_channels")
        classes = m.num_classes
        if str(cfg.dataset.name) == "folder":  # all three from the folder's layout, no image decoded
            from mldoctor_bench.data.folder import DEFAULT_IMAGE_SIZE, FolderError, FolderSettings, find_classes

            try:
                folder = FolderSettings.from_config(cfg.data)
                classes = classes or len(find_classes(folder.common.root))
            except FolderError:
                return  # the data's own refusal comes when it is read, in its own words
            size, channels = size or DEFAULT_IMAGE_SIZE, channels or folder.in_channels
        if size is not None and channels is not None and classes is not None:
            self.trained(int(channels), classes, int(size))


@dataclass(frozen=True, kw_only=True)
class AssessSection:
    """``assess.*``: what the command does with the verdicts (the release gate, and whether a family
    whose attacks did not all run may pass it), and what the membership attacks' own models may cost,
    in trainings of the shadow model (:mod:`mldoctor_bench.owner.budget`)."""

    fail_on: Optional[str] = setting(None, choices=("moderate", "high"), example="moderate")
    allow_incomplete: bool = setting(False)
    budget_models: Optional[float] = setting(None, min=0, example=8)
    # Output-time defenses measured on the owner's model once the assessment is done: the black-box
    # attacks rerun against its outputs as each would release them (mldoctor_bench.assess; the report:
    # mldoctor_bench.report.owner_releases).
    output_defenses: list[str] = setting(names_of(OUTPUT), choices=tuple(names_of(OUTPUT)), example="[output_topk]")


def assess_settings(cfg: DictConfig) -> AssessSection:
    """``assess.*``, checked; raise :class:`ConfigError`."""
    try:
        return parse(AssessSection, cfg.get("assess") or {}, "assess")
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None


def read_owner(cfg: DictConfig) -> Owner:
    """Check the ``model`` section and ``members`` and read the weights (nothing in them runs); raise
    :class:`OwnerModelError`, :class:`MembersError` or :class:`ConfigError`."""
    node = OmegaConf.to_container(cfg.model, resolve=True)
    kwargs = node.pop("kwargs", None) or {}
    try:
        section = parse(ModelSection, node, "model")
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    if not section.weights:
        raise ConfigError(
            "model.weights is missing: give the trained model's weights, e.g. "
            "model.weights=model.safetensors (a safetensors file or a saved state dict)"
        )
    built_in = ", ".join(ARCHS.names())
    if (section.arch is None) == (section.factory is None):
        raise ConfigError(
            f"name the model's architecture once: model.arch=NAME (one of {built_in}) "
            "or model.factory=package.module:callable"
        )
    if section.arch is not None and (section.arch not in ARCHS or section.arch.startswith(OWNER_ARCH)):
        close = [n for n in ARCHS.names() if n.startswith(section.arch)][:1] or difflib.get_close_matches(
            section.arch, ARCHS.names(), n=1, cutoff=0.5
        )
        hint = f"did you mean model.arch={close[0]}? " if close else ""
        raise ConfigError(
            f"unknown model.arch {section.arch!r}; {hint}choose one of: {built_in}, "
            "or give your own with model.factory=package.module:callable"
        )
    defense = DEFENSES.get(str(cfg.defense.name))
    if defense.name != "none" and defense.kind != OUTPUT:
        raise ConfigError(
            f"defense={defense.name} changes training, and the owner's model is trained already; "
            "assess it as released (defense=none) or with an output-time defense (output_topk, "
            "output_rounding, output_labels_only)"
        )
    audits = [a for a in cfg.attack.keys() if "auditor" in ATTACKS.get(a).threat_models]
    if audits:
        raise ConfigError(
            f"attack={audits[0]} retrains the target with canaries, which the owner's trained model "
            "cannot be; leave it out of attack="
        )
    weights = Path(section.weights).expanduser().resolve()
    state = load_weights(weights)
    members = None
    if cfg.get("members") is not None:
        members = Path(str(cfg.members)).expanduser().resolve()
        entries(members)  # a missing or empty file is refused here, before the data is read
    identity = {
        "arch": section.arch,
        "factory": section.factory,
        "kwargs": kwargs,
        "source": factory_source(section.factory),
        "normalize": [section.normalize.mean, section.normalize.std],
    }
    return Owner(section, kwargs, weights, state, members, f"{OWNER_ARCH}{stable_hash(identity, length=8)}")


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
        cfg.owner = {
            "weights_sha256": file_digest(owner.weights),
            "members_sha256": file_digest(owner.members) if owner.members else None,
        }
    return cfg


def check_folder_members(cfg: DictConfig, owner: Owner) -> None:
    """For ``dataset=folder``, check the members file against the folder's file list before any
    image is decoded (the same check runs again on the loaded data)."""
    if owner.members is None or str(cfg.dataset.name) != "folder":
        return
    from mldoctor_bench.data.folder import find_classes, list_images

    root = Path(str(cfg.data.root)).expanduser().resolve()
    files = [f for f, _ in list_images(root, find_classes(root))]
    member_rows(owner.members, len(files), files, "folder")
