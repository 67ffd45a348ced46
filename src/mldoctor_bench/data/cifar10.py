"""CIFAR-10 (the original code base's fifth dataset): all 60,000 colour 32x32 images, 10 classes.

Read from torchvision's layout, ``data.root/cifar-10-batches-py/``: the official python batches
(``data_batch_1`` .. ``data_batch_5``, ``test_batch``). They are pickles, so they are read with an
unpickler that only rebuilds plain containers and numpy arrays, and only those six files are read.
No sensitive attribute.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mldoctor_bench.data import images
from mldoctor_bench.data.base import DATASETS, SILENT, Feedback, ImageData
from mldoctor_bench.data.sources import MalformedFile, Source, prepare

# The globals a numpy array's pickle refers to (numpy 1 and 2 module names); nothing else loads.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise MalformedFile(f"unexpected object {module}.{name} in a CIFAR-10 batch")
        return super().find_class(module, name)


def _download(root: str) -> None:
    from torchvision.datasets import CIFAR10

    CIFAR10(root, train=True, download=True)


SOURCE = Source(
    dataset="cifar10",
    folder="cifar-10-batches-py",
    files=tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
    how_to_get="run with data.download=true (torchvision.datasets.CIFAR10(root, download=True)), or "
    "unpack cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html into data.root",
    download=_download,
)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python batch: ``uint8`` images ``(N, 3, 32, 32)`` and ``int64`` labels ``(N,)``."""
    with open(path, "rb") as f:
        try:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, AttributeError, IndexError, TypeError) as exc:
            raise MalformedFile(f"{path.name} is not a CIFAR-10 python batch ({exc})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise MalformedFile(f"{path.name} lacks the b'data' and b'labels' entries of a CIFAR-10 batch")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise MalformedFile(f"{path.name}: data {data.shape} {data.dtype} and {len(labels)} labels do not match")
    if len(labels) and not 0 <= labels.min() <= labels.max() <= 9:
        raise MalformedFile(f"{path.name}: labels must be 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def build(paths: list[Path], size: int, feedback: Feedback = SILENT) -> ImageData:
    """The five training batches then the test batch, resized to ``size``."""
    parts = [read_batch(p) for p in paths]
    return ImageData(
        name="cifar10",
        images=images.from_array(np.concatenate([x for x, _ in parts]), size),
        labels=torch.from_numpy(np.concatenate([y for _, y in parts])),
        num_classes=10,
    )


@DATASETS.register("cifar10")
def load_cifar10(data_cfg: Any, feedback: Feedback = SILENT) -> ImageData:
    """CIFAR-10 train + test from ``data.root/cifar-10-batches-py/``."""
    return prepare(SOURCE, data_cfg, build, feedback=feedback)
