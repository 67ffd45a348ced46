"""The one-run privacy audit (Steinke, Nasr, Jagielski, NeurIPS 2023): an empirical
lower bound on the epsilon of the target's training, beside the DP accountant's epsilon.

The model owner (threat model ``auditor``) trains an audited copy of the target (its architecture,
recipe and training-time defense) on target-train plus ``m`` canaries from the partition's canary
pool, each included independently with probability 1/2. Canaries are ``mislabeled`` (pool images
with a wrong label drawn from the seed: an included one can only be fitted by memorising it) or
``natural`` (their true labels). The released copy is queried like the target (black-box, through
the cell's output-time defense) and each canary is scored with its training label:

- ``loss``: minus the cross-entropy, ``log p_y``;
- ``confidence``: the logit-scaled confidence ``log p_y - log(1 - p_y)``: the same ranking as the
  loss, except where ``p_y`` rounds to 1 and the loss ties at 0 (the confidence keeps ordering them).

Each variant guesses the highest scores included and the lowest excluded and turns its correct
guesses into a bound with :mod:`mldoctor_bench.audit_bound` (maximised over a grid of guess counts,
Bonferroni-corrected, at confidence ``1 - beta`` and the training run's DP delta). The inclusion
mask, training labels and true labels are saved to ``canaries.safetensors`` (canary ``i`` is row
``i`` of the cell's ``canary`` pool in ``splits.safetensors``) and the scores to ``scores.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from safetensors.torch import save_file

from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, AttackSkipped, VariantMetrics
from mldoctor_bench.attacks.canaries import KINDS, canary_labels
from mldoctor_bench.attacks.scoring import save_scores
from mldoctor_bench.attacks.signals import loss_and_confidence
from mldoctor_bench.audit_bound import DEFAULT_GUESS_FRACTIONS, audit
from mldoctor_bench.audit_fdp import audit_fdp
from mldoctor_bench.settings import setting

SCORES = ("loss", "confidence")
DELTA_WITHOUT_DP = 1e-5  # the delta a bound is stated at when the training reports none


@dataclass(frozen=True, kw_only=True)
class AuditSettings:
    """Canaries (how many, which kind), the scores to audit with, the confidence ``1 - beta``, the
    delta (null: the DP training's own, else 1e-5) and the shares of canaries the grid of guess
    counts is built from (each of k+ and k- is 0 or one share)."""

    canaries: int = setting(min=1, example=1000)
    canary_kind: str = setting("mislabeled", choices=KINDS)
    variants: list[str] = setting(list(SCORES), choices=SCORES, example="[confidence]")
    beta: float = setting(0.05, min=0, max=1, min_exclusive=True)
    delta: Optional[float] = setting(None, min=0, max=1, example=1e-5)
    guess_fractions: list[float] = setting(list(DEFAULT_GUESS_FRACTIONS), example="[0.1,0.5]")


@ATTACKS.register("privacy_audit")
class PrivacyAudit(Attack):
    """One-run audit: canaries in, guesses out, an epsilon lower bound (auditor only)."""

    family = "privacy_audit"
    threat_models = ("auditor",)
    Settings = AuditSettings

    def pool_sizes(self, settings: AuditSettings) -> dict[str, int]:
        return {"canary": settings.canaries}

    def check_settings(self, settings: AuditSettings) -> None:
        bad = [f for f in settings.guess_fractions if not 0 < f <= 1]
        if bad or not settings.guess_fractions:
            raise ValueError(
                f"guess_fractions={list(settings.guess_fractions)}: give shares of the canaries "
                "in (0, 1], e.g. [0.01,0.1,0.5]"
            )
        if settings.beta >= 1:
            raise ValueError(f"beta={settings.beta}: the confidence is 1 - beta, so beta must be below 1, e.g. 0.05")

    def run(self, ctx: AttackContext) -> VariantMetrics:
        s, k = ctx.settings, ctx.knowledge
        pool = k.canaries
        if pool is None or len(pool) < s.canaries:
            held = 0 if pool is None else len(pool)
            raise AttackSkipped(
                f"the cell's canary pool holds {held} rows, fewer than attack.privacy_audit.canaries={s.canaries}"
            )
        canaries = pool.head(s.canaries)
        generator = torch.Generator().manual_seed(ctx.seed)
        included = torch.rand(s.canaries, generator=generator) < 0.5
        labels = canary_labels(canaries.labels, s.canary_kind, ctx.num_classes, generator)

        images = torch.cat([k.members.images, canaries.images[included]])
        targets = torch.cat([k.members.labels, labels[included]])
        released = ctx.models.defended_classifier(f"audited-{s.canary_kind}", images, targets)
        log_probs = released.access.log_posteriors(canaries.images)
        loss, confidence = loss_and_confidence(log_probs, labels)
        scores = {"loss": (-loss).numpy(), "confidence": confidence.numpy()}

        save_canaries(ctx, canaries, included, labels, {v: scores[v] for v in s.variants})

        delta = s.delta if s.delta is not None else float(released.metrics.get("delta", DELTA_WITHOUT_DP))
        common = {
            "canaries": float(s.canaries),
            "canaries_included": float(included.sum()),
            "beta": float(s.beta),
            "delta": delta,
        }
        if "train_accuracy" in released.metrics:
            common["audited_train_accuracy"] = float(released.metrics["train_accuracy"])
        if "epsilon" in released.metrics:  # the accountant's epsilon of this very training run
            common["epsilon"] = float(released.metrics["epsilon"])
        results = {}
        for variant in s.variants:
            same = dict(delta=delta, beta=s.beta, fractions=s.guess_fractions, seed=ctx.seed)
            r = audit(scores[variant], included.numpy(), **same)
            f = audit_fdp(scores[variant], included.numpy(), **same)  # the same guesses, Gaussian-DP analysis
            results[variant] = {
                "epsilon_lower_bound": r.epsilon_lower_bound,
                "correct_guesses": float(r.correct_guesses),
                "guesses": float(r.guesses),
                "k_plus": float(r.k_plus),
                "k_minus": float(r.k_minus),
                "grid_tests": float(r.tests),
                "fdp_epsilon_lower_bound": f.epsilon_lower_bound,
                "fdp_mu_lower_bound": f.mu_lower_bound,
                "fdp_correct_guesses": float(f.correct_guesses),
                "fdp_guesses": float(f.guesses),
                **common,
            }
        return results


def save_canaries(ctx: AttackContext, canaries, included: torch.Tensor, labels: torch.Tensor, scores: dict) -> None:
    """Which canaries trained the audited model, with which labels, and each variant's scores."""
    save_file(
        {
            "included": included.to(torch.uint8),
            "training_labels": labels.contiguous(),
            "true_labels": canaries.labels.contiguous(),
        },
        str(ctx.out_dir / "canaries.safetensors"),
    )
    save_scores(
        ctx.out_dir / "scores.parquet",
        {v: (included.numpy(), x) for v, x in scores.items()},
        canaries,
        roles=("canary", "canary"),
    )
