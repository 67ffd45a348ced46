"""A cell's models as the attacks ask for them: one :class:`ModelProvider` per cell makes the specs of
its classifiers (:mod:`.specs`) and serves the attacks' requests, obtaining every model once per
content through the scheduler (:mod:`.scheduler`) and the model store.

Each attack under each threat model gets its own view of the provider (:class:`AskedModels`), which
records the models the attack asks for: the cell's ``timings.json`` keeps them with the attack's
phase, and the report's costs read them there (:mod:`mldoctor_bench.report.frontier`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Optional

import torch
from torch import nn

from mldoctor_bench import ui
from mldoctor_bench.attacks.base import CachedRequest, ModelRequest, ModelService, ReleasedModel
from mldoctor_bench.cell.scheduler import Scheduler, ToObtain
from mldoctor_bench.cell.specs import Builder, ModelSpec, Workshop, derive_seed, rows_digest
from mldoctor_bench.data import ImageData, Splits
from mldoctor_bench.defenses import Defense
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.store import ModelStore, StoredModel
from mldoctor_bench.threat_models import THREAT_MODELS, BlackBoxAccess, access_for
from mldoctor_bench.timings import Timings, asked_entry
from mldoctor_bench.training import Recipe

__all__ = ["AskedModels", "ModelProvider", "ModelSpec", "derive_seed"]

SHADOW_ROLE = "shadow"  # the attacker's shadow model, trained on the partition's shadow_train pool


class ModelProvider(ModelService):
    """Makes a cell's model specs and serves the attacks' models (see the module docstring)."""

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
        self.device, self.store = device, store
        transfer, fingerprint = splits.pool("transfer"), data.fingerprint()
        self.shop = Workshop(
            channels=data.channels,
            num_classes=data.num_classes,
            image_size=data.image_size,
            architectures=dict(architectures or {}),
            device=device,
            bars=bars,
            transfer=Labeled.take(data, transfer) if len(transfer) else None,
            fingerprint=fingerprint,
            identity={"dataset": fingerprint, "splits": splits.digest(), "seed": seed},
        )
        self.scheduler = Scheduler(self.shop, store, timings, recipe.batch_models)

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
        ``defended``: with the cell's training-time defense."""
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

    def shadow_spec(self) -> ModelSpec:
        """The attacker's shadow model: with the target's training-time defense where the attacker knows it."""
        return self.pool_spec(SHADOW_ROLE, "shadow_train", defended=self.knows_defense)

    def request_spec(self, request: ModelRequest) -> ModelSpec:
        """The spec of an attack's classifier: defended where it asks to be and the attacker knows the defense."""
        return self.spec(
            request.role,
            request.images,
            request.targets,
            epochs=request.epochs,
            arch=request.arch,
            defended=request.defended and self.knows_defense,
        )

    def obtain(self, items: list[ToObtain]) -> list[StoredModel]:
        """The models of ``items``, loaded or trained (:meth:`Scheduler.obtain`)."""
        return self.scheduler.obtain(items)

    def untrained_images(self, requests: list[ModelRequest | CachedRequest]) -> dict[str, int]:
        """By store key, the images (rows x epochs) each model of ``requests`` the store does not
        hold yet would train on (a model of unknown size counts 0)."""
        wanted = [r.to_obtain(self) for r in requests]
        keys = [self.store.key(w.store_key(self.shop)) for w in wanted]
        return {k: w.images_seen or 0 for k, w in zip(keys, wanted) if not self.store.holds(k)}

    def for_attack(self) -> "AskedModels":
        """The provider as one attack under one threat model sees it."""
        return AskedModels(self)

    # --- the attacks' model service ------------------------------------------------------------

    def prepare(self, requests: list[ModelRequest | CachedRequest]) -> list[nn.Module]:
        return [s.model for s in self.obtain([r.to_obtain(self) for r in requests])]

    def classifier(self, role, images, targets, epochs=None, arch=None):
        return self.prepare([ModelRequest(role, images, targets, epochs, arch)])[0]

    def builder(self, arch: str) -> Builder:
        return self.shop.builder(arch)

    def cached(self, role, payload, build, train):
        return self.obtain([CachedRequest(role, payload, build, train)])[0]

    def defended_classifier(self, role, images, labels):
        return self.released_copies([ModelRequest(role, images, labels)])[0]

    def released_copies(self, requests):
        specs = [replace(self.spec(r.role, r.images, r.targets), defense=self.defense) for r in requests]
        # released to their owner as the target is to everyone: black-box, through the output-time defense
        transform = self.defense.output_transform()
        return [
            ReleasedModel(
                access_for(THREAT_MODELS.get("auditor"), s.model, self.device, transform), dict(s.manifest["metrics"])
            )
            for s in self.obtain(specs)
        ]

    def released(self, model):
        return BlackBoxAccess(model, self.device, self.defense.output_transform() if self.knows_defense else None)


class AskedModels(ModelService):
    """The provider as one attack under one threat model sees it: it serves every request through the
    provider and records each model asked for (its role, and the series it serves) in :attr:`asked`."""

    def __init__(self, provider: ModelProvider) -> None:
        self.provider = provider
        self.asked: list[dict] = []

    def record(self, role: str, series: Optional[tuple[str, ...]] = None) -> None:
        entry = asked_entry(role, series)
        if entry not in self.asked:
            self.asked.append(entry)

    def prepare(self, requests: list[ModelRequest | CachedRequest]) -> list[nn.Module]:
        for r in requests:
            self.record(r.role, r.series)
        return self.provider.prepare(requests)

    def classifier(self, role, images, targets, epochs=None, arch=None):
        return self.prepare([ModelRequest(role, images, targets, epochs, arch)])[0]

    def cached(self, role, payload, build, train):
        self.record(role)
        return self.provider.cached(role, payload, build, train)

    def defended_classifier(self, role, images, labels):
        self.record(role)
        return self.provider.defended_classifier(role, images, labels)

    def released_copies(self, requests):
        for r in requests:
            self.record(r.role)
        return self.provider.released_copies(requests)

    def builder(self, arch: str) -> Builder:
        return self.provider.builder(arch)

    def released(self, model):
        return self.provider.released(model)
