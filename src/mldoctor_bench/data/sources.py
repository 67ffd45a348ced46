"""Where a dataset's files live under ``data.root``, and the one path every file-based loader takes.

A :class:`Source` names the folder and files of a dataset's official layout (torchvision's, where
torchvision has one) and says how to get them. :func:`prepare` checks the files are there (or
downloads them with torchvision when ``data.download=true``), then returns the cached preprocessing
or builds it: a missing or broken dataset fails here, before any training, with a message that
names the dataset, the folder, the files and how to get them.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from mldoctor_bench.data import images
from mldoctor_bench.data.base import SILENT, DataUnavailableError, Feedback, ImageData, Note
from mldoctor_bench.data.cache import cached_dataset, code_digest

DEFAULT_IMAGE_SIZE = 64  # the paper's datasets are all resized to 64x64 (ML-Doctor, Liu et al. 2022)


class MalformedFile(ValueError):
    """A dataset file is present but cannot be what the official release holds (truncated, edited)."""


@dataclass(frozen=True)
class DataSettings:
    """The ``data`` config section as a loader needs it.

    Attributes:
        root: folder holding the datasets in their official layouts.
        image_size: side of the square images, or ``None`` for the dataset's default.
        cache_dir: where preprocessed tensors are cached; ``None`` disables the cache.
        download: let torchvision download a missing dataset where it can.
    """

    root: Path
    image_size: Optional[int] = None
    cache_dir: Optional[Path] = None
    download: bool = False

    @classmethod
    def from_config(cls, data_cfg: Any) -> "DataSettings":
        """Read ``root``, ``image_size``, ``cache_dir`` and ``download`` (``None``: all defaults)."""
        cfg = data_cfg if data_cfg is not None else {}
        size, cache_dir = cfg.get("image_size"), cfg.get("cache_dir")
        return cls(
            root=Path(str(cfg.get("root", "data"))).expanduser().resolve(),
            image_size=None if size is None else int(size),
            cache_dir=None if cache_dir is None else Path(str(cache_dir)).expanduser().resolve(),
            download=bool(cfg.get("download", False)),
        )

    def size(self, default: int) -> int:
        """The image side to produce: ``image_size`` when set, else the dataset's ``default``."""
        return default if self.image_size is None else self.image_size


@dataclass(frozen=True)
class Source:
    """A dataset's files under ``data.root`` and how a user gets them.

    Attributes:
        dataset: registry name.
        folder: the dataset's folder, relative to ``data.root`` (``""``: the root itself).
        files: the entries expected in ``folder``; a trailing ``/`` marks a folder of images.
        how_to_get: instructions shown when files are missing.
        download: torchvision's downloader, called with ``data.root``; ``None`` when there is none.
        suffixes: accepted variants of each file name (``("", ".gz")``: plain or gzipped).
    """

    dataset: str
    folder: str
    files: tuple[str, ...]
    how_to_get: str
    download: Optional[Callable[[str], None]] = None
    suffixes: tuple[str, ...] = ("",)

    def find(self, root: Path, name: str) -> Optional[Path]:
        """The path of expected entry ``name`` (first accepted variant present), or ``None``."""
        for suffix in self.suffixes:
            path = root / self.folder / (name.rstrip("/") + suffix)
            if name.endswith("/"):
                if path.is_dir() and any(e.is_file() for e in os.scandir(path)):
                    return path
            elif path.is_file():
                return path
        return None

    def locate(self, root: Path, download: bool, note: Note = SILENT.note) -> list[Path]:
        """Paths of all expected entries; downloads first if asked; else raises listing what is missing."""
        missing = [name for name in self.files if self.find(root, name) is None]
        if missing and download:
            self.fetch(root, note)
            missing = [name for name in self.files if self.find(root, name) is None]
        if missing:
            variants = (
                f" (also accepted with {', '.join(s for s in self.suffixes if s)})" if len(self.suffixes) > 1 else ""
            )
            raise DataUnavailableError(
                f"dataset {self.dataset!r} not found in {root / self.folder}\n"
                f"  missing:  {', '.join(missing)}\n"
                f"  expected: {', '.join(self.files)}{variants} in {root / self.folder} "
                f"(data.root={root})\n"
                f"  to get it: {self.how_to_get}"
            )
        return [self.find(root, name) for name in self.files]  # type: ignore[misc]

    def fetch(self, root: Path, note: Note = SILENT.note) -> None:
        """Download with torchvision into ``root`` (``data.download=true``)."""
        if self.download is None:
            raise DataUnavailableError(
                f"dataset {self.dataset!r} cannot be downloaded automatically (data.download=true); {self.how_to_get}"
            )
        root.mkdir(parents=True, exist_ok=True)
        note(f"downloading {self.dataset} into {root} with torchvision")
        try:
            self.download(str(root))
        except Exception as exc:  # no network, missing gdown, quota...: all mean "not available"
            raise DataUnavailableError(
                f"downloading dataset {self.dataset!r} into {root} failed: {exc}\n  to get it: {self.how_to_get}"
            ) from exc

    def incomplete(self, root: Path, detail: str) -> DataUnavailableError:
        """The error for files that are present but broken (truncated, partial copy)."""
        return DataUnavailableError(
            f"dataset {self.dataset!r} in {root / self.folder} is incomplete or damaged: {detail}\n"
            f"  expected: {', '.join(self.files)} in {root / self.folder}\n"
            f"  to get it: {self.how_to_get}"
        )


Builder = Callable[[list[Path], int, Feedback], ImageData]


def prepare(
    source: Source, data_cfg: Any, build: Builder, default_size: int = DEFAULT_IMAGE_SIZE, feedback: Feedback = SILENT
) -> ImageData:
    """Locate ``source``'s files and return their preprocessing, from the cache when it is there.

    ``build(paths, size, feedback)`` decodes the files (``paths`` in the order of ``source.files``) into
    ``size x size`` images; it runs only on a cache miss. The cache key covers the files' names,
    sizes and modification times, the image size, and the code of ``build`` and of the decoders.
    """
    settings = DataSettings.from_config(data_cfg)
    size = settings.size(default_size)
    paths = source.locate(settings.root, settings.download, feedback.note)
    key_settings = {"image_size": size, "code": code_digest(inspect.getfile(build), images.__file__)}

    def build_checked() -> ImageData:
        try:
            return build(paths, size, feedback)
        except (MalformedFile, OSError, EOFError) as exc:
            raise source.incomplete(settings.root, str(exc)) from exc

    return cached_dataset(
        source.dataset,
        paths,
        settings.root / source.folder,
        key_settings,
        settings.cache_dir,
        build_checked,
        feedback.note,
    )
