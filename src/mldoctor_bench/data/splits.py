"""The four equal, disjoint quarters every assessment is built on (spec section 2).

Indices come from a dedicated generator seeded by the run's seed, so the split depends on the seed
alone (not on how much randomness anything else consumed), and they are saved beside the results:
membership ground truth is *derived from the saved indices*, never recomputed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

QUARTERS = ("target_train", "target_test", "shadow_train", "shadow_test")


@dataclass(frozen=True)
class Splits:
    """Index tensors (``int64``) of the four quarters into the dataset."""

    target_train: torch.Tensor
    target_test: torch.Tensor
    shadow_train: torch.Tensor
    shadow_test: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {q: getattr(self, q) for q in QUARTERS}

    def digest(self, quarter: Optional[str] = None) -> str:
        """Hash of one quarter's indices (or of all four): the split's part of cache keys."""
        h = hashlib.sha256()
        for q in [quarter] if quarter else QUARTERS:
            h.update(q.encode())
            h.update(getattr(self, q).numpy().tobytes())
        return h.hexdigest()[:16]

    def save(self, path: Path) -> None:
        """Write the indices as safetensors (no pickle)."""
        save_file({q: t.contiguous() for q, t in self.as_dict().items()}, str(path))

    @classmethod
    def load(cls, path: Path) -> "Splits":
        return cls(**load_file(str(path)))


def four_quarters(n: int, seed: int, quarter_size: Optional[int] = None) -> Splits:
    """Split ``range(n)`` into four equal disjoint quarters from a generator seeded by ``seed``.

    ``quarter_size`` caps each quarter (``None``: ``n // 4``); the rest of the data is unused.
    """
    size = n // 4 if quarter_size is None else int(quarter_size)
    if size < 1 or 4 * size > n:
        raise ValueError(f"cannot cut 4 quarters of {size} from {n} examples")
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=generator)
    # Each quarter keeps the permutation's random order (not sorted): the (.,P) threat models cut
    # quarters into head and tail halves, which on a class-ordered file (the embedded MNIST is sorted
    # by digit) would otherwise give the attacker and the evaluation different classes.
    parts = [perm[i * size : (i + 1) * size] for i in range(4)]
    return Splits(*parts)
