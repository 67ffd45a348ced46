"""The models of a cell: each described by a frozen :class:`ModelSpec` whose value is its cache key,
and one :class:`ModelProvider` that builds, trains (together where it can) and stores them.

The provider is the attacks' :class:`~mldoctor_bench.attacks.base.ModelService`: an attack asks
for a classifier (or any other model, as a :class:`~mldoctor_bench.attacks.base.CachedRequest`)
and gets it trained once per content, through the model store. Models of one recipe train side by
side (threads on a multi-core CPU, stacked on CUDA: :mod:`mldoctor_bench.many_models`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Optional, Union

import torch
from torch import nn

from mldoctor_bench import ui
from mldoctor_bench.attacks.base import CachedRequest, ModelRequest, ModelService, ReleasedModel
from mldoctor_bench.data import ImageData, Splits
from mldoctor_bench.defenses import DEFENSES, Defense, TrainingSet
from mldoctor_bench.inference import accuracy
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.many_models import (
    SEQUENTIAL,
    STACKED,
    THREADS,
    TrainingRows,
    choose_mode,
    device_rule,
    run_in_threads,
    side_by_side,
    train_many,
)
from mldoctor_bench.provenance import source_hash, stable_hash
from mldoctor_bench.store import Keep, ModelStore, StoredModel
from mldoctor_bench.threat_models import THREAT_MODELS, BlackBoxAccess, access_for
from mldoctor_bench.timings import MODEL, Phase, Timings
from mldoctor_bench.training import Recipe, TrainJob

Builder = Callable[[int, int, int], nn.Module]  # (in_channels, classes, image_size) -> an untrained model


def derive_seed(seed: int, role: str) -> int:
    """A per-role seed, so target and shadow start from different weights for the same run seed."""
    return int(stable_hash([seed, role], length=8), 16) % (2**31)


def group_name(roles: list[str], shown: int = 4) -> str:
    """The roles of models trained together, joined by ``+``; beyond ``shown``, the first and last
    with the count (a sweep of reference models names dozens)."""
    if len(roles) <= shown:
        return "+".join(roles)
    return f"{roles[0]}+...+{roles[-1]} ({len(roles)} models)"


def rows_digest(images: torch.Tensor, targets: torch.Tensor) -> str:
    """What a model of the attacker's trains on, as part of its key: the exact images and targets."""
    return hashlib.sha256(images.cpu().numpy().tobytes() + targets.cpu().numpy().tobytes()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """One classifier to obtain: its role, architecture, recipe, seed, the rows it trains on (with
    their digest) and the training-time defense it trains with (``None``: plain training)."""

    role: str
    arch: str
    recipe: Recipe
    seed: int
    rows: str  # digest of the training rows: a partition pool's, or the images' and targets' own
    images: torch.Tensor = field(repr=False)
    targets: torch.Tensor = field(repr=False)
    defense: Optional[Defense] = None

    def key(self, dataset_fingerprint: str) -> dict:
        """Everything that determines the trained weights: the store's key."""
        extra = self.defense.cache_payload() if self.defense is not None else {}
        return TrainJob(
            self.role, self.arch, self.recipe, self.seed, dataset_fingerprint, self.rows, extra
        ).cache_key_payload()

    @property
    def plain(self) -> bool:
        """Trained by the plain recipe (no training-time defense): may train beside others."""
        return self.defense is None or self.defense.plain_training

    @property
    def epochs(self) -> int:
        return (self.defense.training_recipe(self.recipe) if self.defense is not None else self.recipe).epochs


Wanted = Union[ModelSpec, CachedRequest]


class ModelProvider(ModelService):
    """Builds, trains and stores a cell's models (see the module docstring)."""

    def __init__(
        self,
        *,
        data: ImageData,
        splits: Splits,
        seed: int,
        arch: str,
        recipe: Recipe,
        defense: Defense,
        knows_defense: bool,
        device: torch.device,
        store: ModelStore,
        timings: Timings,
        bars: ui.Bars,
        architectures: Optional[Mapping[str, Builder]] = None,
    ) -> None:
        self.data, self.splits, self.seed, self.arch = data, splits, seed, arch
        self.recipe, self.defense, self.knows_defense = recipe, defense, knows_defense
        self.device, self.store, self.timings, self.bars = device, store, timings, bars
        self.architectures = dict(architectures or {})  # names outside the registry (an owner's model)
        self.trained_here: set[str] = set()  # files of the models this provider trained: no news when reloaded
        transfer = splits.pool("transfer")
        self.transfer = Labeled.take(data, transfer) if len(transfer) else None
        self.fingerprint = data.fingerprint()
        self.identity = {"dataset": self.fingerprint, "splits": splits.digest(), "seed": seed}

    # --- specifications ------------------------------------------------------------------------

    def spec(
        self,
        role: str,
        images: torch.Tensor,
        targets: torch.Tensor,
        *,
        epochs: Optional[int] = None,
        arch: Optional[str] = None,
        defended: bool = False,
        rows: Optional[str] = None,
    ) -> ModelSpec:
        """A classifier of the cell's architecture and recipe (or ``arch``, ``epochs``) on these rows;
        ``defended``: with the cell's training-time defense, where the attacker knows it."""
        recipe = replace(self.recipe, epochs=int(epochs)) if epochs else self.recipe
        defense = self.defense if defended else None
        return ModelSpec(
            role,
            arch or self.arch,
            recipe,
            derive_seed(self.seed, role),
            rows or rows_digest(images, targets),
            images,
            targets,
            defense,
        )

    def pool_spec(self, role: str, pool: str, defended: bool) -> ModelSpec:
        """A classifier on one of the partition's pools (the target on ``target_train``, the shadow
        on ``shadow_train``), keyed by the pool's digest."""
        idx = self.splits.pool(pool)
        return self.spec(
            role, self.data.images[idx], self.data.labels[idx], defended=defended, rows=self.splits.digest(pool)
        )

    def request_spec(self, request: ModelRequest) -> ModelSpec:
        return self.spec(
            request.role,
            request.images,
            request.targets,
            epochs=request.epochs,
            arch=request.arch,
            defended=request.defended and self.knows_defense,
        )

    # --- the attacks' model service ------------------------------------------------------------

    def prepare(self, requests: list[ModelRequest | CachedRequest]) -> list[nn.Module]:
        wanted = [r if isinstance(r, CachedRequest) else self.request_spec(r) for r in requests]
        return [s.model for s in self.obtain(wanted)]

    def classifier(self, role, images, targets, epochs=None, arch=None):
        return self.prepare([ModelRequest(role, images, targets, epochs, arch)])[0]

    def untrained_images(self, requests: list[ModelRequest | CachedRequest]) -> dict[str, int]:
        """By store key, the images (rows x epochs) each model of ``requests`` the store does not
        hold yet would train on (a model of unknown size counts 0)."""
        wanted = [r if isinstance(r, CachedRequest) else self.request_spec(r) for r in requests]
        keys = [self.store.key(self.key(w)) for w in wanted]
        return {k: self.images_seen(w) or 0 for k, w in zip(keys, wanted) if not self.store.holds(k)}

    def builder(self, arch: str) -> Builder:
        return self.architectures.get(arch) or super().builder(arch)

    def cached(self, role, payload, build, train):
        return self.obtain([CachedRequest(role, payload, build, train)])[0]

    def defended_classifier(self, role, images, labels):
        spec = replace(self.spec(role, images, labels), defense=self.defense)
        [stored] = self.obtain([spec])
        # released to its owner as the target is to everyone: black-box, through the output-time defense
        access = access_for(THREAT_MODELS.get("auditor"), stored.model, self.device, self.defense.output_transform())
        return ReleasedModel(access, dict(stored.manifest["metrics"]))

    def released(self, model):
        return BlackBoxAccess(model, self.device, self.defense.output_transform() if self.knows_defense else None)

    # --- building and training -----------------------------------------------------------------

    def build(self, item: Wanted) -> nn.Module:
        """An untrained model: the spec's architecture from its seed (under its defense's changes)."""
        if isinstance(item, CachedRequest):
            return item.build()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item.seed)
            model = self.builder(item.arch)(self.data.channels, self.data.num_classes, self.data.image_size)
        return item.defense.prepare_model(model) if item.defense is not None else model

    def fit(self, item: Wanted, model: nn.Module) -> dict:
        """Train ``model`` in place; the metrics its manifest keeps."""
        if isinstance(item, CachedRequest):
            return item.train(model)
        images, targets = item.images.to(self.device), item.targets.to(self.device)
        advance = self.bars(f"train {item.role} ({item.arch})", item.epochs)
        defense = item.defense or DEFENSES.get("none")()
        extra = defense.fit(
            model,
            TrainingSet(
                images,
                targets,
                item.recipe,
                item.seed,
                lambda: self.build(item),
                self.transfer,
                on_epoch=lambda e, n, loss: advance(1, f"loss {loss:.3f}"),
            ),
        )
        return {**self.measure(item, model), **extra}

    def measure(self, spec: ModelSpec, model: nn.Module) -> dict:
        hard = spec.targets if spec.targets.dim() == 1 else spec.targets.argmax(1)
        return {"train_accuracy": accuracy(model, spec.images.to(self.device), hard)}

    def key(self, item: Wanted) -> dict:
        if isinstance(item, CachedRequest):
            return {
                "role": item.role,
                "cell": self.identity,
                "payload": item.payload,
                "code": source_hash(("attacks",)),
            }
        return item.key(self.fingerprint)

    @staticmethod
    def images_seen(item: Wanted) -> Optional[int]:
        return item.images_seen if isinstance(item, CachedRequest) else len(item.images) * item.epochs

    @staticmethod
    def stack_signature(item: Wanted) -> Optional[tuple]:
        if isinstance(item, CachedRequest) or not item.plain:
            return None
        return item.recipe, item.arch, len(item.images)

    @staticmethod
    def thread_safe(item: Wanted) -> bool:
        """Draws nothing from the global random generator while training (DP-SGD's noise and
        distillation's teacher do), so it may train beside others in threads."""
        return item.thread_safe if isinstance(item, CachedRequest) else item.plain

    def obtain(self, items: list[Wanted]) -> list[StoredModel]:
        """The models of ``items``: loaded where stored, the rest trained together where they can be,
        in groups that can train together on this device (on CUDA, one recipe, architecture and data
        size: stacked; on a multi-core CPU, all at once in threads). A model asked for twice is
        trained once."""
        keys = [stable_hash(self.key(i)) for i in items]
        if len(set(keys)) < len(keys):
            unique = dict(zip(keys, items))
            stored = dict(zip(unique, self.obtain(list(unique.values()))))
            return [stored[k] for k in keys]
        if device_rule(self.recipe.batch_models, self.device) != STACKED:
            return self.obtain_together(items)
        groups: dict[object, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(self.stack_signature(item) or ("alone", i), []).append(i)
        out: dict[int, StoredModel] = {}
        for members in groups.values():
            out.update(zip(members, self.obtain_together([items[i] for i in members])))
        return [out[i] for i in range(len(items))]

    def obtain_together(self, items: list[Wanted]) -> list[StoredModel]:
        """:meth:`obtain` for one group, as one timed phase."""
        names = group_name([i.role for i in items])
        with self.timings.phase(f"train {names}", MODEL) as phase:
            stored = self.store.get_or_train_many(
                [self.key(i) for i in items],
                lambda i: self.build(items[i]),
                lambda models, which, keep: self.train_group(names, [items[i] for i in which], models, keep, phase),
                images_seen=[self.images_seen(i) for i in items],
            )
            if all(s.reused for s in stored):
                phase.name = f"load {names}"
            phase.info["models"] = [
                {
                    "role": i.role,
                    "reused": s.reused,
                    **{
                        k: s.manifest[k]
                        for k in ("train_seconds", "images_per_second", "trained_together")
                        if k in s.manifest
                    },
                }
                for i, s in zip(items, stored)
            ]
        for item, s in zip(items, stored):
            s.model.to(self.device)
            if s.path is None:
                continue
            if not s.reused:
                self.trained_here.add(s.path.name)
            elif s.path.name not in self.trained_here:
                ui.console.print(f"[dim]reused cached {item.role} model {s.path.name}[/]")
        return stored

    def train_group(
        self, names: str, chosen: list[Wanted], models: list[nn.Module], keep: Keep, phase: Phase
    ) -> Optional[list[dict]]:
        """Train ``models`` in place, together as the device allows (:meth:`mode`), each stored by
        ``keep`` as soon as it is trained, so that an interruption loses only the models in training;
        stacked models finish together and return their metrics instead."""
        mode = phase.info["batch_models"] = self.mode(chosen, models)
        if mode == STACKED:
            spec = chosen[0]
            advance = self.bars(f"train {names} stacked ({spec.arch})", spec.recipe.epochs * len(models))
            rows = [TrainingRows(s.images.to(self.device), s.targets.to(self.device), s.seed) for s in chosen]
            train_many(models, rows, spec.recipe, STACKED, on_epoch=lambda e, n, loss: advance(1, f"loss {loss:.3f}"))
            return [self.measure(s, m) for s, m in zip(chosen, models)]
        # threads: each model on one core beside the others, so its share of the machine is its wall
        # time over the number training side by side
        together = side_by_side(len(models)) if mode == THREADS else 1

        def fit_and_keep(k: int) -> None:
            started = time.perf_counter()
            metrics = self.fit(chosen[k], models[k])
            keep(k, metrics, (time.perf_counter() - started) / together)

        if mode == THREADS:
            tasks = [lambda k=k: fit_and_keep(k) for k in range(len(models))]
            run_in_threads(tasks, sizes=[self.images_seen(s) or 0 for s in chosen])
        else:
            for k in range(len(models)):
                fit_and_keep(k)
        return None

    def mode(self, chosen: list[Wanted], models: list[nn.Module]) -> str:
        """How ``chosen`` train (see :mod:`mldoctor_bench.many_models`): stacked only when all train
        by one plain recipe on one architecture and data size, threads only when none draws from
        the global random generator, else one after another."""
        signatures = {self.stack_signature(c) for c in chosen}
        mode = choose_mode(
            self.recipe.batch_models, self.device, models, same_size=None not in signatures and len(signatures) == 1
        )
        if mode == THREADS and not all(self.thread_safe(c) for c in chosen):
            return SEQUENTIAL
        return mode
