"""Label-only membership inference (Choquette-Choo et al., "Label-Only Membership Inference
Attacks", ICML 2021), spec section 9.

The target answers with predicted labels only (:class:`LabelOnlyAccess`). Under
``blackbox_label_only`` the attacker holds shadow data and its own shadow model, which it also
queries for labels only, so that what it calibrates on looks like what it sees from the target.
Two variants:

- ``augmentation``: each example is queried under a fixed set of augmentations (translations by
  ``shift`` pixels, ``|dy| + |dx| = shift``, plus the original; horizontal flips optionally, off by
  default because they do not preserve digit labels). The feature is the vector of
  correct-prediction bits; a logistic regression fitted on the shadow model's bits (shadow-train
  vs shadow-test) scores the target's. Score = its member probability, "member" at >= 1/2.
- ``boundary``: the L2 distance (in the model's [-1, 1] input units) from the example to the
  nearest label change found within ``queries_per_example`` label queries. A lite stand-in for
  HopSkipJump: random Gaussian directions are probed on a geometric grid of radii (smallest radius
  first, stopping at the first level where any direction changes the label), then the first
  flipping direction is bisected until the bracket is ``rel_tolerance`` tight or the budget is
  spent. Perturbed images are rounded and clipped to valid ``uint8`` images, as a real query must
  be, and the distance is that of the submitted image. Misclassified examples get distance 0 (one
  query); an example no probe flips gets the largest probed distance. Score = distance, "member"
  above a global threshold chosen on the shadow distances. The queries actually used are reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, VariantMetrics
from mldoctor_bench.attacks.scoring import best_threshold, save_scores
from mldoctor_bench.knowledge import Labeled, balanced
from mldoctor_bench.metrics import membership_metrics
from mldoctor_bench.settings import setting
from mldoctor_bench.threat_models import LabelOnlyAccess

VARIANTS = ("augmentation", "boundary")
PIXEL_SCALE = 127.5  # uint8 levels per unit of the normalised [-1, 1] input
CHUNK_ELEMENTS = 1 << 24  # floats of random directions held at once (64 MB)


@dataclass(frozen=True)
class Augmentation:
    """A translation by ``(dy, dx)`` pixels (zero fill), then an optional horizontal flip."""

    dy: int = 0
    dx: int = 0
    flip: bool = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(images)
        h, w = images.shape[-2:]
        dy, dx = self.dy, self.dx
        out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = \
            images[..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
        return out.flip(-1) if self.flip else out


def augmentation_set(shift: int, flip: bool) -> list[Augmentation]:
    """The identity and every translation with ``|dy| + |dx| = shift`` (each also flipped if ``flip``)."""
    moves = [(0, 0)] + [
        (dy, dx) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)
        if shift > 0 and abs(dy) + abs(dx) == shift
    ]
    return [Augmentation(dy, dx, f) for f in ((False, True) if flip else (False,)) for dy, dx in moves]


def augmentation_correctness(access: LabelOnlyAccess, data: Labeled, augs: list[Augmentation]) -> torch.Tensor:
    """``(N, len(augs))`` float: 1 where the label of the augmented example is the true label."""
    return torch.stack([(access.labels(aug(data.images)) == data.labels).double() for aug in augs], dim=1)


@dataclass(frozen=True)
class BoundarySearch:
    """Settings of the query-budgeted boundary-distance search."""

    budget: int  # label queries per example, the clean query included
    directions: int = 8
    levels: int = 3  # radii max_rms * sqrt(D) * 2**-(levels-1) ... * 2**0
    max_rms: float = 1.0  # largest probe's per-pixel RMS perturbation, normalised units
    rel_tolerance: float = 0.01

    def __post_init__(self) -> None:
        need = 1 + self.directions * self.levels
        if self.budget < need:
            raise ValueError(
                f"queries_per_example={self.budget} is below the worst case of the direction search, "
                f"1 + directions * levels = {need}; raise it or lower directions/levels")

    def radii(self, dim: int) -> torch.Tensor:
        steps = torch.arange(-(self.levels - 1), 1, dtype=torch.float64)
        return self.max_rms * math.sqrt(dim) * 2.0**steps


def _perturb(x: torch.Tensor, u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Flat uint8-valued images ``x`` moved by ``r`` (normalised L2) along unit ``u``, rounded and clipped."""
    return (x + (r * PIXEL_SCALE).unsqueeze(1).float() * u).round_().clamp_(0, 255)


def _search_chunk(access: LabelOnlyAccess, images: torch.Tensor, labels: torch.Tensor, s: BoundarySearch,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances and label queries used for correctly classified ``images`` (clean query not counted)."""
    b, shape = len(images), images.shape[1:]
    x = images.reshape(b, -1).float()
    u = torch.randn(b, s.directions, x.shape[1], generator=generator)
    u /= u.norm(dim=2, keepdim=True)
    radii = s.radii(x.shape[1])
    queries = torch.zeros(b, dtype=torch.long)

    def flips(rows: torch.Tensor, dirs: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        queries.index_add_(0, rows, torch.ones_like(rows))
        probe = _perturb(x[rows], u[rows, dirs], r).to(torch.uint8).view(-1, *shape)
        return access.labels(probe) != labels[rows]

    level = torch.full((b,), -1, dtype=torch.long)
    best = torch.zeros(b, dtype=torch.long)
    for lv in range(s.levels):  # grid: all directions at one radius, smallest radius first
        rows = (level < 0).nonzero().squeeze(1)
        if len(rows) == 0:
            break
        k = s.directions
        hit = flips(rows.repeat_interleave(k), torch.arange(k).repeat(len(rows)),
                    radii[lv].expand(len(rows) * k)).view(len(rows), k)
        found = hit.any(1)
        level[rows[found]] = lv
        best[rows[found]] = hit[found].long().argmax(1)  # the first direction that flips
    found = level >= 0
    hi = torch.where(found, radii[level.clamp_min(0)], radii[-1])
    lo = torch.where(level > 0, radii[(level - 1).clamp_min(0)], torch.zeros_like(hi))
    while True:  # bisection along the chosen direction
        rows = (found & (queries < s.budget - 1) & (hi - lo > s.rel_tolerance * hi)).nonzero().squeeze(1)
        if len(rows) == 0:
            break
        mid = (lo[rows] + hi[rows]) / 2
        hit = flips(rows, best[rows], mid)
        hi[rows] = torch.where(hit, mid, hi[rows])
        lo[rows] = torch.where(hit, lo[rows], mid)
    submitted = _perturb(x, u[torch.arange(b), best], hi)
    return ((submitted - x).norm(dim=1) / PIXEL_SCALE).double(), queries


def boundary_distances(
    access: LabelOnlyAccess, data: Labeled, search: BoundarySearch, generator: torch.Generator,
    advance: Callable[..., None] = lambda n=1, info="": None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimated distance to the decision boundary of each example, and label queries used per example.

    At most ``search.budget`` queries per example; distance 0 for misclassified examples.
    """
    n = len(data)
    queries = torch.ones(n, dtype=torch.long)
    distances = torch.zeros(n, dtype=torch.float64)
    correct = (access.labels(data.images) == data.labels).nonzero().squeeze(1)
    dim = int(np.prod(data.images.shape[1:]))
    chunk = max(1, CHUNK_ELEMENTS // (search.directions * dim))
    for start in range(0, len(correct), chunk):
        idx = correct[start : start + chunk]
        distances[idx], used = _search_chunk(access, data.images[idx], data.labels[idx], search, generator)
        queries[idx] += used
        advance(len(idx))
    return distances, queries


@dataclass(frozen=True, kw_only=True)
class LabelOnlySettings:
    """Variants and their query budgets (see the module docstring)."""

    variants: list[str] = setting(list(VARIANTS), choices=VARIANTS, example="[augmentation]")
    shift: int = setting(1, min=0)
    flip: bool = setting(False)
    queries_per_example: int = setting(50, min=1)
    directions: int = setting(8, min=1)
    levels: int = setting(3, min=1)
    max_rms: float = setting(1.0, min=0, min_exclusive=True)
    rel_tolerance: float = setting(0.01, min=0, min_exclusive=True, max=1)
    boundary_examples: Optional[int] = setting(None, min=1, example=150)


@ATTACKS.register("membership_label_only")
class LabelOnlyMembershipInference(Attack):
    """Choquette-Choo et al.'s augmentation and boundary-distance attacks from predicted labels alone."""

    threat_models = ("blackbox_label_only",)
    Settings = LabelOnlySettings

    def check_settings(self, s: LabelOnlySettings) -> None:
        if "boundary" in s.variants:
            self.search(s)

    @staticmethod
    def search(s: LabelOnlySettings) -> BoundarySearch:
        return BoundarySearch(s.queries_per_example, s.directions, s.levels, s.max_rms, s.rel_tolerance)

    def run(self, ctx: AttackContext) -> VariantMetrics:
        s = ctx.settings
        variants = list(s.variants)
        k = ctx.knowledge
        # The attacker's own shadow model, queried as the target is: for labels only.
        shadow = LabelOnlyAccess(k.reference.model, ctx.device)
        results, saved = {}, {}
        if "augmentation" in variants:
            augs = augmentation_set(s.shift, s.flip)
            results["augmentation"], saved["augmentation"] = self.augmentation(ctx, shadow, augs)
        if "boundary" in variants:
            search = self.search(s)
            cap = s.boundary_examples
            results["boundary"], saved["boundary"] = self.boundary(ctx, shadow, search, cap)
        save_scores(ctx.out_dir / "scores.parquet", saved)
        return results

    def augmentation(self, ctx: AttackContext, shadow: LabelOnlyAccess, augs: list[Augmentation]):
        a_in, a_out = balanced(ctx.knowledge.members, ctx.knowledge.nonmembers, None)
        x_att = torch.cat([augmentation_correctness(shadow, d, augs) for d in (a_in, a_out)]).numpy()
        y_att = np.r_[np.ones(len(a_in)), np.zeros(len(a_out))].astype(int)
        model = LogisticRegression().fit(x_att, y_att)
        e_in, e_out = balanced(ctx.evaluation.members, ctx.evaluation.nonmembers, None)
        before = ctx.target.queries
        x_ev = torch.cat([augmentation_correctness(ctx.target, d, augs) for d in (e_in, e_out)]).numpy()
        used = ctx.target.queries - before
        y_ev = np.r_[np.ones(len(e_in)), np.zeros(len(e_out))].astype(int)
        score = model.predict_proba(x_ev)[:, 1]
        metrics = membership_metrics(y_ev, score, (score >= 0.5).astype(int))
        metrics["attack_train_accuracy"] = float(model.score(x_att, y_att))
        metrics["queries_per_example"] = used / len(y_ev)
        metrics["augmentations"] = float(len(augs))
        return metrics, (y_ev, score)

    def boundary(self, ctx: AttackContext, shadow: LabelOnlyAccess, search: BoundarySearch, cap: int | None):
        a_in, a_out = balanced(ctx.knowledge.members, ctx.knowledge.nonmembers, cap)
        e_in, e_out = balanced(ctx.evaluation.members, ctx.evaluation.nonmembers, cap)
        advance = ctx.progress("boundary search", len(a_in) + len(a_out) + len(e_in) + len(e_out))
        generator = torch.Generator().manual_seed(ctx.seed)
        d_in, _ = boundary_distances(shadow, a_in, search, generator, advance)
        d_out, _ = boundary_distances(shadow, a_out, search, generator, advance)
        threshold, train_accuracy = best_threshold(d_in.numpy(), d_out.numpy())
        ev = [boundary_distances(ctx.target, d, search, generator, advance) for d in (e_in, e_out)]
        score = torch.cat([d for d, _ in ev]).numpy()
        queries = torch.cat([q for _, q in ev]).double()
        y_ev = np.r_[np.ones(len(e_in)), np.zeros(len(e_out))].astype(int)
        metrics = membership_metrics(y_ev, score, (score >= threshold).astype(int))
        metrics["attack_train_accuracy"] = train_accuracy
        metrics["threshold"] = threshold
        metrics["queries_per_example"] = float(queries.mean())
        metrics["queries_max"] = float(queries.max())
        metrics["query_budget"] = float(search.budget)
        return metrics, (y_ev, score)
