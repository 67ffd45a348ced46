"""Quantile-regression membership inference, QMIA (Bertran et al., "Scalable Membership Inference
Attacks via Quantile Regression", NeurIPS 2023), under (B,S): no reference models.

The attacker queries the target on its own shadow data, every image of which is a non-member of the
target, and reads LiRA's signal ``phi = log p_y - log(1 - p_y)`` (:mod:`reference_models`). One
regression model learns from an image alone what the target's ``phi`` of each class is on a
non-member like it: the target's architecture with one output head per class. The released
posteriors give ``phi`` for every class of every shadow image, so every head trains on every image
(a head that only saw images of its own class would guess blindly for a candidate with another
label, e.g. a mislabelled one); a candidate is scored by the head of its label. The recipe is in
``attack.membership_qmia``:

- ``gaussian``: a mean and a log standard deviation, by the Gaussian negative log-likelihood; the
  score of a candidate is ``z = (phi - mean) / std``;
- ``quantile``: the ``level`` quantile itself, by the pinball loss; the score is ``phi - quantile``.

Neither uses a membership label of the target. A regressor fitted on a few hundred images is
over-confident on images it did not see (on the quick cell it flagged 11-27% of the non-members at
``level`` 0.99 with its own threshold), so a share ``calibration_share`` of the shadow data is held
out of the fit, and a candidate is called a member when its score exceeds the ``level`` quantile of
the held-out images' scores (as conformalised quantile regression does: Romano et al., NeurIPS
2019). The scores' order, and so AUC and TPR at a fixed FPR, do not depend on it;
``nonmember_flag_rate`` reports the share of evaluation non-members flagged, ``1 - level`` when
calibrated. ``phi`` is standardised by its mean and spread over the shadow data (all classes)
before the fit, which changes neither score's order. The regressor trains with Adam (as the attack
models do); on the quick profile, 40 epochs on 800 of the 1,000 shadow images are 0.8 of the image
passes of one reference model of LiRA or RMIA (80 epochs on 500).

Saved in the attack's folder: ``scores.parquet``, ``exposed.parquet`` and ``signals.safetensors``
(the target's standardised ``phi`` on the candidates and of every class on the shadow data, the
held-out rows, and each variant's predicted parameters for the candidates), so the cell folder alone
can re-score the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import save_file

from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, CachedRequest, VariantMetrics
from mldoctor_bench.attacks.reference_models import candidates, signals
from mldoctor_bench.attacks.scoring import save_exposed, save_scores
from mldoctor_bench.attacks.signals import loss_and_confidence
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.metrics import membership_metrics
from mldoctor_bench.settings import setting
from mldoctor_bench.training import iterate_batches, model_inputs, predict_logits

VARIANTS = ("gaussian", "quantile")
OUTPUTS = {"gaussian": 2, "quantile": 1}  # per class: (mean, log std), or the one quantile
LOG_STD_BOUND = 7.0  # keeps exp(-log std) finite while the regressor is far from its fit


@dataclass(frozen=True, kw_only=True)
class QmiaSettings:
    """The variants, the non-member quantile a member must exceed, the regressor's recipe (Adam) and
    how many of the most exposed members to save."""

    variants: list[str] = setting(list(VARIANTS), choices=VARIANTS, example="[quantile]")
    level: float = setting(0.99, min=0.5, max=0.9999, example=0.999)
    calibration_share: float = setting(0.2, min=0, max=0.5, min_exclusive=True, example=0.3)
    epochs: int = setting(40, min=1)
    lr: float = setting(1e-3, min=0, min_exclusive=True)
    batch_size: int = setting(64, min=1)
    exposed: int = setting(32, min=0)


def head_of(outputs: torch.Tensor, labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """The ``(n, per_class)`` outputs of each row's own class, from ``(n, classes * per_class)``."""
    return outputs.view(len(outputs), -1, per_class)[torch.arange(len(outputs)), labels.long()]


def bounded_log_std(head: torch.Tensor) -> torch.Tensor:
    """The Gaussian head's log standard deviation, within :data:`LOG_STD_BOUND`."""
    return head[:, 1].clamp(-LOG_STD_BOUND, LOG_STD_BOUND)


def gaussian_nll(head: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood (up to a constant) of ``phi`` under ``N(head[:, 0], exp(head[:, 1]))``."""
    log_std = bounded_log_std(head)
    return (log_std + 0.5 * ((phi - head[:, 0]) * torch.exp(-log_std)) ** 2).mean()


def pinball(head: torch.Tensor, phi: torch.Tensor, level: float) -> torch.Tensor:
    """Mean pinball loss of the ``level`` quantile ``head[:, 0]``: minimised by the true quantile."""
    diff = phi - head[:, 0]
    return torch.maximum(level * diff, (level - 1) * diff).mean()


def variant_loss(variant: str, level: float):
    """The training loss of ``variant``: every class's head against the target's standardised ``phi``
    of that class, ``targets`` ``(n, classes)``."""

    def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        heads, phi = outputs.reshape(targets.numel(), OUTPUTS[variant]), targets.reshape(-1)
        return gaussian_nll(heads, phi) if variant == "gaussian" else pinball(heads, phi, level)

    return loss


def fit_regressor(
    model: torch.nn.Module, images: torch.Tensor, phi: torch.Tensor, variant: str, s: QmiaSettings, seed: int
) -> torch.nn.Module:
    """Train ``model`` in place with Adam on shuffled mini-batches of ``images`` (``uint8``) against
    every class's standardised ``phi`` ``(n, classes)``, both on the model's device."""
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=s.lr)
    loss = variant_loss(variant, s.level)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(s.epochs):
        for batch in iterate_batches(len(images), s.batch_size, generator):
            batch = batch.to(images.device)
            optimiser.zero_grad(set_to_none=True)
            loss(model(model_inputs(images[batch])).float(), phi[batch]).backward()
            optimiser.step()
    return model.eval()


def every_class_phi(access, images: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(n, classes)``: the target's ``phi`` of each class on each image, from one query per image."""
    log_probs = access.log_posteriors(images)
    labels = [torch.full((len(images),), c, dtype=torch.long) for c in range(num_classes)]
    return torch.stack([loss_and_confidence(log_probs, y)[1] for y in labels], 1)


def standardised(phi: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``phi`` standardised by the mean and spread of ``reference`` (every class of every shadow image)."""
    return (phi - reference.mean()) / reference.std().clamp_min(1e-6)


def qmia_scores(variant: str, head: torch.Tensor, phi: torch.Tensor) -> np.ndarray:
    """Each example's score from the regressor's ``head`` (its class's outputs) and the target's
    standardised ``phi``: ``z`` for ``gaussian``, ``phi`` minus the quantile for ``quantile``."""
    if variant == "gaussian":
        return ((phi - head[:, 0]) * torch.exp(-bounded_log_std(head))).numpy()
    return (phi - head[:, 0]).numpy()


def calibrated_threshold(held_out: np.ndarray, level: float) -> float:
    """The ``level`` quantile of the held-out non-members' scores, taken as the smallest score with at
    least ``level`` of them at or below it: scores above it are called members."""
    return float(np.quantile(held_out, level, method="higher"))


def split_rows(n: int, share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``0..n-1`` split at random into those the regressor fits and a held-out ``share``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = max(1, round(share * n))
    return order[held:].sort().values, order[:held].sort().values


def own_heads(model: torch.nn.Module, examples: Labeled, variant: str) -> torch.Tensor:
    """The regressor's outputs for each example's own class, ``(n, per_class)``."""
    return head_of(predict_logits(model, examples.images).double().cpu(), examples.labels, OUTPUTS[variant])


@ATTACKS.register("membership_qmia")
class QuantileRegressionMembershipInference(Attack):
    """QMIA: the target's confidence on a candidate against what a regressor trained on non-members
    predicts for it, Gaussian or quantile, under (B,S)."""

    family = "membership"
    threat_models = ("blackbox_shadow",)
    Settings = QmiaSettings

    def check_settings(self, s: QmiaSettings) -> None:
        if not s.variants:
            raise ValueError(f"choose at least one variant of {', '.join(VARIANTS)}")

    def regressor_request(self, ctx: AttackContext, variant: str, public: Labeled, phi: torch.Tensor) -> CachedRequest:
        """The variant's regressor, to train on the shadow images and the target's standardised ``phi``
        of every class on them (through the model cache)."""
        s, arch = ctx.settings, ctx.target_arch
        if not arch:
            raise ValueError("QMIA's regressor takes the target's architecture, and the context names none")
        channels, size = int(public.images.shape[1]), int(public.images.shape[-1])

        def build() -> torch.nn.Module:
            with torch.random.fork_rng(devices=[]):  # the global generator is left as it was
                torch.manual_seed(ctx.seed)
                return ctx.models.untrained(arch, channels, ctx.num_classes * OUTPUTS[variant], size)

        def train(model: torch.nn.Module) -> dict:
            images, targets = public.images.to(ctx.device), phi.float().to(ctx.device)
            fit_regressor(model.to(ctx.device), images, targets, variant, s, ctx.seed)
            return {"rows": len(public)}

        payload = {
            "variant": variant,
            "calibration_share": s.calibration_share,
            "level": s.level if variant == "quantile" else None,
            "recipe": {"epochs": s.epochs, "lr": s.lr, "batch_size": s.batch_size, "optimiser": "adam"},
            "arch": arch,
            "seed": ctx.seed,
            "rows": len(public),
            "threat_model": ctx.threat_model.name,
        }
        # the cell's identity, part of every cached model's key, fixes the target and its defense
        # fit_regressor shuffles with its own generator: the regressor may train beside the attack's
        # other models in threads (a request that is not thread-safe makes its whole group sequential)
        return CachedRequest(
            f"qmia-{variant}", payload, build, train, thread_safe=True, images_seen=len(public) * s.epochs
        )

    def fitted(self, ctx: AttackContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The shadow rows the regressors fit and those held out, and the target's ``phi`` of every
        class on every shadow image (what :func:`standardised` takes its mean and spread from)."""
        s, public = ctx.settings, ctx.knowledge.data
        if public is None:
            raise ValueError("QMIA needs the attacker's shadow data (its non-members of the target)")
        every_phi = every_class_phi(ctx.target, public.images, ctx.num_classes)
        fit, held = split_rows(len(public), s.calibration_share, ctx.seed)
        return fit, held, every_phi

    def models_wanted(self, ctx: AttackContext) -> list[CachedRequest]:
        fit, _, every_phi = self.fitted(ctx)
        public_phi = standardised(every_phi, every_phi)
        rows = ctx.knowledge.data.rows(fit)
        return [self.regressor_request(ctx, v, rows, public_phi[fit]) for v in ctx.settings.variants]

    def run(self, ctx: AttackContext) -> VariantMetrics:
        s, public = ctx.settings, ctx.knowledge.data
        fit, held, every_phi = self.fitted(ctx)
        public_phi = standardised(every_phi, every_phi)
        pool, is_member = candidates(ctx)
        phi = standardised(signals(ctx.target, pool.images, pool.labels).phi, every_phi)
        fitted, held_out = public.rows(fit), public.rows(held)
        held_phi = public_phi[held, held_out.labels]
        y, results, saved = is_member.numpy(), {}, {}
        kept = {"target_phi": phi, "public_phi": public_phi, "held_out_rows": held}
        for variant in s.variants:
            r = self.regressor_request(ctx, variant, fitted, public_phi[fit])
            model = ctx.models.cached(r.role, r.payload, r.build, r.train).model
            head = own_heads(model, pool, variant)
            score = qmia_scores(variant, head, phi)
            threshold = calibrated_threshold(
                qmia_scores(variant, own_heads(model, held_out, variant), held_phi), s.level
            )
            decision = (score > threshold).astype(int)
            results[variant] = {
                **membership_metrics(y, score, decision),
                "threshold": threshold,
                "nonmember_flag_rate": float(decision[y == 0].mean()),
                "public_rows": float(len(fit)),
                "calibration_rows": float(len(held)),
            }
            saved[variant], kept[f"{variant}_head"] = (y, score), head
        save_scores(ctx.out_dir / "scores.parquet", saved, pool)
        save_exposed(ctx.out_dir, saved, pool, s.exposed)
        save_file({k: v.contiguous() for k, v in kept.items()}, str(ctx.out_dir / "signals.safetensors"))
        return results
