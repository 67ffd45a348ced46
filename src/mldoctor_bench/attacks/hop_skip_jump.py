"""HopSkipJump (Chen, Jordan and Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based
Attack", IEEE S&P 2020), untargeted and L2, batched over examples: an estimate of each point's
minimal L2 distance to the decision boundary from predicted labels alone.

Per example: start from an adversarial point (a point the model labels differently), bisect the
segment to the original point to land on the boundary, then repeat ``iterations`` times: estimate
the boundary's normal at the boundary point from the signs of ``k_t`` label queries around it
(random unit directions of radius ``delta``, with the mean sign as baseline), take a geometric
step along that estimate (``dist / sqrt(t)``, halved until the label still differs), and bisect
back towards the original point. ``k_t`` grows as ``sqrt(t)`` as in the paper.

The search knows the model only through ``labels_of(points)``, a batch of flat float points in, a
label per point out, so it runs as well on a plain function as on a served model. A ``project``
map (e.g. rounding to the pixel grid of a ``uint8`` image) is applied to every point before it is
queried; the iterate is always a projected point whose queried label differed from the
original's, so each reported distance is that of a point actually submitted. The smallest such
distance over the run is reported.

Differences from the paper's constants, each for a query budget of tens to hundreds per example:
binary searches stop at a relative bracket ``tolerance`` rather than ``d**-1.5``, and the
probing radius follows it, ``delta = sqrt(d) * tolerance * dist`` (the paper's rule for its own
threshold), floored at ``min_delta`` so that probes survive the projection; the start is the
nearest point of the batch that the model already labels differently (no query), uniform noise
otherwise; the step search gives up after ``step_halvings`` halvings and keeps the boundary point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

CHUNK_ELEMENTS = 1 << 24  # floats of points held at once per array (64 MB)


@dataclass(frozen=True)
class HopSkipJump:
    """Settings of the search; the worst-case label queries per example never exceed ``budget``."""

    budget: int  # label queries per example, the clean query included
    iterations: int = 5
    tolerance: float = 0.001  # binary searches stop at this fraction of the distance
    step_halvings: int = 5
    init_tries: int = 4  # uniform-noise starts, only where no point of the batch is labelled otherwise

    def __post_init__(self) -> None:
        if self.gradient_queries()[0] < 2:
            need = self.fixed_queries() + 2 * sum(math.sqrt(t) for t in range(1, self.iterations + 1))
            raise ValueError(
                f"hsj_queries={self.budget} leaves fewer than 2 gradient queries at the first of "
                f"hsj_iterations={self.iterations} iterations (binary searches and step searches take "
                f"{self.fixed_queries()}); raise hsj_queries to at least {math.ceil(need)} or lower "
                "hsj_iterations"
            )

    def bisections(self) -> int:
        """Label queries of one binary search."""
        return max(1, math.ceil(math.log2(1 / self.tolerance)))

    def fixed_queries(self) -> int:
        """Worst-case queries besides the gradient estimates (the clean query included)."""
        t = self.iterations
        return 1 + self.init_tries + (t + 1) * self.bisections() + t * self.step_halvings

    def gradient_queries(self) -> list[int]:
        """Probes at each iteration: what the budget leaves, shared in proportion to ``sqrt(t)``."""
        weights = [math.sqrt(t) for t in range(1, self.iterations + 1)]
        left = max(self.budget - self.fixed_queries(), 0)
        return [int(left * w / sum(weights)) for w in weights]


def nearest_other(x: torch.Tensor, labels: torch.Tensor, block: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row, the index of the nearest (L2) row with a different label, and whether one exists."""
    sq = (x * x).sum(1)
    index = torch.zeros(len(x), dtype=torch.long)
    found = torch.zeros(len(x), dtype=torch.bool)
    for s in range(0, len(x), block):
        d2 = sq[s : s + block, None] + sq[None] - 2 * x[s : s + block] @ x.T
        d2[labels[s : s + block, None] == labels[None]] = math.inf
        best, index[s : s + block] = d2.min(1)
        found[s : s + block] = torch.isfinite(best)
    return index, found


def hop_skip_jump(
    labels_of: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    labels: torch.Tensor,
    search: HopSkipJump,
    generator: torch.Generator,
    *,
    project: Callable[[torch.Tensor], torch.Tensor] = lambda p: p,
    box: Optional[tuple[float, float]] = (-1.0, 1.0),
    min_delta: float = 0.0,
    advance: Callable[..., None] = lambda n=1, info="": None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimated minimal L2 distance to a label change of each row of ``x`` (``(N, D)`` float points
    the model labels ``labels``), and the label queries spent on each (the clean query not counted).

    Rows for which no adversarial start is found get the box's diameter (infinity without a box).
    """
    x = x.float()
    n, d = x.shape
    queries = torch.zeros(n, dtype=torch.long)
    distances = torch.full((n,), math.inf if box is None else (box[1] - box[0]) * math.sqrt(d), dtype=torch.float64)
    start_index, found = nearest_other(x, labels)
    start = x[start_index]
    for _ in range(search.init_tries):
        rows = (~found).nonzero().squeeze(1)
        if len(rows) == 0:
            break
        lo, hi = box if box is not None else (-1.0, 1.0)
        noise = project(torch.rand(len(rows), d, generator=generator) * (hi - lo) + lo)
        queries[rows] += 1
        hit = labels_of(noise) != labels[rows]
        start[rows[hit]], found[rows[hit]] = noise[hit], True
    advance(int((~found).sum()))
    rows = found.nonzero().squeeze(1)
    chunk = max(1, CHUNK_ELEMENTS // d)
    for s in range(0, len(rows), chunk):
        idx = rows[s : s + chunk]
        distances[idx], used = _search_chunk(
            labels_of, x[idx], labels[idx], start[idx], search, generator, project, box, min_delta
        )
        queries[idx] += used
        advance(len(idx))
    return distances, queries


def _search_chunk(labels_of, x, labels, start, search: HopSkipJump, generator, project, box, min_delta):
    """Distances and queries for rows ``x`` with known adversarial ``start`` points."""
    m, d = x.shape
    queries = torch.zeros(m, dtype=torch.long)
    clip = (lambda p: p.clamp_(*box)) if box is not None else (lambda p: p)

    def differs(rows: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        queries.index_add_(0, rows, torch.ones_like(rows))
        return labels_of(points) != labels[rows]

    every = torch.arange(m)

    def bisect(adv: torch.Tensor) -> torch.Tensor:
        lo, hi = torch.zeros(m, 1), torch.ones(m, 1)
        best = adv.clone()
        for _ in range(search.bisections()):
            mid = (lo + hi) / 2
            probe = project(x + mid * (adv - x))
            hit = differs(every, probe)
            best[hit] = probe[hit]
            hi = torch.where(hit[:, None], mid, hi)
            lo = torch.where(hit[:, None], lo, mid)
        return best

    current = bisect(start)
    best = (current - x).double().norm(dim=1)
    for t, k in enumerate(search.gradient_queries(), start=1):
        dist = (current - x).norm(dim=1)
        delta = (math.sqrt(d) * search.tolerance * dist).clamp_min(min_delta)[:, None, None]
        grad = _gradient_direction(differs, current, delta, k, generator, project, clip)
        eps = dist / math.sqrt(t)
        searching = torch.ones(m, dtype=torch.bool)
        for _ in range(search.step_halvings):
            rows = searching.nonzero().squeeze(1)
            if len(rows) == 0:
                break
            probe = project(clip(current[rows] + eps[rows, None] * grad[rows]))
            hit = differs(rows, probe)
            current[rows[hit]] = probe[hit]
            searching[rows[hit]] = False
            eps[rows[~hit]] /= 2
        current = bisect(current)
        best = torch.minimum(best, (current - x).double().norm(dim=1))
    return best, queries


def _gradient_direction(differs, current, delta, k, generator, project, clip) -> torch.Tensor:
    """HopSkipJump's Monte Carlo estimate of the boundary's unit normal at each row of ``current``,
    pointing to the adversarial side: the mean of ``k`` random unit directions (as the projection
    and clipping left them) weighted by the sign of the label change, minus the mean sign as a
    baseline unless all signs agree. Probes go out in slices of at most ``CHUNK_ELEMENTS`` floats."""
    m, d = current.shape
    every = torch.arange(m)
    signed, moved_sum, sign_sum = torch.zeros(m, d), torch.zeros(m, d), torch.zeros(m, 1)
    step = max(1, CHUNK_ELEMENTS // (m * d))
    for s in range(0, k, step):
        j = min(step, k - s)
        u = torch.randn(m, j, d, generator=generator)
        u /= u.norm(dim=2, keepdim=True)
        probes = project(clip(current[:, None] + delta * u))
        moved = (probes - current[:, None]) / delta
        sign = differs(every.repeat_interleave(j), probes.view(-1, d)).view(m, j, 1).float() * 2 - 1
        signed += (sign * moved).sum(1)
        moved_sum += moved.sum(1)
        sign_sum += sign.sum(1)
    mean = sign_sum / k
    grad = signed / k - torch.where(mean.abs() == 1, 0.0, mean) * moved_sum / k
    return grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
