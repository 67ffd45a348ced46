"""UTKFace (ML-Doctor, Liu et al. 2022): aligned and cropped faces; task race (4 classes), attribute gender.

Read from ``data.root/UTKFace/``, the folder the official "Aligned&Cropped Faces" archive unpacks
to. Labels come from the file names, ``age_gender_race_date.jpg.chip.jpg`` (plain ``.jpg`` is also
accepted): gender 0 male / 1 female, race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others. As in the
original, race 4 is left out, giving 4 classes. The release holds a few names with a missing field;
those, and any name with an empty, non-integer or out-of-range field, are skipped and counted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch

from mldoctor_bench.data import images
from mldoctor_bench.data.base import DATASETS, SILENT, Feedback, ImageData
from mldoctor_bench.data.sources import MalformedFile, Source, prepare

RACES = ("White", "Black", "Asian", "Indian")  # race 4, "Others", is left out
OTHERS = 4
MAX_AGE = 116  # the oldest age in the release
NAME_SUFFIXES = (".jpg.chip.jpg", ".jpg")

SOURCE = Source(
    dataset="utkface",
    folder="",
    files=("UTKFace/",),
    how_to_get="download the 'Aligned&Cropped Faces' archive (UTKFace.tar.gz) from "
    "https://susanqq.github.io/UTKFace/ and unpack it into data.root, giving "
    "data.root/UTKFace/<age>_<gender>_<race>_<date>.jpg.chip.jpg (there is no automatic download)",
)


def parse_name(name: str) -> Optional[tuple[int, int, int]]:
    """``(age, gender, race)`` from an UTKFace file name, or ``None`` when the name is malformed."""
    stem = next((name[: -len(s)] for s in NAME_SUFFIXES if name.endswith(s)), None)
    if stem is None:
        return None
    fields = stem.split("_")
    if len(fields) != 4 or not all(f.isascii() and f.isdigit() for f in fields):
        return None
    age, gender, race = (int(f) for f in fields[:3])
    if age > MAX_AGE or gender > 1 or race > OTHERS:
        return None
    return age, gender, race


def build(paths: list[Path], size: int, feedback: Feedback = SILENT) -> ImageData:
    """Faces of races 0-3, sorted by file name, resized to ``size``; gender as the attribute."""
    folder = paths[0]
    names = sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.endswith(".jpg"))
    parsed = {name: parse_name(name) for name in names}
    malformed = [name for name, fields in parsed.items() if fields is None]
    kept = [name for name, fields in parsed.items() if fields is not None and fields[2] != OTHERS]
    if malformed:
        feedback.note(f"utkface: skipped {len(malformed)} files with malformed names, e.g. {malformed[:3]}")
    feedback.note(f"utkface: left out {len(names) - len(malformed) - len(kept)} faces of race 4 (Others)")
    if not kept:
        raise MalformedFile(f"no file in {folder} is named age_gender_race_date.jpg.chip.jpg with race 0-3")
    return ImageData(
        name="utkface",
        images=images.decode_files([folder / name for name in kept], size, "utkface", feedback.progress),
        labels=torch.tensor([parsed[name][2] for name in kept], dtype=torch.int64),
        num_classes=len(RACES),
        attribute=torch.tensor([parsed[name][1] for name in kept], dtype=torch.int64),
        num_attribute_classes=2,
        attribute_name="gender (0 male, 1 female)",
    )


@DATASETS.register("utkface")
def load_utkface(data_cfg: Any, feedback: Feedback = SILENT) -> ImageData:
    """UTKFace faces from ``data.root/UTKFace/``: race (4 classes) with gender as the attribute."""
    return prepare(SOURCE, data_cfg, build, feedback=feedback)
