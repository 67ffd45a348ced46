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

import torch
from filelock import FileLock
from safetensors.torch import load_file
from torch import nn

from mldoctor_bench.files import atomic_write_text, save_weights
from mldoctor_bench.provenance import stable_hash


@dataclass
class StoredModel:
    """A trained model with its manifest (training metrics and how it was made)."""

    model: nn.Module
    manifest: dict
    path: Optional[Path]
    reused: bool


def chunks(items: list, size: Optional[int]) -> list[list]:
    """``items`` in parts of ``size`` (all in one part for None), a last part of one merged into the
    part before it: a model trains alone only when it is alone, so that how a model trains (one
    intra-op thread beside others, or all threads alone) does not depend on where the parts fall."""
    if not items:
        return []
    size = size or len(items)
    parts = [items[start : start + size] for start in range(0, len(items), size)]
    if len(parts) > 1 and len(parts[-1]) == 1:
        last = parts.pop()
        parts[-1] = parts[-1] + last
    return parts


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
            lambda models, which: [train(models[0])],
            None if images_seen is None else [images_seen],
        )[0]

    def get_or_train_many(
        self,
        payloads: Sequence[dict],
        build: Callable[[int], nn.Module],
        train: Callable[[list[nn.Module], list[int]], list[dict]],
        images_seen: Optional[Sequence[Optional[int]]] = None,
        chunk: Optional[int] = None,
    ) -> list[StoredModel]:
        """The models of ``payloads``: each loaded if stored; the missing ones built
        (``build(i)``) and trained together by ``train(models, which)``, which returns one metrics
        dict per model (``which``: their positions in ``payloads``), then stored.

        With ``chunk``, the missing models train about ``chunk`` at a time (:func:`chunks`) and each
        part is stored as soon as it is trained, so an interrupted group keeps what it finished (None:
        all in one call, as models stacked into one must). Each trained model's manifest records its share of the
        training time, the number trained together and, given ``images_seen``, images per second."""
        keys = [self.key(p) for p in payloads]
        with self._locked(keys):
            out: dict[int, StoredModel] = {}
            for i, key in enumerate(keys):
                found = self._load(key, lambda i=i: build(i))
                if found is not None:
                    out[i] = found
            for part in chunks([i for i in range(len(payloads)) if i not in out], chunk):
                models = {i: build(i) for i in part}
                out.update(zip(models, self._train(payloads, models, train, images_seen, keys)))
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
            model = build()
            model.load_state_dict(load_file(str(weights)))
            return StoredModel(model.eval(), json.loads(manifest_path.read_text()), weights, True)
        for stale in self.root.glob(f".{key}.*.tmp"):  # a writer killed mid-write; we hold its lock
            stale.unlink(missing_ok=True)
        return None

    def _train(self, payloads, models: dict, train, images_seen, keys) -> list[StoredModel]:
        """Train ``models`` (position -> model) together and keep each: on disk, or in memory."""
        which = list(models)
        started = time.perf_counter()
        metrics = train([models[i] for i in which], which)
        share = (time.perf_counter() - started) / len(which)
        stored = []
        for i, m in zip(which, metrics):
            # the layout the weights are saved and loaded in: a model used just after training then
            # computes what its reload computes, bit for bit (training leaves conv weights channels-last)
            models[i].to(memory_format=torch.contiguous_format)
            manifest = {
                "key": keys[i],
                "payload": payloads[i],
                "metrics": m,
                "train_seconds": round(share, 3),
                "trained_together": len(which),
            }
            if images_seen is not None and images_seen[i] and share > 0:
                manifest["images_per_second"] = round(images_seen[i] / share, 1)
            path = None
            if self.root is not None:
                path, manifest_path = self.paths(keys[i])
                save_weights(models[i], path)
                atomic_write_text(manifest_path, json.dumps(manifest, indent=2, default=str))
            stored.append(StoredModel(models[i].eval(), manifest, path, False))
            if self.root is None:
                self._memory[keys[i]] = stored[-1]
        return stored
