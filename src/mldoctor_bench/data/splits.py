"""One partition per cell: the four equal, disjoint quarters every assessment is built on
(ML-Doctor, Liu et al. 2022), and every other pool of rows a cell uses, each named.

The rules live here and nowhere else:

- pools are pairwise disjoint;
- ``target_train``, ``target_test``, ``shadow_train``, ``shadow_test`` have one size each, set by
  ``data.quarter_size`` or, when that is null, by setting aside a share ``data.reserve`` of the data
  first and quartering the rest;
- ``transfer`` (a distillation student's data, only when the defense asks for it) has
  ``defense.transfer_size`` rows, by default as many as ``target_train``;
- ``canary`` (a privacy audit's canaries, only when the audit is selected) has as many rows as
  the audit asks for; only the audited copy of the target ever trains on them;
- ``heldout`` (what evaluators train and are tested on, rows no other model sees) is every row
  left, capped by ``data.heldout_size``, and holds at least ``min_heldout`` rows when an attack
  needs it.

Indices come from a dedicated generator seeded by the run's seed, so the partition depends on the
seed alone, and all pools are saved by name beside the results: membership ground truth is derived
from the saved indices, never recomputed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

QUARTERS = ("target_train", "target_test", "shadow_train", "shadow_test")
POOLS = ("transfer", "canary", "heldout")  # besides the quarters, in the order they are cut
DEFAULT_RESERVE = 1 / 3  # with quarter_size null: 4 quarters, transfer and heldout of n/6 each


class PartitionError(ValueError):
    """A partition that cannot meet its minimums; the message names the sizes and the fix."""


@dataclass(frozen=True)
class Splits:
    """Index tensors (``int64``) into the dataset: the four quarters and the named extra pools
    (``transfer``, ``canary``, ``heldout``; empty when the cell does not use them)."""

    target_train: torch.Tensor
    target_test: torch.Tensor
    shadow_train: torch.Tensor
    shadow_test: torch.Tensor
    pools: dict[str, torch.Tensor] = field(default_factory=dict)

    def pool(self, name: str) -> torch.Tensor:
        """Indices of a quarter or an extra pool (empty if the cell has none of it)."""
        if name in QUARTERS:
            return getattr(self, name)
        if name not in POOLS:
            raise KeyError(f"unknown pool {name!r}; pools: {', '.join(QUARTERS + POOLS)}")
        return self.pools.get(name, torch.empty(0, dtype=torch.long))

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The four quarters by name."""
        return {q: getattr(self, q) for q in QUARTERS}

    def all_pools(self) -> dict[str, torch.Tensor]:
        """Every pool by name, the quarters first."""
        return {name: self.pool(name) for name in QUARTERS + POOLS}

    def sizes(self) -> dict[str, int]:
        return {name: len(idx) for name, idx in self.all_pools().items()}

    def digest(self, quarter: Optional[str] = None) -> str:
        """Hash of one pool's indices (or of the four quarters): the split's part of cache keys."""
        h = hashlib.sha256()
        for q in [quarter] if quarter else QUARTERS:
            h.update(q.encode())
            h.update(self.pool(q).numpy().tobytes())
        return h.hexdigest()[:16]

    def save(self, path: Path) -> None:
        """Write every pool's indices as safetensors (no pickle)."""
        save_file({q: t.contiguous() for q, t in self.all_pools().items()}, str(path))

    @classmethod
    def load(cls, path: Path) -> "Splits":
        tensors = load_file(str(path))
        return cls(*(tensors[q] for q in QUARTERS), {p: tensors[p] for p in POOLS if p in tensors})


def four_quarters(n: int, seed: int, quarter_size: Optional[int] = None) -> Splits:
    """Split ``range(n)`` into four equal disjoint quarters from a generator seeded by ``seed``.

    ``quarter_size`` caps each quarter (``None``: ``n // 4``); the rest of the data is unused.
    """
    return partition(n, seed, quarter_size, reserve=0.0)


def quarter_size_for(n: int, quarter_size: Optional[int], reserve: float) -> int:
    """The quarters' size: ``quarter_size``, or a quarter of what the reserve leaves."""
    if quarter_size is not None:
        return int(quarter_size)
    return int(n * (1.0 - reserve)) // 4


def partition(
    n: int,
    seed: int,
    quarter_size: Optional[int] = None,
    *,
    reserve: float = DEFAULT_RESERVE,
    transfer_size: Optional[int] = 0,
    canary_size: int = 0,
    heldout_size: Optional[int] = None,
    min_heldout: int = 0,
    dataset: str = "the dataset",
) -> Splits:
    """The cell's partition of ``range(n)``.

    ``transfer_size``: rows for the ``transfer`` pool (0: none; ``None``: as many as a quarter).
    ``canary_size``: rows for the ``canary`` pool (0: none).
    ``heldout_size``: cap on the ``heldout`` pool (``None``: every row left). ``min_heldout``: the
    fewest heldout rows the cell's attacks can work with. Raises :class:`PartitionError` naming the
    sizes and the override that fixes it when the data cannot hold them.
    """
    size = quarter_size_for(n, quarter_size, reserve)
    if size < 1 or 4 * size > n:
        fix = (
            "data.quarter_size=null (sized from the data)"
            if quarter_size is not None
            else "a larger dataset or a smaller data.reserve"
        )
        raise PartitionError(
            f"{dataset} has {n} examples: cannot cut 4 quarters of {size}; use {fix}"
            + (f" or data.quarter_size={max(1, n // 4)}" if quarter_size is not None and n >= 4 else "")
        )
    transfer = size if transfer_size is None else int(transfer_size)
    left = n - 4 * size
    if transfer > left:
        raise PartitionError(
            f"{dataset} has {n} examples: 4 quarters of {size} leave {left} rows, fewer than the {transfer} the "
            f"defense's transfer pool needs; set defense.transfer_size={left} or a smaller data.quarter_size"
            + (f" or a larger data.reserve (now {reserve:.3g})" if quarter_size is None else "")
        )
    canary = int(canary_size)
    if canary > left - transfer:
        raise PartitionError(
            f"{dataset} has {n} examples: 4 quarters of {size} and a transfer pool of {transfer} leave "
            f"{left - transfer} rows, fewer than the {canary} the audit's canary pool needs; set "
            f"attack.privacy_audit.canaries={left - transfer} or a smaller data.quarter_size"
        )
    free = left - transfer - canary
    heldout = free if heldout_size is None else min(int(heldout_size), free)
    if heldout < min_heldout:
        raise PartitionError(
            f"{dataset} has {n} examples: after 4 quarters of {size}, a transfer pool of {transfer} and a "
            f"canary pool of {canary}, {free} rows are left for the heldout pool, fewer than the {min_heldout} the "
            f"evaluator needs; use a smaller data.quarter_size"
            + (" or a larger data.heldout_size" if heldout_size is not None else "")
        )
    return cut(n, seed, size, {"transfer": transfer, "canary": canary, "heldout": heldout})


def cut(n: int, seed: int, size: int, pools: dict[str, int]) -> Splits:
    """Four quarters of ``size`` rows, then ``pools`` (name -> rows, in order; empty ones left out),
    from one permutation of ``range(n)`` seeded by ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=generator)
    # Each pool keeps the permutation's random order (not sorted): the (.,P) threat models cut
    # quarters into head and tail halves, which on a class-ordered file (the embedded MNIST is sorted
    # by digit) would otherwise give the attacker and the evaluation different classes.
    quarters = [perm[i * size : (i + 1) * size] for i in range(4)]
    rest, start, out = perm[4 * size :], 0, {}
    for name, count in pools.items():
        if count:
            out[name] = rest[start : start + count]
            start += count
    return Splits(*quarters, out)


# The fewest rows per pool an owner's assessment is run with (below them it is refused): enough
# evaluation examples for an AUC to mean something, shadow pools an attack model can learn from.
OWNER_MIN_EVALUATION = 50
OWNER_MIN_SHADOW = 50
OWNER_HELDOUT_PER_CLASS = 10  # an evaluator of the reconstructions needs some rows of every class


def owner_partition(
    n: int,
    members: torch.Tensor,
    seed: int,
    quarter_size: Optional[int] = None,
    *,
    heldout_size: Optional[int] = None,
    min_heldout: int = 0,
    dataset: str = "the dataset",
) -> Splits:
    """The partition of an owner's data around a model trained elsewhere on rows ``members``, sized
    to the data.

    ``target_train`` (the evaluation members) is drawn from ``members``; ``target_test`` (as many
    evaluation non-members), ``shadow_train`` and ``shadow_test`` (the attacker's data) and
    ``heldout`` (the evaluators') from the other rows only, so no attacker model ever trains on one of
    the model's training examples. The attacker's models are trained like the owner's: the shadow
    pools want as many rows as the model's training set (``len(members)``); the evaluation pools want
    that many too, capped by ``quarter_size``; ``heldout`` takes what is left (capped by
    ``heldout_size``) and needs ``min_heldout`` rows. When the non-members cannot fill all of that, the
    evaluation and shadow pools shrink by one factor until the heldout minimum fits. Raises
    :class:`PartitionError` below :data:`OWNER_MIN_EVALUATION` evaluation rows a side or
    :data:`OWNER_MIN_SHADOW` rows in a shadow pool (or the members' count, if smaller), naming the
    sizes and the minimums."""
    members = torch.unique(members.long())
    is_member = torch.zeros(n, dtype=torch.bool)
    is_member[members] = True
    outsiders = torch.nonzero(~is_member).flatten()
    m, k = len(members), len(outsiders)
    evaluation = min(m, int(quarter_size)) if quarter_size is not None else m
    shadow = m
    if evaluation + 2 * shadow + min_heldout > k:
        factor = max(k - min_heldout, 0) / (evaluation + 2 * shadow)
        evaluation, shadow = int(evaluation * factor), int(shadow * factor)
    if evaluation < min(OWNER_MIN_EVALUATION, m) or shadow < min(OWNER_MIN_SHADOW, m):
        raise PartitionError(
            f"{dataset} has {n} examples, {m} of them members: its {k} non-members cannot hold the assessment's "
            f"pools (at least {min(OWNER_MIN_EVALUATION, m)} evaluation non-members, {min(OWNER_MIN_SHADOW, m)} in "
            f"each of the attacker's two shadow pools, {min_heldout} for the evaluators; shrunk to fit they would get "
            f"{evaluation}, {shadow} and {k - evaluation - 2 * shadow}); add non-member images to the data, or list "
            "only the model's training examples in the members file"
        )
    left = k - evaluation - 2 * shadow
    heldout = left if heldout_size is None else min(int(heldout_size), left)
    generator = torch.Generator().manual_seed(int(seed))
    inside = members[torch.randperm(m, generator=generator)]
    outside = outsiders[torch.randperm(k, generator=generator)]
    cuts = [0, evaluation, evaluation + shadow, evaluation + 2 * shadow]
    quarters = [inside[:evaluation]] + [outside[a:b] for a, b in zip(cuts, cuts[1:])]
    pools = {"heldout": outside[cuts[-1] : cuts[-1] + heldout]} if heldout else {}
    return Splits(*quarters, pools)
