"""STL-10 (ML-Doctor, Liu et al. 2022): train (5,000) + test (8,000) colour 96x96 images, 10 classes.

Read from torchvision's layout, ``data.root/stl10_binary/``: the official binaries, where each
image is 3 x 96 x 96 bytes stored column-major and labels are bytes 1..10. The unlabelled split
is not used. No sensitive attribute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mldoctor_bench.data import images
from mldoctor_bench.data.base import DATASETS, SILENT, Feedback, ImageData
from mldoctor_bench.data.sources import MalformedFile, Source, prepare

SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE


def _download(root: str) -> None:
    from torchvision.datasets import STL10

    STL10(root, split="train", download=True)


SOURCE = Source(
    dataset="stl10",
    folder="stl10_binary",
    files=("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"),
    how_to_get="run with data.download=true (torchvision.datasets.STL10(root, split='train', download=True)), "
    "or unpack stl10_binary.tar.gz from https://cs.stanford.edu/~acoates/stl10/ into data.root",
    download=_download,
)


def read_split(x_path: Path, y_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 96, 96)`` in row-major order and labels ``0..9`` of one split."""
    raw = np.fromfile(x_path, dtype=np.uint8)
    if raw.size % IMAGE_BYTES:
        raise MalformedFile(f"{x_path.name} holds {raw.size} bytes, not a whole number of {IMAGE_BYTES}-byte images")
    x = raw.reshape(-1, 3, SIDE, SIDE).transpose(0, 1, 3, 2)  # stored column-major
    y = np.fromfile(y_path, dtype=np.uint8).astype(np.int64)
    if len(y) != len(x):
        raise MalformedFile(f"{x_path.name} holds {len(x)} images but {y_path.name} {len(y)} labels")
    if len(y) and not 1 <= y.min() <= y.max() <= 10:
        raise MalformedFile(f"{y_path.name}: labels must be 1..10")
    return x, y - 1


def build(paths: list[Path], size: int, feedback: Feedback = SILENT) -> ImageData:
    """Train then test, resized to ``size``."""
    train_x, train_y = read_split(paths[0], paths[1])
    test_x, test_y = read_split(paths[2], paths[3])
    return ImageData(
        name="stl10",
        images=images.from_array(np.concatenate([train_x, test_x]), size),
        labels=torch.from_numpy(np.concatenate([train_y, test_y])),
        num_classes=10,
    )


@DATASETS.register("stl10")
def load_stl10(data_cfg: Any, feedback: Feedback = SILENT) -> ImageData:
    """STL-10 train + test from ``data.root/stl10_binary/``."""
    return prepare(SOURCE, data_cfg, build, feedback=feedback)
