"""Atomic file writes: a reader never sees a half-written file, even after a killed writer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch is loaded only by the writers of weights, not by table readers
    import torch


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary sibling ``.<name>.<pid>.tmp``, then rename it to ``path``.

    The temporary file is removed if ``write`` fails; a writer killed mid-write leaves only it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write ``model``'s state dict to ``path`` as safetensors (no pickle), atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))
