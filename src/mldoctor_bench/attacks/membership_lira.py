"""LiRA, the likelihood-ratio membership attack (Carlini et al., "Membership Inference Attacks From
First Principles", S&P 2022), under (B,S).

The signal is the logit-scaled confidence ``phi = log p_y - log(1 - p_y)`` of the true class,
computed stably in log space from released float64 log-posteriors (the target's, and the reference
models' read as the attacker reads its shadow model's). For each candidate, Gaussians are fitted to
``phi`` under the reference models that trained on it (IN) and those that did not (OUT)
(:mod:`reference_models`):

- ``online``: the log-likelihood ratio ``log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out)``;
- ``offline``: OUT references only (trained on the attacker's shadow data), one-sided: the score is
  ``z = (phi - mu_out) / s_out``, large where the target is more confident than OUT models are (the
  one-sided p-value ``1 - Phi(z)`` orders candidates the same way, but saturates in float64);
- ``*_fixed_var``: one variance per side, pooled over the candidates, instead of one per candidate
  (more stable with few references).

``conventions=published`` scores with the choices of the authors' released ``plot.py`` instead
(median means, one standard deviation for both sides from every IN value, a two-sided offline
test), so a reader of that code can reproduce the numbers; the paper's text and ours agree on the
rest. With ``augment``, every candidate is also queried flipped (where ``flip`` allows) and shifted by
``shift`` pixels; each query gets its own Gaussians and the per-query scores are averaged, as in
the paper. Hard decisions: online a ratio above 1, offline ``phi`` above the OUT mean.

Saved in the attack's folder: ``scores.parquet`` (every candidate's score per variant),
``masks.safetensors`` (which references trained on which rows of their pool) and
``exposed.parquet`` (per variant the highest-scoring members: their position among the evaluation
members, label, score and image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mldoctor_bench.attacks.base import ATTACKS, AttackContext
from mldoctor_bench.attacks.reference_models import (
    ONLINE,
    ReferenceModelAttack,
    Scored,
    Signals,
    query_views,
    reference_set,
    reference_signals,
    signals,
)
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.metrics import membership_metrics
from mldoctor_bench.settings import setting

VARIANTS = ("online", "online_fixed_var", "offline", "offline_fixed_var")
MIN_STD = 1e-6  # a candidate whose references agree exactly still gets a finite likelihood


def fit_gaussians(observed: torch.Tensor, mask: torch.Tensor, fixed_var: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation, per candidate, of ``observed`` ``(references, candidates)`` over
    the references ``mask`` selects; with ``fixed_var`` one variance pooled over candidates."""
    weight = mask.double()
    count = weight.sum(0)
    if (count == 0).any():
        raise ValueError("a candidate has no reference on this side; use more references")
    mean = (observed * weight).sum(0) / count
    var = (((observed - mean) ** 2) * weight).sum(0) / count
    if fixed_var:
        var = var.mean().expand_as(var)
    return mean, var.sqrt().clamp_min(MIN_STD)


def normal_logpdf(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mean) / std) ** 2 - std.log() - 0.5 * np.log(2 * np.pi)


def published_scores(
    target: np.ndarray, references: np.ndarray, in_mask: np.ndarray | None, fixed_var: bool
) -> np.ndarray:
    """LiRA's score under the choices of the authors' released ``plot.py`` (Carlini et al.), for one
    query: Gaussians centred on the *median* of each side; with ``fixed_var`` one standard deviation,
    that of every IN value together (the spread between candidates included), for both sides
    (offline: of every OUT value); offline *two-sided*: a candidate far from its OUT Gaussian on
    either side scores high. ``target`` ``(candidates,)``, ``references`` ``(references, candidates)``."""

    def side(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        values = np.where(mask, references, np.nan)
        return values, np.nanmedian(values, 0), np.nanstd(values, 0)

    def logpdf(x, mean, std):
        std = std + 1e-30
        return -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)

    if in_mask is None:
        values, mean_out, std_out = side(np.ones_like(references, dtype=bool))
        if fixed_var:
            std_out = np.full_like(std_out, np.nanstd(values))
        return -logpdf(target, mean_out, std_out)
    values_in, mean_in, std_in = side(in_mask)
    _, mean_out, std_out = side(~in_mask)
    if fixed_var:
        std_in = std_out = np.full_like(std_in, np.nanstd(values_in))
    return logpdf(target, mean_in, std_in) - logpdf(target, mean_out, std_out)


def lira_scores(
    target: torch.Tensor,
    references: torch.Tensor,
    in_mask: torch.Tensor | None,
    fixed_var: bool,
    published: bool = False,
) -> torch.Tensor:
    """LiRA's score of each candidate, averaged over queries.

    ``target``: ``(queries, candidates)`` confidences of the target; ``references``:
    ``(queries, references, candidates)``; ``in_mask`` ``(references, candidates)`` marks IN
    references (online), ``None`` for offline (every reference is OUT). ``published``: the choices
    of the authors' released code (:func:`published_scores`) instead of ours."""
    if published:
        mask = None if in_mask is None else in_mask.numpy()
        return torch.from_numpy(
            np.mean(
                [
                    published_scores(target[q].numpy(), references[q].numpy(), mask, fixed_var)
                    for q in range(target.shape[0])
                ],
                axis=0,
            )
        )
    scores = []
    for q in range(target.shape[0]):
        if in_mask is None:
            mu_out, s_out = fit_gaussians(references[q], torch.ones_like(references[q], dtype=torch.bool), fixed_var)
            scores.append((target[q] - mu_out) / s_out)
        else:
            mu_in, s_in = fit_gaussians(references[q], in_mask, fixed_var)
            mu_out, s_out = fit_gaussians(references[q], ~in_mask, fixed_var)
            scores.append(normal_logpdf(target[q], mu_in, s_in) - normal_logpdf(target[q], mu_out, s_out))
    return torch.stack(scores).mean(0)


@dataclass(frozen=True, kw_only=True)
class LiraSettings:
    """Reference models (pairs: every candidate IN for half of the online ones), the variants, the
    augmented queries and how many of the most exposed members to save."""

    num_references: int = setting(min=2, example=16)
    variants: list[str] = setting(list(VARIANTS), choices=VARIANTS, example="[online,offline]")
    augment: bool = setting(False)
    flip: bool = setting(False)  # mirrored queries too: only where the dataset's classes allow it
    shift: int = setting(1, min=0, example=2)
    exposed: int = setting(32, min=0)
    # ours: mean and pooled within-candidate variance per side, offline one-sided (as the paper
    # says); published: the authors' released code's median, global IN spread and two-sided offline
    conventions: str = setting("ours", choices=("ours", "published"), example="published")
    # independent sets of references: is a flagged member flagged again with other references?
    repeats: int = setting(1, min=1, example=2)


@ATTACKS.register("membership_lira")
class LiraMembershipInference(ReferenceModelAttack):
    """LiRA online/offline, per-example or fixed variance, under (B,S)."""

    variants = VARIANTS
    Settings = LiraSettings

    def score(self, ctx: AttackContext, pool: Labeled, is_member: torch.Tensor, repeat: int) -> Scored:
        s = ctx.settings
        views = query_views(pool.images, s.flip, s.shift) if s.augment else [pool.images]
        target = Signals.stack([signals(ctx.target, v, pool.labels) for v in views]).phi
        y, results, saved, refs_used, saved_signals = is_member.numpy(), {}, {}, [], {"target_phi": target}
        for kind in self.kinds(s):
            refs = reference_set(ctx, kind, s.num_references, repeat)
            observed = reference_signals(ctx, refs, views, pool.labels).phi
            refs_used.append(refs)
            saved_signals[f"{kind}_phi"] = observed
            for variant in (v for v in s.variants if v.startswith(kind)):
                mask, fixed = (refs.masks if kind == ONLINE else None), variant.endswith("fixed_var")
                score = lira_scores(target, observed, mask, fixed, s.conventions == "published").numpy()
                # hard decisions, under either conventions: online a likelihood ratio above 1, offline
                # phi above the OUT mean
                ours = (
                    score
                    if s.conventions == "ours" or kind == ONLINE
                    else lira_scores(target, observed, mask, fixed).numpy()
                )
                results[variant] = {
                    **membership_metrics(y, score, (ours > 0).astype(int)),
                    "num_references": float(s.num_references),
                    "queries": float(len(views)),
                }
                saved[variant] = (y, score)
        return Scored(results, saved, refs_used, saved_signals)
