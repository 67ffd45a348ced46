"""Defenses judged by the examples they fail to protect: canary leave-one-out evaluation (Aerni, Zhang
and Tramer, "Evaluations of machine learning privacy defenses are misleading", CCS 2024), under
threat model ``auditor``.

``models`` copies of the target (M, even: its architecture, recipe and training-time defense) each
train on target-train plus canaries of a balanced design: every canary (a row of the partition's
canary pool with a wrong label, :mod:`.canaries`) is in exactly half of the copies
(:func:`~.reference_models.paired_masks`). Each copy is released as the target is (through the
cell's output-time defense) and attacked in turn with the other M-1 as its reference models: an
adaptive attacker, whose references are trained with the same defense. Variants:

- ``lira_online``: LiRA online (Carlini et al., S&P 2022), a Gaussian per canary and side (for 64
  copies and more: with fewer, a canary's few references per side make its variance unstable);
- ``lira_online_fixed_var``: the same with one variance per side, pooled over the canaries (the
  default, with RMIA);
- ``rmia_online``: RMIA (Zarifzadeh et al., ICML 2024), ``Pr(x)`` the mean over the M-1
  references, the population the target-test rows (no copy trains on them).

Every copy's canary scores are pooled (M x m scores, half of them members). TPR at 1% and at 0.1%
FPR of the pooled scores, with percentile intervals from a bootstrap over canaries: a canary is in
every copy, so its M scores are resampled together. TPR at 0.1% FPR is reported only where at least
1,000 non-member scores support it (``n_nonmembers`` says how many there are; its interval is
``interval_low_at_fpr_<fpr>`` to ``interval_high_at_fpr_<fpr>``). ``planted_null``: a
planted null, where no copy trains on a canary but the canaries are scored as the design says: the TPR then
stays at the FPR. ``train_only``: train one copy into the model store and stop, so that a sweep over
the copy index trains them as separate jobs (on a cluster, in parallel); a run without it then finds
every copy stored and attacks them. Saved: ``canary_scores.parquet`` (copy, canary, member, variant, score) and
``design.safetensors`` (the masks and the canaries' training labels; a mislabelled canary ``i`` is row
``i`` of the cell's ``canary`` pool in ``splits.safetensors``, blank canaries are saved as
``canary_images``). ``canary_type=blank``: one-colour images with random labels instead (Aerni et al.'s
canaries against DP-SGD).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score

from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, AttackSkipped, ModelRequest, VariantMetrics
from mldoctor_bench.attacks.canaries import IMAGES, blank_canaries, canary_labels
from mldoctor_bench.attacks.membership_lira import lira_scores
from mldoctor_bench.attacks.membership_rmia import rmia_scores
from mldoctor_bench.attacks.reference_models import Signals, paired_masks, signals
from mldoctor_bench.families import WORST_CASE
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.metrics import LOW_FPRS, measurable, tpr_at_fpr
from mldoctor_bench.settings import setting

VARIANTS = ("lira_online", "lira_online_fixed_var", "rmia_online")
FPRS = tuple(sorted(LOW_FPRS, reverse=True))  # 1%, then 0.1% where N >= 1,000 non-member scores support it


@dataclass(frozen=True, kw_only=True)
class WorstCaseSettings:
    """The copies (M), the canaries (m, at most about 5% of a copy's training data), the variants,
    RMIA's ``gamma``, the bootstrap's resamples and the planted null."""

    models: int = setting(16, min=4, example=64)
    canaries: int = setting(min=2, example=25)
    # mislabeled: rows of the canary pool with a wrong label; blank: one-colour images with random
    # labels (Aerni et al.'s canaries against DP-SGD, which hides mislabelled natural images well)
    canary_type: str = setting("mislabeled", choices=IMAGES, example="blank")
    variants: list[str] = setting(["lira_online_fixed_var", "rmia_online"], choices=VARIANTS, example="[lira_online]")
    gamma: float = setting(2.0, min=0, min_exclusive=True)
    bootstrap: int = setting(1000, min=100, example=2000)
    planted_null: bool = setting(False)
    train_only: Optional[int] = setting(None, min=0, example=3)  # one copy into the store, no attack


def loo_scores(variant: str, canary: Signals, masks: torch.Tensor, population: Signals, gamma: float) -> np.ndarray:
    """``(M, m)``: each copy's score of each canary, the other copies its references."""
    out = []
    for t in range(len(masks)):
        others = torch.arange(len(masks)) != t
        if variant.startswith("lira"):
            score = lira_scores(canary.phi[t][None], canary.phi[others][None], masks[others], "fixed_var" in variant)
            out.append(score.numpy())
            continue
        log_pr_x = torch.logsumexp(canary.log_p[others], 0) - np.log(int(others.sum()))
        log_pr_z = torch.logsumexp(population.log_p[others], 0) - np.log(int(others.sum()))
        ratio_x = (canary.log_p[t] - log_pr_x).exp().numpy()
        ratio_z = (population.log_p[t] - log_pr_z).exp().numpy()
        out.append(rmia_scores(ratio_x, ratio_z, gamma))
    return np.stack(out)


def canary_bootstrap(
    masks: np.ndarray, scores: np.ndarray, fpr: float, resamples: int, seed: int
) -> tuple[float, float]:
    """The 95% percentile interval of the pooled TPR at ``fpr`` over resampled canaries (columns)."""
    rng = np.random.default_rng(seed)
    m = masks.shape[1]
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, m, m)
        y, s = masks[:, pick].ravel(), scores[:, pick].ravel()
        values.append(tpr_at_fpr(y, s, fpr) if 0 < y.sum() < len(y) else np.nan)
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def pooled_metrics(masks: np.ndarray, scores: np.ndarray, resamples: int, seed: int) -> dict[str, float]:
    """TPR at each FPR of :data:`FPRS` (where enough non-member scores support it) with its interval,
    the AUC and how many scores each side holds."""
    y, s = masks.ravel(), scores.ravel()
    out = {"auc": float(roc_auc_score(y, s)), "n_members": float(y.sum()), "n_nonmembers": float((~y).sum())}
    for fpr in FPRS:
        if not measurable((~y).sum(), fpr):
            continue
        name = f"tpr_at_fpr_{fpr:g}"
        out[name] = tpr_at_fpr(y, s, fpr)
        out[f"interval_low_at_fpr_{fpr:g}"], out[f"interval_high_at_fpr_{fpr:g}"] = canary_bootstrap(
            masks, scores, fpr, resamples, seed
        )
    return out


@ATTACKS.register("worst_case")
class WorstCaseEvaluation(Attack):
    """Canary leave-one-out evaluation of the cell's defense (see the module docstring)."""

    family = WORST_CASE
    threat_models = ("auditor",)
    Settings = WorstCaseSettings
    uses_shadow_model = False  # its copies instead

    def pool_sizes(self, settings: WorstCaseSettings) -> dict[str, int]:
        return {"canary": settings.canaries if settings.canary_type == "mislabeled" else 0}

    def check_settings(self, settings: WorstCaseSettings) -> None:
        if settings.models % 2:
            raise ValueError(f"models={settings.models}: each canary is in half of the copies, so give an even number")
        if settings.train_only is not None and settings.train_only >= settings.models:
            raise ValueError(
                f"train_only={settings.train_only}: copies are numbered 0 to models - 1 = {settings.models - 1}"
            )

    def design(self, ctx: AttackContext) -> tuple[Labeled, torch.Tensor, torch.Tensor, list[ModelRequest]]:
        """The canaries, their training labels, the masks ``(M, m)`` and each copy's training request."""
        s, k = ctx.settings, ctx.knowledge
        generator = torch.Generator().manual_seed(ctx.seed)
        if s.canary_type == "blank":
            images, labels = blank_canaries(s.canaries, tuple(k.members.images.shape[1:]), ctx.num_classes, generator)
            canaries = Labeled(images, labels)
        else:
            if k.canaries is None or len(k.canaries) < s.canaries:
                held = 0 if k.canaries is None else len(k.canaries)
                raise AttackSkipped(f"the cell's canary pool holds {held} rows, fewer than attack.worst_case.canaries")
            canaries = k.canaries.head(s.canaries)
            labels = canary_labels(canaries.labels, "mislabeled", ctx.num_classes, generator)
        masks = paired_masks(s.canaries, s.models, ctx.seed)
        null = "-null" if s.planted_null else ""
        trained = torch.zeros_like(masks) if s.planted_null else masks  # the planted null trains on none
        requests = [
            ModelRequest(
                f"worst-case-{i}-of-{s.models}{null}",
                torch.cat([k.members.images, canaries.images[mask]]),
                torch.cat([k.members.labels, labels[mask]]),
            )
            for i, mask in enumerate(trained)
        ]
        return canaries, labels, masks, requests

    def run(self, ctx: AttackContext) -> VariantMetrics:
        s, k = ctx.settings, ctx.knowledge
        canaries, labels, masks, requests = self.design(ctx)
        if s.train_only is not None:
            ctx.models.released_copies([requests[s.train_only]])
            raise AttackSkipped(
                f"train_only={s.train_only}: copy {s.train_only} of {s.models} is in the model store; once every "
                "copy is, run without attack.worst_case.train_only to attack them"
            )
        copies = ctx.models.released_copies(requests)
        canary = Signals.stack([signals(c.access, canaries.images, labels) for c in copies])
        test = ctx.evaluation.target_test
        population = Signals.stack([signals(c.access, test.images, test.labels) for c in copies])
        accuracy = [
            float((c.access.log_posteriors(test.images).argmax(1) == test.labels).float().mean()) for c in copies
        ]
        common = {
            "models": float(s.models),
            "canaries": float(s.canaries),
            "canary_share": s.canaries / 2 / (len(k.members) + s.canaries / 2),
            "test_accuracy": float(np.mean(accuracy)),
            "test_accuracy_sd": float(np.std(accuracy, ddof=1)),
        }
        if all("epsilon" in c.metrics for c in copies):
            common["epsilon"] = float(np.mean([c.metrics["epsilon"] for c in copies]))
        results, frames = {}, []
        for variant in s.variants:
            scores = loo_scores(variant, canary, masks, population, s.gamma)
            results[variant] = {**pooled_metrics(masks.numpy(), scores, s.bootstrap, ctx.seed), **common}
            copy, row = np.indices(scores.shape)
            frames.append(
                pd.DataFrame(
                    {
                        "copy": copy.ravel(),
                        "canary": row.ravel(),
                        "member": masks.numpy().ravel(),
                        "variant": variant,
                        "score": scores.ravel(),
                    }
                )
            )
        pd.concat(frames, ignore_index=True).to_parquet(ctx.out_dir / "canary_scores.parquet", index=False)
        design = {"masks": masks.to(torch.uint8), "training_labels": labels.contiguous()}
        if s.canary_type != "mislabeled":  # made up, not rows of the pool: keep them
            design["canary_images"] = canaries.images.contiguous()
        save_file(design, str(ctx.out_dir / "design.safetensors"))
        return results
