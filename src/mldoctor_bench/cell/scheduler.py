"""Obtaining models: each loaded where the store holds it, the rest trained in groups that can train
together on the device (stacked on CUDA, one per core in threads on a multi-core CPU:
:mod:`mldoctor_bench.many_models`), each group one timed phase, each model stored as soon as it is
trained, so that an interruption loses only the models in training.

The scheduler knows a model only through :class:`ToObtain`, which a cell's classifier
(:class:`~mldoctor_bench.cell.specs.ModelSpec`) and an attack's other models
(:class:`~mldoctor_bench.attacks.base.CachedRequest`) both implement.
"""

from __future__ import annotations

import time
from typing import Optional, Protocol

from torch import nn

from mldoctor_bench import ui
from mldoctor_bench.cell.specs import Workshop
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
from mldoctor_bench.provenance import stable_hash
from mldoctor_bench.store import Keep, ModelStore, StoredModel
from mldoctor_bench.timings import MODEL, Phase, Timings


class ToObtain(Protocol):
    """A model to obtain: its role (for people), its key in the store, how it is built and trained,
    the images it sees in training (rows x epochs; ``None``: unknown), and whether it may train beside
    others: in threads (``thread_safe``: it draws nothing from the global random generator) or stacked
    (models of one ``stack_signature``; ``None``: never stacked). A model with a signature also gives
    its :meth:`training_rows` and :meth:`measure`, which stacked training uses instead of :meth:`fit`."""

    role: str

    @property
    def images_seen(self) -> Optional[int]: ...

    @property
    def thread_safe(self) -> bool: ...

    @property
    def stack_signature(self) -> Optional[tuple]: ...

    def store_key(self, shop: Workshop) -> dict: ...

    def new_model(self, shop: Workshop) -> nn.Module: ...

    def fit(self, model: nn.Module, shop: Workshop) -> dict: ...

    def training_rows(self, shop: Workshop) -> TrainingRows: ...

    def measure(self, model: nn.Module, shop: Workshop) -> dict: ...


def group_name(roles: list[str], shown: int = 4) -> str:
    """The roles of models trained together, joined by ``+``; beyond ``shown``, the first and last
    with the count (a sweep of reference models names dozens)."""
    if len(roles) <= shown:
        return "+".join(roles)
    return f"{roles[0]}+...+{roles[-1]} ({len(roles)} models)"


class Scheduler:
    """Obtains the models of one cell's :class:`Workshop` through its store (see the module docstring);
    ``batch_models``: the recipe's ``train.batch_models``."""

    def __init__(self, shop: Workshop, store: ModelStore, timings: Timings, batch_models: str) -> None:
        self.shop, self.store, self.timings, self.batch_models = shop, store, timings, batch_models
        self.trained_here: set[str] = set()  # files of the models trained here: no news when reloaded

    def obtain(self, items: list[ToObtain]) -> list[StoredModel]:
        """The models of ``items``: loaded where stored, the rest trained together where they can be,
        in groups that can train together on this device (on CUDA, one stack signature: stacked; on a
        multi-core CPU, all at once in threads). A model asked for twice is trained once."""
        keys = [stable_hash(i.store_key(self.shop)) for i in items]
        if len(set(keys)) < len(keys):
            unique = dict(zip(keys, items))
            stored = dict(zip(unique, self.obtain(list(unique.values()))))
            return [stored[k] for k in keys]
        if device_rule(self.batch_models, self.shop.device) != STACKED:
            return self.obtain_together(items)
        groups: dict[object, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item.stack_signature or ("alone", i), []).append(i)
        out: dict[int, StoredModel] = {}
        for members in groups.values():
            out.update(zip(members, self.obtain_together([items[i] for i in members])))
        return [out[i] for i in range(len(items))]

    def obtain_together(self, items: list[ToObtain]) -> list[StoredModel]:
        """:meth:`obtain` for one group, as one timed phase."""
        names = group_name([i.role for i in items])
        with self.timings.phase(f"train {names}", MODEL) as phase:
            stored = self.store.get_or_train_many(
                [i.store_key(self.shop) for i in items],
                lambda k: items[k].new_model(self.shop),
                lambda models, which, keep: self.train_group(names, [items[i] for i in which], models, keep, phase),
                images_seen=[i.images_seen for i in items],
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
            s.model.to(self.shop.device)
            if s.path is None:
                continue
            if not s.reused:
                self.trained_here.add(s.path.name)
            elif s.path.name not in self.trained_here:
                ui.console.print(f"[dim]reused cached {item.role} model {s.path.name}[/]")
        return stored

    def train_group(
        self, names: str, chosen: list[ToObtain], models: list[nn.Module], keep: Keep, phase: Phase
    ) -> Optional[list[dict]]:
        """Train ``models`` in place, together as the device allows (:meth:`mode`), each stored by
        ``keep`` as soon as it is trained; stacked models finish together and return their metrics
        instead."""
        mode = phase.info["batch_models"] = self.mode(chosen, models)
        if mode == STACKED:
            return self.train_stacked(names, chosen, models)
        # threads: each model on one core beside the others, so its share of the machine is its wall
        # time over the number training side by side
        together = side_by_side(len(models)) if mode == THREADS else 1

        def fit_and_keep(k: int) -> None:
            started = time.perf_counter()
            metrics = chosen[k].fit(models[k], self.shop)
            keep(k, metrics, (time.perf_counter() - started) / together)

        if mode == THREADS:
            tasks = [lambda k=k: fit_and_keep(k) for k in range(len(models))]
            run_in_threads(tasks, sizes=[s.images_seen or 0 for s in chosen])
        else:
            for k in range(len(models)):
                fit_and_keep(k)
        return None

    def train_stacked(self, names: str, chosen: list[ToObtain], models: list[nn.Module]) -> list[dict]:
        """Models of one stack signature (a recipe, an architecture, a data size) as one vmapped model."""
        recipe, arch, _ = chosen[0].stack_signature
        advance = self.shop.bars(f"train {names} stacked ({arch})", recipe.epochs * len(models))
        rows = [s.training_rows(self.shop) for s in chosen]
        train_many(models, rows, recipe, STACKED, on_epoch=lambda e, n, loss: advance(1, f"loss {loss:.3f}"))
        return [s.measure(m, self.shop) for s, m in zip(chosen, models)]

    def mode(self, chosen: list[ToObtain], models: list[nn.Module]) -> str:
        """How ``chosen`` train (see :mod:`mldoctor_bench.many_models`): stacked only when all share one
        stack signature, threads only when none draws from the global random generator, else one
        after another."""
        signatures = {c.stack_signature for c in chosen}
        mode = choose_mode(
            self.batch_models, self.shop.device, models, same_size=None not in signatures and len(signatures) == 1
        )
        if mode == THREADS and not all(c.thread_safe for c in chosen):
            return SEQUENTIAL
        return mode
