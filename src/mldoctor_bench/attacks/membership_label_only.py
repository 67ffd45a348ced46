"""Label-only membership inference (Choquette-Choo et al., "Label-Only Membership Inference
Attacks", ICML 2021).

The target answers with predicted labels only (:class:`LabelOnlyAccess`). Under
``blackbox_label_only`` the attacker holds shadow data and its own shadow model, which it also
queries for labels only, so that what it calibrates on looks like what it sees from the target.
Three variants:

- ``augmentation``: each example is queried under a fixed set of augmentations (translations by
  ``shift`` pixels, ``|dy| + |dx| = shift``, plus the original; horizontal flips optionally, off by
  default because they do not preserve digit labels). The feature is the vector of
  correct-prediction bits; a logistic regression fitted on the shadow model's bits (shadow-train
  vs shadow-test) scores the target's. Score = its member probability, "member" at >= 1/2.
- ``noise_robustness``: the L2 distance to the first label change along a few random Gaussian
  directions, within ``queries_per_example`` label queries: the directions are probed on a
  geometric grid of radii (smallest radius first, stopping at the first level where any direction
  changes the label), then the first flipping direction is bisected until the bracket is
  ``rel_tolerance`` tight or the budget is spent. A robustness-to-noise signal: random directions
  in high dimension meet the boundary far beyond its nearest point. An example no probe flips
  gets the largest probed distance.
- ``boundary``: Choquette-Choo et al.'s decision-boundary distance, the minimal L2 distance to a
  label change estimated by HopSkipJump (:mod:`~mldoctor_bench.attacks.hop_skip_jump`) within
  ``hsj_queries`` label queries and ``hsj_iterations`` iterations. Its probes are at least one
  grey level per pixel (RMS) wide, so that rounding to a valid image does not erase them.

Both distance variants submit only valid ``uint8`` images (perturbed points are rounded and clipped
to the pixel grid) and report the distance, in the model's normalised [-1, 1] units, of the
nearest submitted image whose label differed. Misclassified examples get distance 0 (one query).
Score = distance, "member" above a global threshold chosen on the shadow distances; the label
queries actually used are reported. ``boundary_examples`` caps the examples per side of both, so
their most exposed members (``exposed.parquet``) are drawn from the first ``boundary_examples``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, VariantMetrics
from mldoctor_bench.attacks.hop_skip_jump import HopSkipJump, hop_skip_jump
from mldoctor_bench.attacks.scoring import best_threshold, save_exposed, save_scores
from mldoctor_bench.data.base import normalise
from mldoctor_bench.knowledge import Labeled, balanced
from mldoctor_bench.metrics import membership_metrics
from mldoctor_bench.settings import setting
from mldoctor_bench.threat_models import LabelOnlyAccess

VARIANTS = ("augmentation", "noise_robustness", "boundary")
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
        out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
            ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
        ]
        return out.flip(-1) if self.flip else out


def augmentation_set(shift: int, flip: bool) -> list[Augmentation]:
    """The identity and every translation with ``|dy| + |dx| = shift`` (each also flipped if ``flip``)."""
    moves = [(0, 0)] + [
        (dy, dx)
        for dy in range(-shift, shift + 1)
        for dx in range(-shift, shift + 1)
        if shift > 0 and abs(dy) + abs(dx) == shift
    ]
    return [Augmentation(dy, dx, f) for f in ((False, True) if flip else (False,)) for dy, dx in moves]


def augmentation_correctness(access: LabelOnlyAccess, data: Labeled, augs: list[Augmentation]) -> torch.Tensor:
    """``(N, len(augs))`` float: 1 where the label of the augmented example is the true label."""
    return torch.stack([(access.labels(aug(data.images)) == data.labels).double() for aug in augs], dim=1)


@dataclass(frozen=True)
class NoiseSearch:
    """Settings of the ``noise_robustness`` search along random directions."""

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
                f"1 + directions * levels = {need}; raise it or lower directions/levels"
            )

    def radii(self, dim: int) -> torch.Tensor:
        steps = torch.arange(-(self.levels - 1), 1, dtype=torch.float64)
        return self.max_rms * math.sqrt(dim) * 2.0**steps


def _perturb(x: torch.Tensor, u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Flat uint8-valued images ``x`` moved by ``r`` (normalised L2) along unit ``u``, rounded and clipped."""
    return (x + (r * PIXEL_SCALE).unsqueeze(1).float() * u).round_().clamp_(0, 255)


def _noise_chunk(
    access: LabelOnlyAccess, images: torch.Tensor, labels: torch.Tensor, s: NoiseSearch, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
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
        hit = flips(rows.repeat_interleave(k), torch.arange(k).repeat(len(rows)), radii[lv].expand(len(rows) * k)).view(
            len(rows), k
        )
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


def quantise(points: torch.Tensor) -> torch.Tensor:
    """Normalised points moved to the nearest valid ``uint8`` image (still in normalised units)."""
    return ((points + 1) * PIXEL_SCALE).round_().clamp_(0, 255).div_(PIXEL_SCALE).sub_(1)


def to_images(points: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Flat normalised points as the ``uint8`` images of ``shape`` nearest to them."""
    return ((points + 1) * PIXEL_SCALE).round_().clamp_(0, 255).to(torch.uint8).view(-1, *shape)


# A search over correctly classified examples: (images, labels) -> (distances, queries beyond the clean one)
CorrectSearch = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def flip_distances(
    access: LabelOnlyAccess, data: Labeled, search: CorrectSearch, advance: Callable[..., None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``search`` on the examples ``access`` labels correctly; misclassified ones get distance 0.

    Returns distances and label queries per example, the clean query included.
    """
    distances = torch.zeros(len(data), dtype=torch.float64)
    queries = torch.ones(len(data), dtype=torch.long)
    correct = access.labels(data.images) == data.labels
    advance(int((~correct).sum()))
    idx = correct.nonzero().squeeze(1)
    if len(idx):
        distances[idx], used = search(data.images[idx], data.labels[idx])
        queries[idx] += used
    return distances, queries


def noise_robustness_distances(
    access: LabelOnlyAccess,
    data: Labeled,
    search: NoiseSearch,
    generator: torch.Generator,
    advance: Callable[..., None] = lambda n=1, info="": None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance to the first label change along random directions of each example, and label queries
    used per example: at most ``search.budget`` queries each; distance 0 for misclassified examples."""

    def run(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dim = int(np.prod(images.shape[1:]))
        chunk = max(1, CHUNK_ELEMENTS // (search.directions * dim))
        parts = []
        for start in range(0, len(images), chunk):
            parts.append(
                _noise_chunk(access, images[start : start + chunk], labels[start : start + chunk], search, generator)
            )
            advance(len(parts[-1][0]))
        return torch.cat([d for d, _ in parts]), torch.cat([q for _, q in parts])

    return flip_distances(access, data, run, advance)


def boundary_distances(
    access: LabelOnlyAccess,
    data: Labeled,
    search: HopSkipJump,
    generator: torch.Generator,
    advance: Callable[..., None] = lambda n=1, info="": None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HopSkipJump's estimate of each example's minimal distance to the decision boundary, and label
    queries used per example: at most ``search.budget`` each; distance 0 for misclassified examples.

    All examples are searched together: each starts from the nearest example of ``data`` that the
    model labels otherwise, and every step's queries of all of them go out in one batch.
    """

    def run(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = images.shape[1:]
        x = normalise(images).flatten(1)
        return hop_skip_jump(
            lambda p: access.labels(to_images(p, shape)),
            x,
            labels,
            search,
            generator,
            project=quantise,
            min_delta=math.sqrt(x.shape[1]) / PIXEL_SCALE,
            advance=advance,
        )

    return flip_distances(access, data, run, advance)


@dataclass(frozen=True, kw_only=True)
class LabelOnlySettings:
    """Variants and their query budgets (see the module docstring)."""

    variants: list[str] = setting(list(VARIANTS), choices=VARIANTS, example="[augmentation]")
    shift: int = setting(1, min=0)
    flip: bool = setting(False)
    # noise_robustness
    queries_per_example: int = setting(50, min=1)
    directions: int = setting(8, min=1)
    levels: int = setting(3, min=1)
    max_rms: float = setting(1.0, min=0, min_exclusive=True)
    rel_tolerance: float = setting(0.01, min=0, min_exclusive=True, max=1)
    # boundary (HopSkipJump)
    hsj_queries: int = setting(150, min=1)
    hsj_iterations: int = setting(5, min=1)
    hsj_tolerance: float = setting(0.005, min=0, min_exclusive=True, max=1)
    # both distance variants
    boundary_examples: Optional[int] = setting(None, min=1, example=150)


@ATTACKS.register("membership_label_only")
class LabelOnlyMembershipInference(Attack):
    """Choquette-Choo et al.'s augmentation and boundary-distance attacks from predicted labels alone."""

    family = "membership"
    threat_models = ("blackbox_label_only",)
    Settings = LabelOnlySettings

    def check_settings(self, s: LabelOnlySettings) -> None:
        if "noise_robustness" in s.variants:
            self.noise_search(s)
        if "boundary" in s.variants:
            self.hop_skip_jump(s)

    @staticmethod
    def noise_search(s: LabelOnlySettings) -> NoiseSearch:
        return NoiseSearch(s.queries_per_example, s.directions, s.levels, s.max_rms, s.rel_tolerance)

    @staticmethod
    def hop_skip_jump(s: LabelOnlySettings) -> HopSkipJump:
        return HopSkipJump(s.hsj_queries, s.hsj_iterations, s.hsj_tolerance)

    def run(self, ctx: AttackContext) -> VariantMetrics:
        s = ctx.settings
        variants = list(s.variants)
        # The attacker's own shadow model, queried as the target is: for labels only.
        shadow = LabelOnlyAccess(ctx.knowledge.reference.model, ctx.device)
        results, saved, scored = {}, {}, {}  # scored: the examples each variant was scored on
        if "augmentation" in variants:
            augs = augmentation_set(s.shift, s.flip)
            results["augmentation"], saved["augmentation"], scored["augmentation"] = self.augmentation(
                ctx, shadow, augs
            )
        searches = {
            "noise_robustness": (self.noise_search(s), noise_robustness_distances),
            "boundary": (self.hop_skip_jump(s), boundary_distances),
        }
        for variant, (search, distances) in searches.items():
            if variant in variants:
                results[variant], saved[variant], scored[variant] = self.distance_attack(
                    ctx, shadow, variant, partial(distances, search=search), search.budget, s.boundary_examples
                )
        save_scores(ctx.out_dir / "scores.parquet", saved, scored)
        save_exposed(ctx.out_dir, saved, scored)
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
        return metrics, (y_ev, score), Labeled.concat([e_in, e_out])

    def distance_attack(
        self,
        ctx: AttackContext,
        shadow: LabelOnlyAccess,
        variant: str,
        distances: Callable,
        budget: int,
        cap: int | None,
    ):
        """Threshold attack on a distance to a label change: the threshold is fitted on the shadow
        model's distances, then applied to the target's. Returns the metrics, (is_member, score) and
        the examples scored (the first ``cap`` evaluation members, then as many non-members)."""
        a_in, a_out = balanced(ctx.knowledge.members, ctx.knowledge.nonmembers, cap)
        e_in, e_out = balanced(ctx.evaluation.members, ctx.evaluation.nonmembers, cap)
        advance = ctx.progress(f"{variant} search", len(a_in) + len(a_out) + len(e_in) + len(e_out))
        generator = torch.Generator().manual_seed(ctx.seed)
        # Members and non-members are searched as one batch, so that nothing in the search (such as
        # HopSkipJump's starts, taken from the batch) can depend on which is which.
        d_att, _ = distances(shadow, Labeled.concat([a_in, a_out]), generator=generator, advance=advance)
        threshold, train_accuracy = best_threshold(d_att[: len(a_in)].numpy(), d_att[len(a_in) :].numpy())
        score, queries = distances(ctx.target, Labeled.concat([e_in, e_out]), generator=generator, advance=advance)
        score, queries = score.numpy(), queries.double()
        y_ev = np.r_[np.ones(len(e_in)), np.zeros(len(e_out))].astype(int)
        metrics = membership_metrics(y_ev, score, (score >= threshold).astype(int))
        metrics["attack_train_accuracy"] = train_accuracy
        metrics["threshold"] = threshold
        metrics["queries_per_example"] = float(queries.mean())
        metrics["queries_max"] = float(queries.max())
        metrics["query_budget"] = float(budget)
        return metrics, (y_ev, score), Labeled.concat([e_in, e_out])
