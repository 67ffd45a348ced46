"""The in-memory dataset every loader returns, and the dataset registry.

Images are held once as a ``uint8`` tensor ``(N, C, H, W)``; training and attacks slice it by index
and normalise on the fly, so no per-sample decoding happens in any loop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from mldoctor_bench.registry import Registry


class DataUnavailableError(RuntimeError):
    """A dataset's files are missing or incomplete; the message says where and how to get them."""


@dataclass
class ImageData:
    """A labelled image dataset with an optional sensitive attribute.

    Attributes:
        name: registry name (``dataset=`` on the command line).
        images: ``uint8`` tensor ``(N, C, H, W)``.
        labels: ``int64`` tensor ``(N,)`` of task labels in ``[0, num_classes)``.
        num_classes: number of task classes.
        attribute: ``int64`` tensor ``(N,)`` of the sensitive attribute, or ``None``.
        num_attribute_classes: number of attribute values (0 when there is no attribute).
        attribute_name: what the attribute means, for reports.
        files: each example's file relative to the dataset's folder, in row order (``cat/001.png``),
            for datasets whose examples are files a person names (``folder``); ``None`` otherwise.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    attribute: Optional[torch.Tensor] = None
    num_attribute_classes: int = 0
    attribute_name: str = ""
    files: Optional[tuple[str, ...]] = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        if len(self.labels) != len(self.images):
            raise ValueError("labels and images differ in length")
        if self.attribute is not None and len(self.attribute) != len(self.images):
            raise ValueError("attribute and images differ in length")
        if self.files is not None and len(self.files) != len(self.images):
            raise ValueError("files and images differ in length")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def fingerprint(self) -> str:
        """A content hash of images, labels and attribute: the dataset's part of every cache key.

        Computed once per object (hashing a large dataset takes seconds)."""
        cached = self.__dict__.get("_fingerprint")
        if cached is not None:
            return cached
        h = hashlib.sha256()
        for t in (self.images, self.labels, self.attribute):
            if t is not None:
                h.update(str(tuple(t.shape)).encode())
                h.update(t.contiguous().numpy().tobytes())
        self.__dict__["_fingerprint"] = h.hexdigest()[:16]
        return self.__dict__["_fingerprint"]


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Map ``uint8`` images to float32 in ``[-1, 1]`` (on the images' device)."""
    return images.float().div_(127.5).sub_(1.0)


Advance = Callable[[int], None]  # advance(n): n more items done
Progress = Callable[[str, int], Advance]  # progress(label, total) opens a bar and returns its advance
Note = Callable[[str], None]  # one line of news for the person running the benchmark


def _no_bar(label: str, total: int) -> Advance:
    return lambda n=1: None


def _no_note(text: str) -> None:
    return None


@dataclass(frozen=True)
class Feedback:
    """How data code reports what it is doing, without knowing where it is shown.

    ``progress(label, total)`` opens a progress bar and returns the function that advances it;
    ``note(text)`` reports one line. The default says nothing; the command line passes the console's.
    """

    progress: Progress = _no_bar
    note: Note = _no_note


SILENT = Feedback()

Loader = Callable[[Any, Feedback], ImageData]
DATASETS: Registry[Loader] = Registry("dataset")


def load_dataset(name: str, data_cfg: Any, feedback: Feedback = SILENT) -> ImageData:
    """Load dataset ``name`` with the ``data`` config section (root, image size, cache...),
    reporting decoding progress and cache use through ``feedback``."""
    return DATASETS.get(name)(data_cfg, feedback)
