"""Content-addressed store of trained models: a model is never trained twice for the same inputs.

A model's key hashes everything that determines its weights (:meth:`TrainJob.cache_key_payload`).
Weights are safetensors (no pickle), written to a temporary file and renamed, with the JSON manifest
written last as the completion marker. A file lock per key makes parallel jobs that need the same
model train it once: the others wait, then load it. A writer killed mid-write leaves at most a
temporary file, which the next holder of the key's lock removes (the OS releases the lock itself).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

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


class ModelStore:
    """Models keyed by the hash of their training job, under ``root`` (disabled when ``None``)."""

    def __init__(self, root: Optional[Path]) -> None:
        self.root = Path(root) if root is not None else None  # created on first use

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def key(self, payload: dict) -> str:
        return stable_hash(payload, length=24)

    def paths(self, key: str) -> tuple[Path, Path]:
        assert self.root is not None
        return self.root / f"{key}.safetensors", self.root / f"{key}.json"

    def get_or_train(
        self,
        payload: dict,
        build: Callable[[], nn.Module],
        train: Callable[[nn.Module], dict],
    ) -> StoredModel:
        """Load the model for ``payload`` if stored, else ``train(build())`` and store it.

        ``train`` trains the module in place and returns metrics to keep in the manifest.
        """
        if self.root is None:
            model = build()
            metrics = train(model)
            return StoredModel(model, {"payload": payload, "metrics": metrics}, None, False)
        key = self.key(payload)
        weights, manifest_path = self.paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f"{key}.lock")):
            if manifest_path.exists() and weights.exists():
                model = build()
                model.load_state_dict(load_file(str(weights)))
                return StoredModel(model.eval(), json.loads(manifest_path.read_text()), weights, True)
            for stale in self.root.glob(f".{key}.*.tmp"):  # a writer killed mid-write; we hold its lock
                stale.unlink(missing_ok=True)
            model = build()
            started = time.time()
            metrics = train(model)
            save_weights(model, weights)
            manifest = {
                "key": key,
                "payload": payload,
                "metrics": metrics,
                "train_seconds": round(time.time() - started, 3),
            }
            atomic_write_text(manifest_path, json.dumps(manifest, indent=2, default=str))
            return StoredModel(model.eval(), manifest, weights, False)
