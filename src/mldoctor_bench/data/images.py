"""Decoding and resizing shared by every loader: files and arrays in, ``uint8 (N, C, S, S)`` out.

Images are resized to a square ``S x S`` (the original code's ``Resize((64, 64))``: the aspect ratio
is not kept) with bilinear interpolation that averages when shrinking (antialiased), so a 218-pixel
face and a 28-pixel garment end up on the same grid. This runs once per dataset; the result is
cached (:mod:`mldoctor_bench.data.cache`) and training never decodes anything.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mldoctor_bench.data.base import Progress

_CHUNK = 1024  # images per resize/progress step
CHANNELS = {"RGB": 3, "L": 1}  # Pillow modes the decoder produces, and their channel counts


class UnreadableImage(OSError):
    """An image file Pillow cannot decode; the message names the file."""


def decode_files(
    paths: Sequence[Path], size: int, label: str, progress: Optional[Progress] = None, mode: str = "RGB"
) -> torch.Tensor:
    """Decode image files to ``mode`` (``RGB``, or ``L`` for grey), resize each to ``size x size``;
    ``uint8 (N, C, size, size)``. A file that cannot be decoded raises :class:`UnreadableImage`.

    JPEGs are decoded at the smallest DCT scale that still covers ``size`` (Pillow's ``draft``),
    which is several times faster than a full decode followed by a larger reduction. Grey images are
    Pillow's ``convert("L")`` of the RGB decode (ITU-R 601-2 luma), made before resizing. Decoding
    runs in a few threads (Pillow releases the GIL); ``progress``, when given, receives a bar to advance.
    """
    out = np.empty((len(paths), size, size, CHANNELS[mode]), dtype=np.uint8)

    def decode(i: int) -> None:
        try:
            with Image.open(paths[i]) as img:
                img.draft("RGB", (size, size))
                pixels = img.convert("RGB")
                if mode != "RGB":
                    pixels = pixels.convert(mode)
                out[i] = np.asarray(pixels.resize((size, size), Image.Resampling.BILINEAR)).reshape(size, size, -1)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise UnreadableImage(f"cannot read image {paths[i]}: {exc}") from exc

    workers = max(1, min(4, os.cpu_count() or 1))
    advance = progress(f"decode {label}", len(paths)) if progress is not None else None
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(paths), _CHUNK):
            chunk = range(start, min(start + _CHUNK, len(paths)))
            list(pool.map(decode, chunk))
            if advance is not None:
                advance(len(chunk))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a ``uint8 (N, C, H, W)`` batch to ``size x size`` (bilinear, antialiased), in chunks."""
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK].float()
        resized = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + _CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def from_array(images: np.ndarray, size: int) -> torch.Tensor:
    """A ``uint8`` numpy batch ``(N, C, H, W)`` (or ``(N, H, W)`` grey) as a resized tensor."""
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(1)
    return resize_images(tensor, size)
