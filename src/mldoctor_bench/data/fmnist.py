"""Fashion-MNIST (ML-Doctor, Liu et al. 2022): train + test = 70,000 grey 28x28 garments, 10 classes.

Read from torchvision's layout, ``data.root/FashionMNIST/raw/``, in the idx format of the official
release, gzipped (as downloaded) or not (as torchvision extracts them). No sensitive attribute.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mldoctor_bench.data import images
from mldoctor_bench.data.base import DATASETS, SILENT, Feedback, ImageData
from mldoctor_bench.data.sources import MalformedFile, Source, prepare

IDX_UBYTE = 0x08  # the idx type code of unsigned bytes, the only one the release uses


def _download(root: str) -> None:
    from torchvision.datasets import FashionMNIST

    for train in (True, False):
        FashionMNIST(root, train=train, download=True)


SOURCE = Source(
    dataset="fmnist",
    folder="FashionMNIST/raw",
    files=("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    how_to_get="run with data.download=true (torchvision.datasets.FashionMNIST(root, train=True/False, "
    "download=True)), or put the four idx files from https://github.com/zalandoresearch/fashion-mnist "
    "in data.root/FashionMNIST/raw/",
    download=_download,
    suffixes=("", ".gz"),
)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (``.gz`` or plain) as a ``uint8`` array of the shape its header declares."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != IDX_UBYTE:
        raise MalformedFile(f"{path.name} is not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise MalformedFile(f"{path.name} declares shape {dims} but holds {data.size} values")
    return data.reshape(dims)


def build(paths: list[Path], size: int, feedback: Feedback = SILENT) -> ImageData:
    """Train then test images, resized to ``size``; labels 0..9 as in the files."""
    train_x, train_y, test_x, test_y = (read_idx(p) for p in paths)
    for x, y, split in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise MalformedFile(f"{split} images {x.shape} and labels {y.shape} do not match")
    labels = np.concatenate([train_y, test_y]).astype(np.int64)
    if labels.max(initial=0) > 9:
        raise MalformedFile(f"labels must be 0..9, found {labels.max()}")
    return ImageData(
        name="fmnist",
        images=images.from_array(np.concatenate([train_x, test_x]), size),
        labels=torch.from_numpy(labels),
        num_classes=10,
    )


@DATASETS.register("fmnist")
def load_fmnist(data_cfg: Any, feedback: Feedback = SILENT) -> ImageData:
    """Fashion-MNIST train + test from ``data.root/FashionMNIST/raw/``."""
    return prepare(SOURCE, data_cfg, build, feedback=feedback)
