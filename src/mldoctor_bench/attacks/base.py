"""What every attack receives and returns.

An attack is a class registered under its config name. It declares the threat models it supports,
receives an :class:`AttackContext` (the access object the threat model grants, the attacker's
auxiliary data, the held-back evaluation data and its own settings) and returns plain metrics per
variant. It never trains the target and writes only inside ``ctx.out_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from mldoctor_bench.families import FAMILIES
from mldoctor_bench.knowledge import AttackerKnowledge, Evaluation, Labeled
from mldoctor_bench.models import Classifier, build_model
from mldoctor_bench.provenance import source_hash
from mldoctor_bench.registry import Registry
from mldoctor_bench.settings import NoSettings
from mldoctor_bench.store import StoredModel
from mldoctor_bench.threat_models import BlackBoxAccess, LabelOnlyAccess, ThreatModel, WhiteBoxAccess

VariantMetrics = dict[str, dict[str, float]]  # variant ("" if none) -> metric -> value


@dataclass(frozen=True)
class ReleasedModel:
    """A model trained and released as the target is, seen through black-box access, with the
    metrics of its training run (under DP-SGD the accountant's ``epsilon`` and ``delta``)."""

    access: BlackBoxAccess
    metrics: dict[str, float]


@dataclass(frozen=True)
class ModelRequest:
    """A classifier an attack will need: the arguments of :meth:`ModelService.classifier`, and the
    variants whose scores use it (``series``; ``None``: every variant of the attack; empty: none, as
    a repeat's models, which add rows about repeatability), which the report's costs read."""

    role: str
    images: torch.Tensor
    targets: torch.Tensor
    epochs: int | None = None
    arch: str | None = None
    defended: bool = False  # trained as the attacker's shadow is: with the target's defense if known
    series: tuple[str, ...] | None = None

    def to_obtain(self, provider: Any) -> Any:
        """The cell's spec of this classifier (the provider knows the cell's recipe and defense)."""
        return provider.request_spec(self)

    def served_by(self, service: "ModelService") -> torch.nn.Module:
        return service.classifier(self.role, self.images, self.targets, self.epochs, self.arch)


@dataclass(frozen=True)
class CachedRequest:
    """Any other model an attack will need (e.g. a GAN): the arguments of :meth:`ModelService.cached`,
    and ``series`` as :class:`ModelRequest` has it. ``thread_safe``: ``train`` draws nothing from the
    global random generator (seeds its own), so it may train beside other models in threads.

    It is a model to obtain (:class:`mldoctor_bench.cell.scheduler.ToObtain`) as it is: its store key
    is its ``payload`` in the cell's identity, with the attacks' source code."""

    role: str
    payload: dict
    build: Callable[[], torch.nn.Module]
    train: Callable[[torch.nn.Module], dict]
    thread_safe: bool = False
    images_seen: int | None = None  # images x epochs of its training, for images per second
    series: tuple[str, ...] | None = None
    stack_signature: ClassVar[None] = None  # trains alone: never stacked

    def to_obtain(self, provider: Any) -> "CachedRequest":
        return self

    def served_by(self, service: "ModelService") -> torch.nn.Module:
        return service.cached(self.role, self.payload, self.build, self.train).model

    def store_key(self, shop: Any) -> dict:
        return {"role": self.role, "cell": shop.identity, "payload": self.payload, "code": source_hash(("attacks",))}

    def new_model(self, shop: Any) -> torch.nn.Module:
        return self.build()

    def fit(self, model: torch.nn.Module, shop: Any) -> dict:
        return self.train(model)


class ModelService:
    """Trains the attacker's and evaluator's own models through the cell's model store.

    Attacks call it instead of training loops of their own, so every model they need (surrogate,
    evaluation classifier, GAN) is cached under a key that includes the cell's identity.
    """

    def classifier(
        self, role: str, images: torch.Tensor, targets: torch.Tensor, epochs: int | None = None, arch: str | None = None
    ) -> Classifier:
        """A classifier of the target's architecture and recipe (or ``arch``/``epochs``) trained on
        ``uint8`` ``images`` with class-index or soft-probability ``targets``."""
        raise NotImplementedError

    def prepare(self, requests: list[ModelRequest | CachedRequest]) -> list[torch.nn.Module]:
        """The models of ``requests`` of either kind, trained together where they can be."""
        return [r.served_by(self) for r in requests]

    def builder(self, arch: str) -> Callable[[int, int, int], torch.nn.Module]:
        """``(in_channels, outputs, image_size) -> untrained model`` for ``arch`` (a registry
        architecture here; the owner's too in the cell's provider)."""
        return lambda channels, outputs, size: build_model(arch, channels, outputs, size)

    def untrained(self, arch: str, in_channels: int, outputs: int, image_size: int) -> torch.nn.Module:
        """An untrained ``arch`` with ``outputs`` outputs (a regressor's, say). An architecture that
        fixes its own number of outputs (an owner's ``model.factory``) gets a linear layer from
        them to ``outputs``, seeded as the rest of the model is, by the caller's generator."""
        model = self.builder(arch)(in_channels, outputs, image_size)
        probe = torch.zeros(2, in_channels, image_size, image_size)
        was_training = model.training
        with torch.no_grad():
            width = int(model.eval()(probe).shape[-1])
        model.train(was_training)
        return model if width == outputs else torch.nn.Sequential(model, torch.nn.Linear(width, outputs))

    def released(self, model: Classifier) -> BlackBoxAccess:
        """The attacker's black-box view of its own ``model``, released as its shadow model's
        outputs are (through the target's output-time defense when the attacker knows it)."""
        return BlackBoxAccess(model, next(model.parameters()).device)

    def defended_classifier(self, role: str, images: torch.Tensor, labels: torch.Tensor) -> ReleasedModel:
        """A copy of the target on other data: the target's architecture, recipe and training-time
        defense on ``uint8`` ``images`` and class-index ``labels``, released through the cell's
        output-time defense (for the model owner, who trains its own models)."""
        raise NotImplementedError

    def released_copies(self, requests: list[ModelRequest]) -> list[ReleasedModel]:
        """:meth:`defended_classifier` of each request (its role, images and targets), trained together
        where they can be."""
        return [self.defended_classifier(r.role, r.images, r.targets) for r in requests]

    def cached(
        self, role: str, payload: dict, build: Callable[[], torch.nn.Module], train: Callable[[torch.nn.Module], dict]
    ) -> StoredModel:
        """Any other model (e.g. a GAN): ``train(build())`` once per ``payload`` and cell."""
        raise NotImplementedError


class AttackSkipped(Exception):
    """Raised by an attack that cannot apply to this cell; the message is the recorded reason."""


@dataclass
class AttackContext:
    """Everything an attack may use."""

    threat_model: ThreatModel
    target: LabelOnlyAccess
    knowledge: AttackerKnowledge
    evaluation: Evaluation
    settings: Any
    out_dir: Path
    device: torch.device
    seed: int  # this attack under this threat model's own seed
    num_classes: int
    num_attribute_classes: int = 0
    cell_seed: int = 0  # the cell's seed: for what every threat model of the cell shares (evaluators)
    target_arch: str = ""  # the target's registry architecture name (white-box knowledge)
    heldout: Labeled | None = None  # data in no quarter: for evaluators that neither side trained on
    training_size: int = 0  # examples the target trained on (0: as many as the evaluation members)
    models: ModelService | None = None
    progress: Callable[[str, int], Callable[[int], None]] = lambda label, total: lambda n=1: None
    # A model of the target's architecture and recipe that never saw the target's training data (the
    # cell's shadow model): for baselines that measure what a model gives without the training data.
    # It is the evaluation's, not the attacker's knowledge, also under threat models without data.
    control: WhiteBoxAccess | None = None

    @property
    def reference(self) -> LabelOnlyAccess:
        """The model the attacker's known members and non-members refer to: its own shadow model
        under (.,S), the target itself under (.,P)."""
        return self.knowledge.reference if self.knowledge.reference is not None else self.target


class Attack:
    """Base class: subclasses set ``family`` (one of :data:`~mldoctor_bench.families.FAMILIES`, checked
    when the attack is registered), ``threat_models`` and their ``Settings`` dataclass (types, ranges,
    profile-independent defaults; see :mod:`mldoctor_bench.settings`) and implement :meth:`run`;
    registering sets ``name``."""

    name: ClassVar[str]
    family: ClassVar[str]  # what it infers: how reports group, chart and judge it
    threat_models: ClassVar[tuple[str, ...]]
    Settings: ClassVar[type] = NoSettings
    uses_heldout: ClassVar[bool] = False  # needs the partition's heldout pool (an evaluator)
    uses_control: ClassVar[bool] = False  # needs ``AttackContext.control`` under every threat model
    # Uses the attacker's shadow model under the threat models that give one (its ``ctx.reference``):
    # the report then counts that model's training in the attack's cost. Attacks that train their own
    # models instead (reference models, a regressor) say no.
    uses_shadow_model: ClassVar[bool] = True

    def pool_sizes(self, settings: Any) -> dict[str, int]:
        """Rows of the partition's extra pools (e.g. ``canary``) that this attack needs with its
        typed ``settings``; none by default."""
        return {}

    def check_settings(self, settings: Any) -> None:
        """Raise ``ValueError`` naming the setting and the fix if the (typed) ``settings`` cannot
        work together; single values are checked by their types and ranges already.

        Called when the cell is planned, before any training."""

    def models_wanted(self, ctx: AttackContext) -> list[ModelRequest | CachedRequest]:
        """The models :meth:`run` will ask ``ctx.models`` for, if known beforehand: the cell trains
        those of all its attacks before the attacks run, together where they can be, and
        ``run`` then finds them trained. None by default."""
        return []

    def run(self, ctx: AttackContext) -> VariantMetrics:
        raise NotImplementedError


def check_family(name: str, attack: type[Attack]) -> None:
    """Refuse an attack whose family the reports do not know."""
    family = getattr(attack, "family", None)
    if family not in FAMILIES:
        raise ValueError(
            f"attack {name!r} has family {family!r}, not one the reports know; use one of: {', '.join(FAMILIES)}"
        )


ATTACKS: Registry[type[Attack]] = Registry("attack", check=check_family)
