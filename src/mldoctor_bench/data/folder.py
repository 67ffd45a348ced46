"""An owner's own images in torchvision's ImageFolder layout: ``data.root/<class>/<image>``.

One subfolder per class; class ``i`` is the ``i``-th subfolder name in sorted order, and images are
listed as :class:`torchvision.datasets.ImageFolder` lists them (each class's folder walked in sorted
order, subfolders included, files with torchvision's image extensions), so a model trained with
torchvision on the same folder has the same label for every class. Each image is converted to
``data.in_channels`` (3: RGB, 1: grey) and resized to ``data.image_size`` (null: 64).

Each example keeps its path relative to ``data.root`` (``cat/001.png``) in :attr:`ImageData.files`,
in row order: a members file names examples by these paths.

``data.attributes=CSV`` gives the dataset a sensitive attribute: rows of (file relative to
``data.root``, value); a first line whose first field names no image is a header, and its second
field names the attribute. Values are mapped to ``0..k-1`` in sorted order (numerically when all are
integers). Every image must have a row; rows for other files are ignored.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from mldoctor_bench.data import images
from mldoctor_bench.data.base import DATASETS, SILENT, DataUnavailableError, Feedback, ImageData
from mldoctor_bench.data.cache import cached_dataset, code_digest
from mldoctor_bench.data.sources import DEFAULT_IMAGE_SIZE, DataSettings

# torchvision.datasets.folder.IMG_EXTENSIONS, matched case-insensitively as torchvision does
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MODES = {1: "L", 3: "RGB"}  # data.in_channels -> the Pillow mode images are converted to
LAYOUT = "one subfolder of images per class, e.g. DIR/cat/001.png, DIR/dog/002.jpg (torchvision's ImageFolder layout)"


class FolderError(DataUnavailableError):
    """An image folder or attribute file that cannot be read as asked; the message is one line with the fix."""


@dataclass(frozen=True)
class FolderSettings:
    """The ``data`` keys the folder dataset reads (see :class:`DataSettings` for the shared ones)."""

    common: DataSettings
    in_channels: int = 3
    attributes: Optional[Path] = None

    @classmethod
    def from_config(cls, data_cfg: Any) -> "FolderSettings":
        cfg = data_cfg if data_cfg is not None else {}
        channels = cfg.get("in_channels")
        channels = 3 if channels is None else int(channels)
        if channels not in MODES:
            raise FolderError(f"data.in_channels={channels} is not supported: use 3 (RGB) or 1 (grey)")
        attributes = cfg.get("attributes")
        return cls(
            common=DataSettings.from_config(data_cfg),
            in_channels=channels,
            attributes=None if attributes is None else Path(str(attributes)).expanduser().resolve(),
        )


def find_classes(root: Path) -> list[str]:
    """The class folders of ``root`` in sorted order (class ``i`` is the ``i``-th); raise
    :class:`FolderError` when ``root`` is not a folder or holds fewer than two class folders."""
    if not root.is_dir():
        raise FolderError(
            f"dataset 'folder': data.root={root} is not a folder; point data.root at a folder with {LAYOUT}"
        )
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise FolderError(
            f"dataset 'folder': {root} has {len(classes)} class folder(s) ({found}); "
            f"a classifier needs at least 2: {LAYOUT}"
        )
    return classes


def list_images(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    """``(path relative to root, class index)`` of every image, in torchvision ImageFolder's order;
    raise :class:`FolderError` naming a class folder that holds no image."""
    samples: list[tuple[str, int]] = []
    for index, name in enumerate(classes):
        found = 0
        for folder, _, fnames in sorted(os.walk(root / name, followlinks=True)):
            for fname in sorted(fnames):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    samples.append(((Path(folder) / fname).relative_to(root).as_posix(), index))
                    found += 1
        if not found:
            raise FolderError(
                f"dataset 'folder': class folder {root / name} holds no image "
                f"({', '.join(IMG_EXTENSIONS)}); add images or remove the folder"
            )
    return samples


def _sort_key(values: set[str]):
    if all(v.lstrip("-").isdigit() for v in values):
        return int
    return str


def read_attributes(path: Path, files: list[str]) -> tuple[torch.Tensor, int, str]:
    """The attribute of each of ``files`` from CSV ``path``: codes in row order, how many values,
    and the attribute's name with the meaning of each code (for reports)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if row and any(field.strip() for field in row)]
    known = set(files)
    header = "attribute"
    if rows and rows[0][0].strip() not in known:
        header = rows[0][1].strip() if len(rows[0]) > 1 and rows[0][1].strip() else header
        rows = rows[1:]
    values: dict[str, str] = {}
    for row in rows:
        if len(row) < 2:
            raise FolderError(f"data.attributes={path}: row {row!r} has {len(row)} field(s); each row is: file,value")
        name, value = row[0].strip(), row[1].strip()
        if values.get(name, value) != value:
            raise FolderError(f"data.attributes={path}: {name} is given two values, {values[name]!r} and {value!r}")
        values[name] = value
    missing = [f for f in files if f not in values]
    if missing:
        raise FolderError(
            f"data.attributes={path} has no row for {missing[0]} ({len(missing)} of {len(files)} images "
            f"missing); give every image a row: file relative to data.root,value"
        )
    used = {values[f] for f in files}
    if len(used) < 2:
        raise FolderError(
            f"data.attributes={path}: every image has the value {used.pop()!r}; an attribute needs 2 or more values"
        )
    order = sorted(used, key=_sort_key(used))
    code = {v: i for i, v in enumerate(order)}
    meaning = ", ".join(f"{i} {v}" for i, v in enumerate(order))
    return torch.tensor([code[values[f]] for f in files], dtype=torch.int64), len(order), f"{header} ({meaning})"


def build(
    root: Path,
    samples: list[tuple[str, int]],
    classes: list[str],
    s: FolderSettings,
    size: int,
    feedback: Feedback = SILENT,
) -> ImageData:
    """Decode ``samples`` to ``s.in_channels`` x ``size`` x ``size``, with the attribute when asked."""
    files = [f for f, _ in samples]
    attribute, num_values, attribute_name = (None, 0, "")
    if s.attributes is not None:
        attribute, num_values, attribute_name = read_attributes(s.attributes, files)
    try:
        pixels = images.decode_files(
            [root / f for f in files], size, "folder", feedback.progress, mode=MODES[s.in_channels]
        )
    except images.UnreadableImage as exc:
        raise FolderError(f"dataset 'folder': {exc}; remove or replace the file") from None
    return ImageData(
        name="folder",
        images=pixels,
        labels=torch.tensor([label for _, label in samples], dtype=torch.int64),
        num_classes=len(classes),
        attribute=attribute,
        num_attribute_classes=num_values,
        attribute_name=attribute_name,
        files=tuple(files),
    )


@DATASETS.register("folder")
def load_folder(data_cfg: Any, feedback: Feedback = SILENT) -> ImageData:
    """Images in ``data.root/<class>/``: classes in sorted folder order, converted to
    ``data.in_channels``, with the sensitive attribute of ``data.attributes`` when given."""
    s = FolderSettings.from_config(data_cfg)
    root, size = s.common.root, s.common.size(DEFAULT_IMAGE_SIZE)
    classes = find_classes(root)
    samples = list_images(root, classes)
    key_settings = {
        "image_size": size,
        "in_channels": s.in_channels,
        "classes": classes,
        "code": code_digest(__file__, images.__file__),
    }
    key_settings["attributes"] = None
    if s.attributes is not None:  # the CSV may live outside data.root: its stamp goes in the key
        if not s.attributes.is_file():
            raise FolderError(
                f"data.attributes={s.attributes} is not a file; give a CSV of (file relative to data.root, value) rows"
            )
        st = s.attributes.stat()
        key_settings["attributes"] = (str(s.attributes), st.st_size, st.st_mtime_ns)
    data = cached_dataset(
        "folder",
        [root / f for f, _ in samples],
        root,
        key_settings,
        s.common.cache_dir,
        lambda: build(root, samples, classes, s, size, feedback),
        feedback.note,
    )
    feedback.note(
        f"folder: {len(data)} images in {len(classes)} classes from {root} "
        f"({', '.join(f'{i} {c}' for i, c in enumerate(classes[:10]))}{', ...' if len(classes) > 10 else ''})"
    )
    return data
