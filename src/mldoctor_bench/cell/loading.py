"""Reloading a cell's target: its model, partition and manifest, and its predictions on new images."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mldoctor_bench.cellfiles import CellFiles
from mldoctor_bench.data import Splits
from mldoctor_bench.defenses import build_defense
from mldoctor_bench.inference import CONTIGUOUS, in_layout, predict_logits
from mldoctor_bench.models import build_model


def load_target(cell_dir: Path | str) -> tuple[torch.nn.Module, Splits, dict]:
    """Reload a cell's target model (eval mode, on the CPU), its partition and its manifest.

    The model expects :func:`mldoctor_bench.data.base.normalise`'d inputs, ``uint8`` pixels scaled
    to ``[-1, 1]`` (not ``/ 255``); :func:`predict` applies that for you."""
    from safetensors.torch import load_file

    cell_dir = Path(cell_dir).expanduser()

    manifest = json.loads(CellFiles(cell_dir).target_manifest.read_text())
    model = build_model(manifest["arch"], manifest["in_channels"], manifest["num_classes"], manifest["image_size"])
    model = build_defense(manifest.get("defense", {"name": "none"})).prepare_model(model)
    model = in_layout(model, manifest.get("layout", CONTIGUOUS))  # as it was trained
    model.load_state_dict(load_file(str(cell_dir / manifest["weights"])))
    return model.eval(), Splits.load(cell_dir / manifest["splits"]), manifest


def predict(cell_dir: Path | str, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(N, classes)`` of a cell's target for ``uint8`` images ``(N, C, H, W)``
    of the dataset's channels and size (as the dataset's ``images`` hold them), with the model's own
    preprocessing applied: ``predict(cell, data.images[splits.target_test])``."""
    model, _, manifest = load_target(cell_dir)
    expected = (manifest["in_channels"], manifest["image_size"], manifest["image_size"])
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"predict takes uint8 images of shape (N, {', '.join(map(str, expected))}), got "
            f"{images.dtype} {tuple(images.shape)}; pass the dataset's images (0-255), not normalised ones"
        )
    with torch.no_grad():
        return torch.softmax(predict_logits(model, images), dim=1)
