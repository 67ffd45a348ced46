"""CelebA (ML-Doctor, Liu et al. 2022): aligned faces; task an 8-class code of three attributes,
attribute a 4-class one.

Read from torchvision's layout, ``data.root/celeba/``: ``img_align_celeba/*.jpg``,
``list_attr_celeba.txt`` (first line the image count, second the 40 attribute names, then one row
per image of -1/1 values) and ``list_eval_partition.txt``. All three partitions are used (the
four-quarter split replaces them); the partition file only serves to check that the copy is whole.
With each attribute mapped -1 -> 0, 1 -> 1:
task label = Heavy_Makeup + 2 * Mouth_Slightly_Open + 4 * Smiling (8 classes);
sensitive attribute = Male + 2 * Young (4 classes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mldoctor_bench.data import images
from mldoctor_bench.data.base import DATASETS, SILENT, Feedback, ImageData
from mldoctor_bench.data.sources import MalformedFile, Source, prepare

TASK_ATTRIBUTES = ("Heavy_Makeup", "Mouth_Slightly_Open", "Smiling")
SENSITIVE_ATTRIBUTES = ("Male", "Young")


def _download(root: str) -> None:
    from torchvision.datasets import CelebA

    CelebA(root, split="all", download=True)


SOURCE = Source(
    dataset="celeba",
    folder="celeba",
    files=("img_align_celeba/", "list_attr_celeba.txt", "list_eval_partition.txt"),
    how_to_get="run with data.download=true (torchvision.datasets.CelebA(root, split='all', download=True); "
    "needs the gdown package and Google Drive access), or get img_align_celeba.zip, list_attr_celeba.txt "
    "and list_eval_partition.txt from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html and put them in "
    "data.root/celeba/ (unzip the images there)",
    download=_download,
)


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Image names, attribute names and the ``int8`` -1/1 table of ``list_attr_celeba.txt``."""
    lines = path.read_text().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise MalformedFile(f"{path.name} must start with the image count and the attribute names")
    count, header = int(lines[0]), lines[1].split()
    rows = [line for line in lines[2:] if line.strip()]
    if count == 0 or len(rows) != count:
        raise MalformedFile(f"{path.name} announces {count} images but lists {len(rows)}")
    try:  # numpy's C parser: about a second for the 202,599 rows
        table = np.loadtxt(rows, dtype=np.int8, usecols=range(1, len(header) + 1), ndmin=2)
    except ValueError as exc:
        raise MalformedFile(f"{path.name} (row 1 is line 3): {exc}") from exc
    if not np.isin(table, (-1, 1)).all():
        raise MalformedFile(f"{path.name}: attribute values must be -1 or 1")
    return [row.split(maxsplit=1)[0] for row in rows], header, table


def binary_code(table: np.ndarray, header: list[str], names: tuple[str, ...]) -> np.ndarray:
    """``sum_i 2**i * bit(names[i])`` per row, each -1/1 attribute mapped to a 0/1 bit."""
    missing = [n for n in names if n not in header]
    if missing:
        raise MalformedFile(f"list_attr_celeba.txt has no attribute {', '.join(missing)}")
    bits = (table[:, [header.index(n) for n in names]] + 1) // 2
    return (bits.astype(np.int64) << np.arange(len(names))).sum(axis=1)


def build(paths: list[Path], size: int, feedback: Feedback = SILENT) -> ImageData:
    """Every image listed in the attribute file, in its order, resized to ``size``."""
    folder, attr_path, partition_path = paths
    names, header, table = read_attributes(attr_path)
    partitioned = {line.split()[0] for line in partition_path.read_text().splitlines() if line.strip()}
    if partitioned != set(names):
        raise MalformedFile(f"{partition_path.name} and {attr_path.name} list different images")
    present = {e.name for e in os.scandir(folder)}
    absent = [n for n in names if n not in present]
    if absent:
        raise MalformedFile(
            f"{len(absent)} of the {len(names)} listed images are missing from {folder}, e.g. {absent[:3]}"
        )
    return ImageData(
        name="celeba",
        images=images.decode_files([folder / n for n in names], size, "celeba", feedback.progress),
        labels=torch.from_numpy(binary_code(table, header, TASK_ATTRIBUTES)),
        num_classes=2 ** len(TASK_ATTRIBUTES),
        attribute=torch.from_numpy(binary_code(table, header, SENSITIVE_ATTRIBUTES)),
        num_attribute_classes=2 ** len(SENSITIVE_ATTRIBUTES),
        attribute_name="Male + 2 * Young",
    )


@DATASETS.register("celeba")
def load_celeba(data_cfg: Any, feedback: Feedback = SILENT) -> ImageData:
    """CelebA from ``data.root/celeba/``: 8-class makeup/mouth/smile code, Male/Young attribute."""
    return prepare(SOURCE, data_cfg, build, feedback=feedback)
