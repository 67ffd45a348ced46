"""RMIA, the relative membership inference attack (Zarifzadeh et al., "Low-Cost High-Power Membership
Inference Attacks", ICML 2024), under (B,S).

For a candidate ``x`` and a population sample ``z`` (from the attacker's own data), the pairwise
likelihood ratio is ``LR(x, z) = (Pr(x|target) / Pr(x)) / (Pr(z|target) / Pr(z))``, where
``Pr(x|model)`` is the probability the model gives ``x``'s true label and ``Pr(x)`` its average
over reference models (:mod:`reference_models`). The score of ``x`` is the fraction of ``z`` with
``LR(x, z) > gamma``, with ties broken by the ratio ``Pr(x|target) / Pr(x)`` (:func:`rmia_scores`);
``x`` is called a member when that fraction is above one half.

- ``online``: ``Pr(x)`` is the mean over references half of which trained on ``x`` (IN) and half
  not (OUT). The population samples are OUT for all of them.
- ``offline``: only OUT references (trained on the attacker's shadow data), with the paper's
  approximation ``Pr(x) = (1 + a) / 2 * mean_OUT + (1 - a) / 2``. As in Privacy Meter, ``a`` is
  chosen by attacking one reference model as a stand-in target, whose members the attacker knows:
  the value of a grid of 0, 0.1, ..., 1 with the best AUC there. Population samples are OUT for
  only some offline references (they come from the same shadow data); each uses those, and a
  sample with none is not used.

Saved in the attack's folder: ``scores.parquet``, ``exposed.parquet`` and ``masks.safetensors``
(as LiRA's; references of the same kind and number are shared with LiRA through the model store).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from mldoctor_bench.attacks.base import ATTACKS, AttackContext
from mldoctor_bench.attacks.reference_models import (
    OFFLINE,
    ONLINE,
    ReferenceModelAttack,
    Scored,
    reference_set,
    reference_signals,
    signals,
)
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.metrics import membership_metrics
from mldoctor_bench.settings import setting

VARIANTS = (ONLINE, OFFLINE)
A_GRID = tuple(np.round(np.linspace(0, 1, 11), 2))


def trimmed_means(probs: np.ndarray, use: np.ndarray, trim: float = 0.0) -> np.ndarray:
    """Per example, the mean of ``probs`` ``(references, examples)`` over the references ``use``
    marks, leaving out ``floor(trim * count)`` of the lowest and of the highest first (the RMIA
    authors' configs trim 0.2); NaN where no reference is marked."""
    values = np.sort(np.where(use, probs, np.nan), axis=0)  # NaN last
    count = use.sum(0)
    cut = np.floor(trim * count).astype(int)
    rank = np.arange(len(probs))[:, None]
    keep = (rank >= cut) & (rank < count - cut)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(keep.sum(0) > 0, np.where(keep, values, 0.0).sum(0) / keep.sum(0), np.nan)


def out_means(probs: np.ndarray, in_mask: np.ndarray, trim: float = 0.0) -> np.ndarray:
    """Per example, the (trimmed) mean of ``probs`` ``(references, examples)`` over the references
    that did not train on it (``in_mask`` False); NaN where every reference did."""
    return trimmed_means(probs, ~in_mask, trim)


def offline_pr(mean_out: np.ndarray, a: float) -> np.ndarray:
    """The offline estimate of ``Pr(x)`` from the OUT references' mean (the paper's linear fit)."""
    return (1 + a) / 2 * mean_out + (1 - a) / 2


def rmia_fractions(ratio_x: np.ndarray, ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """The fraction of population samples ``z`` with ``ratio_x / ratio_z > gamma``, per ``x``: the
    paper's score, and what its hard decision (above one half) reads."""
    ordered = np.sort(ratio_z)
    return np.searchsorted(ordered, ratio_x / gamma, side="left") / len(ordered)


def rmia_scores(ratio_x: np.ndarray, ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """RMIA's score with its ties broken by the ratio ``Pr(x|target) / Pr(x)`` itself:
    ``(k + r) / (|z| + 1)``, ``k`` the population samples beaten and ``r = 1/2 + atan(log ratio) / pi``
    in ``(0, 1)``, increasing in the ratio. The fraction ``k / |z|`` is a step function of the ratio,
    so the order is the fraction's wherever fractions differ, and the ratio's within a step; without
    this, every candidate above the largest ``z`` ties at 1.0, and a non-member joining that tie costs
    TPR at low FPR."""
    ordered = np.sort(ratio_z)
    beaten = np.searchsorted(ordered, ratio_x / gamma, side="left")
    with np.errstate(divide="ignore"):
        within = 0.5 + np.arctan(np.log(ratio_x)) / np.pi
    return (beaten + within) / (len(ordered) + 1)


def choose_offline_a(
    stand_in: np.ndarray, others: np.ndarray, others_in: np.ndarray, stand_in_members: np.ndarray, trim: float = 0.0
) -> tuple[float, float]:
    """The ``a`` (and its AUC) that best separates a stand-in target's members from its non-members.

    ``stand_in``: ``Pr(x|stand-in)`` of the pool rows; ``others``/``others_in``: the other references'
    probabilities and masks over the same rows; rows that every other reference trained on are left
    out (they have no OUT estimate). The ratio ``Pr(x|stand-in) / Pr(x)`` orders rows exactly as the
    score against any fixed population does, so the AUC is computed on the ratio itself."""
    mean_out = out_means(others, others_in, trim)
    usable = ~np.isnan(mean_out)
    y = stand_in_members[usable]
    if len(set(y.tolist())) < 2:
        raise ValueError(
            "the stand-in reference has only members or only non-members with an OUT estimate; use more references"
        )
    aucs = [roc_auc_score(y, stand_in[usable] / offline_pr(mean_out[usable], a)) for a in A_GRID]
    best = int(np.argmax(aucs))
    return float(A_GRID[best]), float(aucs[best])


@dataclass(frozen=True, kw_only=True)
class RmiaSettings:
    """Reference models (even: online ones come in pairs), the variants, ``gamma``, how many
    population samples to compare against, and how many of the most exposed members to save."""

    num_references: int = setting(min=2, example=4)
    variants: list[str] = setting([OFFLINE], choices=VARIANTS, example="[online,offline]")
    gamma: float = setting(1.0, min=0, min_exclusive=True, example=2.0)
    # share of the reference models' probabilities cut from each end before averaging Pr(x) (the
    # authors' configs: 0.2; 0 is the paper's plain mean)
    trim: float = setting(0.0, min=0, max=0.45, example=0.2)
    # independent sets of references: is a flagged member flagged again with other references?
    repeats: int = setting(1, min=1, example=2)
    num_z: int = setting(1000, min=1, example=500)
    exposed: int = setting(32, min=0)


@ATTACKS.register("membership_rmia")
class RmiaMembershipInference(ReferenceModelAttack):
    """RMIA online/offline under (B,S)."""

    variants = VARIANTS
    Settings = RmiaSettings

    def score(self, ctx: AttackContext, pool: Labeled, is_member: torch.Tensor, repeat: int) -> Scored:
        s = ctx.settings
        population = ctx.knowledge.data
        # candidates x then population samples z, queried together
        queries = Labeled.concat([pool, population])
        target_xz = signals(ctx.target, queries.images, queries.labels).log_p.exp().numpy()
        target_x, target_z = target_xz[: len(pool)], target_xz[len(pool) :]
        y, results, saved, refs_used = is_member.numpy(), {}, {}, []
        saved_signals = {"target_probability": torch.from_numpy(target_xz), "population_index": population.index}
        for kind in self.kinds(s):
            refs = reference_set(ctx, kind, s.num_references, repeat)
            refs_used.append(refs)
            xz_probs = reference_signals(ctx, refs, [queries.images], queries.labels).log_p[0].exp().numpy()
            saved_signals[f"{kind}_probability"] = torch.from_numpy(xz_probs)
            pr_x, pr_z, extra = self.pr(s, refs, xz_probs[:, : len(pool)], xz_probs[:, len(pool) :])
            z = self.population_rows(ctx, pr_z, s.num_z)
            saved_signals[f"{kind}_population_rows"] = torch.from_numpy(z)
            ratio_x, ratio_z = target_x / pr_x, target_z[z] / pr_z[z]
            score = rmia_scores(ratio_x, ratio_z, s.gamma)
            member = (rmia_fractions(ratio_x, ratio_z, s.gamma) > 0.5).astype(int)
            results[kind] = {
                **membership_metrics(y, score, member),
                **extra,
                "num_references": float(s.num_references),
                "num_z": float(len(z)),
            }
            saved[kind] = (y, score)
        return Scored(results, saved, refs_used, saved_signals)

    @staticmethod
    def pr(s: RmiaSettings, refs, x_probs: np.ndarray, z_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        """``Pr(x)`` of the candidates and ``Pr(z)`` of the population rows from the references'
        probabilities (see the module docstring), and the offline ``a`` chosen."""
        every = np.ones_like(x_probs, dtype=bool)
        if refs.kind == ONLINE:  # z: OUT for every online reference ...
            pr_x, pr_z = trimmed_means(x_probs, every, s.trim), trimmed_means(z_probs, every[:, :1], s.trim)
            pr_z[refs.fill.numpy()] = np.nan  # ... but the rows they all train on to match the target's size
            return pr_x, pr_z, {}
        in_pool = refs.masks.numpy()
        a, auc = choose_offline_a(z_probs[0], z_probs[1:], in_pool[1:], in_pool[0], s.trim)
        pr_x = offline_pr(trimmed_means(x_probs, every, s.trim), a)  # candidates: OUT for every one
        return pr_x, offline_pr(out_means(z_probs, in_pool, s.trim), a), {"offline_a": a, "offline_a_auc": auc}

    @staticmethod
    def population_rows(ctx: AttackContext, pr_z: np.ndarray, num_z: int) -> np.ndarray:
        """Up to ``num_z`` random rows of the attacker's data with an estimate of ``Pr(z)``."""
        usable = np.flatnonzero(~np.isnan(pr_z))
        if len(usable) == 0:
            raise ValueError("no population sample has a reference that did not train on it; use more references")
        order = torch.randperm(len(usable), generator=torch.Generator().manual_seed(ctx.seed)).numpy()
        return usable[np.sort(order[:num_z])]
