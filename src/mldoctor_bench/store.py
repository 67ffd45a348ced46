"""Content-addressed store of trained models: a model is never trained twice for the same inputs.

A model's key hashes everything that determines its weights (:meth:`TrainJob.cache_key_payload`).
Weights are safetensors (no pickle), written to a temporary file and renamed, with the JSON manifest
written last as the completion marker. A file lock per key makes parallel jobs that need the same
model train it once: the others wait, then load it. A writer killed mid-write leaves at most a
temporary file, which the next holder of the key's lock removes (the OS releases the lock itself).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from filelock import FileLock
from safetensors.torch import load_file
from torch import nn

from mldoctor_bench.files import atomic_write_text, save_weights
from mldoctor_bench.inference import CONTIGUOUS, in_layout, layout_of
from mldoctor_bench.provenance import stable_hash

# keep(k, metrics, seconds): store the k-th model of a group as soon as it is trained
Keep = Callable[[int, dict, float], None]


@dataclass
class StoredModel:
    """A trained model with its manifest (training metrics and how it was made)."""

    model: nn.Module
    manifest: dict
    path: Optional[Path]
    reused: bool


class ModelStore:
    """Models keyed by the hash of their training job, under ``root`` (in memory only when ``None``)."""

    def __init__(self, root: Optional[Path]) -> None:
        self.root = Path(root) if root is not None else None  # created on first use
        self._memory: dict[str, StoredModel] = {}  # without a root: this process's models

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def key(self, payload: dict) -> str:
        return stable_hash(payload, length=24)

    def holds(self, key: str) -> bool:
        """Whether a model of ``key`` is stored (on disk, or in this process's memory)."""
        return self.paths(key)[1].exists() if self.root is not None else key in self._memory

    def paths(self, key: str) -> tuple[Path, Path]:
        assert self.root is not None
        return self.root / f"{key}.safetensors", self.root / f"{key}.json"

    def get_or_train(
        self,
        payload: dict,
        build: Callable[[], nn.Module],
        train: Callable[[nn.Module], dict],
        images_seen: Optional[int] = None,
    ) -> StoredModel:
        """Load the model for ``payload`` if stored, else ``train(build())`` and store it.

        ``train`` trains the module in place and returns metrics to keep in the manifest;
        ``images_seen`` (images x epochs) gives the manifest's images per second."""
        return self.get_or_train_many(
            [payload],
            lambda i: build(),
            lambda models, which, keep: [train(models[0])],
            None if images_seen is None else [images_seen],
        )[0]

    def get_or_train_many(
        self,
        payloads: Sequence[dict],
        build: Callable[[int], nn.Module],
        train: Callable[[list[nn.Module], list[int], Keep], Optional[list[dict]]],
        images_seen: Optional[Sequence[Optional[int]]] = None,
    ) -> list[StoredModel]:
        """The models of ``payloads``: each loaded if stored; the missing ones built
        (``build(i)``) and trained together by ``train(models, which, keep)`` (``which``: their
        positions in ``payloads``), then stored.

        ``train`` either stores each model as soon as it is trained, by calling ``keep(k, metrics,
        seconds)`` (``k``: its position in ``models``; ``seconds``: the machine time it took), so
        that an interrupted group keeps every model it finished, and returns None; or returns one
        metrics dict per model at the end, and the models share the elapsed time equally (as models
        stacked into one must). Each trained model's manifest records its training seconds, the
        number trained together and, given ``images_seen``, images per second."""
        keys = [self.key(p) for p in payloads]
        with self._locked(keys):
            out: dict[int, StoredModel] = {}
            for i, key in enumerate(keys):
                found = self._load(key, lambda i=i: build(i))
                if found is not None:
                    out[i] = found
            missing = {i: build(i) for i in range(len(payloads)) if i not in out}
            if missing:
                out.update(zip(missing, self._train(payloads, missing, train, images_seen, keys)))
            return [out[i] for i in range(len(payloads))]

    def _locked(self, keys: Sequence[str]) -> contextlib.ExitStack:
        """The file locks of ``keys``, taken in one order for every process (no deadlock)."""
        locks = contextlib.ExitStack()
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            for key in sorted(set(keys)):
                locks.enter_context(FileLock(str(self.root / f"{key}.lock")))
        return locks

    def _load(self, key: str, build: Callable[[], nn.Module]) -> Optional[StoredModel]:
        """The stored model of ``key`` (on disk, or in memory without a root), or ``None``."""
        if self.root is None:  # kept in memory, so one process still trains a model once
            return replace(self._memory[key], reused=True) if key in self._memory else None
        weights, manifest_path = self.paths(key)
        if manifest_path.exists() and weights.exists():
            manifest = json.loads(manifest_path.read_text())
            # loading copies into the weights, keeping their layout: the one the model was trained in
            model = in_layout(build(), manifest.get("layout", CONTIGUOUS))
            model.load_state_dict(load_file(str(weights)))
            return StoredModel(model.eval(), manifest, weights, True)
        for stale in self.root.glob(f".{key}.*.tmp"):  # a writer killed mid-write; we hold its lock
            stale.unlink(missing_ok=True)
        return None

    def _train(self, payloads, models: dict, train, images_seen, keys) -> list[StoredModel]:
        """Train ``models`` (position -> model) together and keep each, as ``train`` finishes it or
        at the end: on disk, or in memory."""
        which, stored = list(models), {}

        def keep(k: int, metrics: dict, seconds: float) -> None:
            i = which[k]
            images = images_seen[i] if images_seen is not None else None
            stored[i] = self._keep(keys[i], payloads[i], models[i], metrics, seconds, len(which), images)

        started = time.perf_counter()
        metrics = train([models[i] for i in which], which, keep)
        share = (time.perf_counter() - started) / len(which)
        for k, m in enumerate(metrics or []):
            if which[k] not in stored:
                keep(k, m, share)
        return [stored[i] for i in which]

    def _keep(self, key, payload, model, metrics, seconds, together, images) -> StoredModel:
        """Store one trained model with its manifest (its training seconds, how many trained with it
        and, given the ``images`` it saw in training, images per second)."""
        manifest = {
            "key": key,
            "layout": layout_of(model),  # as training left it, for _load
            "payload": payload,
            "metrics": metrics,
            "train_seconds": round(seconds, 3),
            "trained_together": together,
        }
        if images and seconds > 0:
            manifest["images_per_second"] = round(images / seconds, 1)
        path = None
        if self.root is not None:
            path, manifest_path = self.paths(key)
            save_weights(model, path)
            atomic_write_text(manifest_path, json.dumps(manifest, indent=2, default=str))
        stored = StoredModel(model.eval(), manifest, path, False)
        if self.root is None:
            self._memory[key] = stored
        return stored
