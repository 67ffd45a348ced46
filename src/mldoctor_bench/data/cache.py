"""The preprocessed-dataset cache: decoded, resized ``uint8`` tensors in one safetensors file.

The key hashes what the tensors are made from without reading it: each source file's name, size
and modification time (so a second run opens no image at all), the preprocessing settings, and the
source of the code that decodes. The file is written through a temporary name and a rename, under
a lock, so parallel sweep jobs decode a dataset once and never read a half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import save_file

from mldoctor_bench.data.base import SILENT, ImageData, Note
from mldoctor_bench.files import atomic_write
from mldoctor_bench.provenance import stable_hash

Stamp = tuple[str, int, int]  # (name relative to the dataset folder, size in bytes, mtime in ns)


def file_stamps(paths: Iterable[Path], base: Path) -> list[Stamp]:
    """Name, size and modification time of each file; a folder stands for the files directly in it."""
    stamps: list[Stamp] = []
    for path in paths:
        files = sorted(Path(e.path) for e in os.scandir(path) if e.is_file()) if path.is_dir() else [path]
        for f in files:
            st = f.stat()
            stamps.append((f.relative_to(base).as_posix(), st.st_size, st.st_mtime_ns))
    return stamps


def code_digest(*files: str) -> str:
    """Hash of source files (the decoder's code): a change in how images are made is a new key."""
    h = hashlib.sha256()
    for name in files:
        h.update(Path(name).read_bytes())
    return h.hexdigest()[:12]


def cache_key(dataset: str, stamps: list[Stamp], settings: dict) -> str:
    """The cache key of ``dataset`` made from files ``stamps`` with preprocessing ``settings``."""
    return stable_hash({"dataset": dataset, "files": stamps, "settings": settings}, length=24)


def save_images(path: Path, data: ImageData) -> None:
    """Write ``data`` as safetensors (tensors plus the labels' meaning and the file names as
    metadata), atomically."""
    tensors = {"images": data.images.contiguous(), "labels": data.labels.contiguous()}
    if data.attribute is not None:
        tensors["attribute"] = data.attribute.contiguous()
    meta = {
        "name": data.name,
        "num_classes": str(data.num_classes),
        "num_attribute_classes": str(data.num_attribute_classes),
        "attribute_name": data.attribute_name,
    }
    if data.files is not None:
        meta["files"] = json.dumps(list(data.files))
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_images(path: Path) -> ImageData:
    """Read a dataset written by :func:`save_images`."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return ImageData(
        name=meta["name"],
        images=tensors["images"],
        labels=tensors["labels"],
        num_classes=int(meta["num_classes"]),
        attribute=tensors.get("attribute"),
        num_attribute_classes=int(meta["num_attribute_classes"]),
        attribute_name=meta["attribute_name"],
        files=tuple(json.loads(meta["files"])) if "files" in meta else None,
    )


def cached_dataset(
    dataset: str,
    sources: list[Path],
    base: Path,
    settings: dict,
    cache_dir: Optional[Path],
    build: Callable[[], ImageData],
    note: Note = SILENT.note,
) -> ImageData:
    """Return the cached preprocessing of ``sources``, building and storing it on a miss.

    ``cache_dir=None`` disables the cache (every call builds); ``note`` hears what happened.
    """
    size = settings.get("image_size")
    if cache_dir is None:
        note(f"decoding {dataset} from {base} ({size}x{size}; dataset cache disabled)")
        return build()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(dataset, file_stamps(sources, base), settings)
    path = cache_dir / f"{dataset}_{size}px_{key}.safetensors"
    with FileLock(str(path.with_suffix(".lock"))):
        if not path.exists():
            t0 = time.perf_counter()
            note(f"decoding {dataset} from {base} ({size}x{size}); caching to {path}")
            data = build()
            save_images(path, data)
            note(f"decoded {len(data):,} {dataset} images in {time.perf_counter() - t0:.1f} s")
            return data
    t0 = time.perf_counter()
    data = load_images(path)
    note(
        f"[dim]loaded {len(data):,} preprocessed {dataset} images ({size}x{size}) from cache {path} "
        f"in {time.perf_counter() - t0:.1f} s[/]"
    )
    return data
