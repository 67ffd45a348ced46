"""RMIA, the relative membership inference attack (Zarifzadeh et al., "Low-Cost High-Power Membership
Inference Attacks", ICML 2024), under (B,S).

For a candidate ``x`` and a population sample ``z`` (from the attacker's own data), the pairwise
likelihood ratio is ``LR(x, z) = (Pr(x|target) / Pr(x)) / (Pr(z|target) / Pr(z))``, where
``Pr(x|model)`` is the probability the model gives ``x``'s true label and ``Pr(x)`` its average
over reference models (:mod:`reference_models`). The score of ``x`` is the fraction of ``z`` with
``LR(x, z) > gamma``; ``x`` is called a member when that fraction is above one half.

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

from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, ModelRequest, VariantMetrics
from mldoctor_bench.attacks.reference_models import (OFFLINE, ONLINE, candidates, check_pairs, reference_set,
                                                     reference_signals, save_masks, signals)
from mldoctor_bench.attacks.scoring import save_exposed, save_scores
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.metrics import membership_metrics
from mldoctor_bench.settings import setting

VARIANTS = (ONLINE, OFFLINE)
A_GRID = tuple(np.round(np.linspace(0, 1, 11), 2))


def out_means(probs: np.ndarray, in_mask: np.ndarray) -> np.ndarray:
    """Per example, the mean of ``probs`` ``(references, examples)`` over the references that did not
    train on it (``in_mask`` False); NaN where every reference did."""
    out = ~in_mask
    count = out.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (probs * out).sum(0) / count, np.nan)


def offline_pr(mean_out: np.ndarray, a: float) -> np.ndarray:
    """The offline estimate of ``Pr(x)`` from the OUT references' mean (the paper's linear fit)."""
    return (1 + a) / 2 * mean_out + (1 - a) / 2


def rmia_scores(ratio_x: np.ndarray, ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """The fraction of population samples ``z`` with ``ratio_x / ratio_z > gamma``, per ``x``."""
    ordered = np.sort(ratio_z)
    return np.searchsorted(ordered, ratio_x / gamma, side="left") / len(ordered)


def choose_offline_a(stand_in: np.ndarray, others: np.ndarray, others_in: np.ndarray,
                     stand_in_members: np.ndarray) -> tuple[float, float]:
    """The ``a`` (and its AUC) that best separates a stand-in target's members from its non-members.

    ``stand_in``: ``Pr(x|stand-in)`` of the pool rows; ``others``/``others_in``: the other references'
    probabilities and masks over the same rows; rows that every other reference trained on are left
    out (they have no OUT estimate). The ratio ``Pr(x|stand-in) / Pr(x)`` orders rows exactly as the
    score against any fixed population does, so the AUC is computed on the ratio itself."""
    mean_out = out_means(others, others_in)
    usable = ~np.isnan(mean_out)
    y = stand_in_members[usable]
    if len(set(y.tolist())) < 2:
        raise ValueError("the stand-in reference has only members or only non-members with an OUT estimate; "
                         "use more references")
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
    num_z: int = setting(1000, min=1, example=500)
    exposed: int = setting(32, min=0)


@ATTACKS.register("membership_rmia")
class RmiaMembershipInference(Attack):
    """RMIA online/offline under (B,S)."""

    threat_models = ("blackbox_shadow",)
    Settings = RmiaSettings

    def check_settings(self, s: RmiaSettings) -> None:
        check_pairs(s.num_references, ONLINE in s.variants)
        if not s.variants:
            raise ValueError(f"choose at least one variant of {', '.join(VARIANTS)}")

    def models_wanted(self, ctx: AttackContext) -> list[ModelRequest]:
        s = ctx.settings
        return [r for kind in s.variants for r in reference_set(ctx, kind, s.num_references).requests]

    def run(self, ctx: AttackContext) -> VariantMetrics:
        s = ctx.settings
        pool, is_member = candidates(ctx)
        population = ctx.knowledge.data
        # candidates x then population samples z, queried together
        queries = Labeled.concat([pool, population])
        target_xz = signals(ctx.target, queries.images, queries.labels).log_p.exp().numpy()
        target_x, target_z = target_xz[: len(pool)], target_xz[len(pool):]
        y, results, saved, masks = is_member.numpy(), {}, {}, {}
        for kind in (k for k in VARIANTS if k in s.variants):
            refs = reference_set(ctx, kind, s.num_references)
            masks[kind] = refs.masks
            xz_probs = reference_signals(ctx, refs, [queries.images], queries.labels).log_p[0].exp().numpy()
            x_probs, z_probs = xz_probs[:, : len(pool)], xz_probs[:, len(pool):]
            extra = {}
            if kind == ONLINE:
                pr_x, pr_z = x_probs.mean(0), z_probs.mean(0)  # z: OUT for every online reference
            else:
                in_pool = refs.masks.numpy()
                a, auc = choose_offline_a(z_probs[0], z_probs[1:], in_pool[1:], in_pool[0])
                extra = {"offline_a": a, "offline_a_auc": auc}
                pr_x = offline_pr(x_probs.mean(0), a)  # candidates: OUT for every offline reference
                pr_z = offline_pr(out_means(z_probs, in_pool), a)
            z = self.population_rows(ctx, pr_z, s.num_z)
            score = rmia_scores(target_x / pr_x, target_z[z] / pr_z[z], s.gamma)
            results[kind] = {**membership_metrics(y, score, (score > 0.5).astype(int)), **extra,
                             "num_references": float(s.num_references), "num_z": float(len(z))}
            saved[kind] = (y, score)
        save_scores(ctx.out_dir / "scores.parquet", saved)
        save_exposed(ctx.out_dir, saved, pool.head(int(is_member.sum())), s.exposed)
        save_masks(ctx, masks)
        return results

    @staticmethod
    def population_rows(ctx: AttackContext, pr_z: np.ndarray, num_z: int) -> np.ndarray:
        """Up to ``num_z`` random rows of the attacker's data with an estimate of ``Pr(z)``."""
        usable = np.flatnonzero(~np.isnan(pr_z))
        if len(usable) == 0:
            raise ValueError("no population sample has a reference that did not train on it; use more references")
        order = torch.randperm(len(usable), generator=torch.Generator().manual_seed(ctx.seed)).numpy()
        return usable[np.sort(order[:num_z])]
