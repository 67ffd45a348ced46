"""Quantile-regression membership inference, QMIA (Bertran et al., "Scalable Membership Inference
Attacks via Quantile Regression", NeurIPS 2023), under (B,S): no reference models.

The attacker queries the target on its own shadow data, every image of which is a non-member of the
target, and reads LiRA's signal ``phi = log p_y - log(1 - p_y)`` (:mod:`reference_models`). One
regression model learns from an image alone what the target's ``phi`` of each class is on a
non-member like it: the target's architecture with one output head per class. The released
posteriors give ``phi`` for every class of every shadow image, so every head trains on every image;
a candidate is scored by the head of its label. The authors instead train on each image's own label
only, which leaves a mislabelled candidate to a head that never saw an image like it under that
label: on the planted case of the tests that ranked the memorised mislabelled members below most
others (docs/attacks.md gives this and every other deviation with its measured effect). The recipe
is in ``attack.membership_qmia``:

- ``gaussian`` (the default): a mean and a log standard deviation, by the Gaussian negative
  log-likelihood; the score of a candidate is ``z = (phi - mean) / std``;
- ``quantile``: the authors' grid of ``quantiles`` levels, log-spaced in ``1 - level`` up to
  ``top_level``, each by the pinball loss; the score is the level at which the candidate's ``phi``
  crosses its predicted quantiles (in log-odds), the per-example quantile the paper sweeps to trace
  its ROC. On a few hundred shadow images it is less reliable than ``gaussian`` (docs/attacks.md).

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
from typing import Callable

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
LOG_STD_BOUND = 7.0  # keeps exp(-log std) finite while the regressor is far from its fit


@dataclass(frozen=True, kw_only=True)
class QmiaSettings:
    """The variants, the non-member quantile a member must exceed, the quantile variant's grid of
    levels, the regressor's recipe (Adam) and how many of the most exposed members to save."""

    variants: list[str] = setting(["gaussian"], choices=VARIANTS, example="[gaussian,quantile]")
    level: float = setting(0.99, min=0.5, max=0.9999, example=0.999)
    quantiles: int = setting(20, min=2, example=40)
    top_level: float = setting(0.999, min=0.5, max=0.99999, min_exclusive=True, example=0.9999)
    calibration_share: float = setting(0.2, min=0, max=0.5, min_exclusive=True, example=0.3)
    epochs: int = setting(40, min=1)
    lr: float = setting(1e-3, min=0, min_exclusive=True)
    batch_size: int = setting(64, min=1)
    exposed: int = setting(32, min=0)


def quantile_levels(s: QmiaSettings) -> torch.Tensor:
    """The quantile variant's ``s.quantiles`` levels, ascending, log-spaced in ``1 - level`` from
    ``1 - s.top_level`` to 1 (the level 0 left out), as the authors' regressor's grid is."""
    tails = np.logspace(np.log10(1 - s.top_level), 0, s.quantiles + 1)[:-1]
    return torch.tensor(np.sort(1 - tails), dtype=torch.float64)


def outputs_per_class(variant: str, s: QmiaSettings) -> int:
    """The regressor's outputs per class: (mean, log std), or one quantile per level."""
    return 2 if variant == "gaussian" else s.quantiles


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


def pinball(head: torch.Tensor, phi: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of the quantiles ``head`` ``(n, len(levels))`` at ``levels``: each column is
    minimised by the true quantile at its level."""
    diff = phi.unsqueeze(1) - head
    levels = levels.to(head)
    return torch.maximum(levels * diff, (levels - 1) * diff).mean()


Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def variant_loss(variant: str, s: QmiaSettings) -> Loss:
    """The training loss of ``variant``: every class's head against the target's standardised ``phi``
    of that class, ``targets`` ``(n, classes)``."""
    per_class, levels = outputs_per_class(variant, s), quantile_levels(s)

    def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        heads, phi = outputs.reshape(targets.numel(), per_class), targets.reshape(-1)
        return gaussian_nll(heads, phi) if variant == "gaussian" else pinball(heads, phi, levels)

    return loss


def fit_regressor(
    model: torch.nn.Module, images: torch.Tensor, phi: torch.Tensor, loss: Loss, s: QmiaSettings, seed: int
) -> torch.nn.Module:
    """Train ``model`` in place with Adam on shuffled mini-batches of ``images`` (``uint8``) to lower
    ``loss`` (:func:`variant_loss`) against every class's standardised ``phi`` ``(n, classes)``, both
    on the model's device."""
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=s.lr)
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


def quantile_level_scores(quantiles: torch.Tensor, phi: torch.Tensor, levels: torch.Tensor) -> np.ndarray:
    """Per example, the non-member level at which ``phi`` crosses its predicted ``quantiles``
    ``(n, len(levels))``, in log-odds: ``logit(level)`` interpolated linearly between the quantiles
    around ``phi``. The quantiles are sorted first, so that they never cross (the authors' rearrangement,
    Chernozhukov et al. 2010). Beyond the outermost quantiles it goes on at the example's mean slope
    over its whole grid, so that no two examples past the top tie."""
    q, odds = quantiles.sort(1).values, torch.logit(levels.to(quantiles))
    mean_slope = (odds[-1] - odds[0]) / (q[:, -1] - q[:, 0]).clamp_min(1e-9)
    inner = torch.searchsorted(q.contiguous(), phi.unsqueeze(1).contiguous()).squeeze(1).clamp(1, q.shape[1] - 1)
    rows = torch.arange(len(q))
    low, high = q[rows, inner - 1], q[rows, inner]
    width = (high - low).clamp_min(1e-9)
    between = odds[inner - 1] + (phi - low) / width * (odds[inner] - odds[inner - 1])
    above = odds[-1] + (phi - q[:, -1]) * mean_slope
    below = odds[0] + (phi - q[:, 0]) * mean_slope
    return torch.where(phi > q[:, -1], above, torch.where(phi < q[:, 0], below, between)).numpy()


def qmia_scores(variant: str, head: torch.Tensor, phi: torch.Tensor, levels: torch.Tensor) -> np.ndarray:
    """Each example's score from the regressor's ``head`` (its class's outputs) and the target's
    standardised ``phi``: ``z`` for ``gaussian``; for ``quantile`` the level among its predicted
    quantiles at ``levels`` that ``phi`` reaches (:func:`quantile_level_scores`)."""
    if variant == "gaussian":
        return ((phi - head[:, 0]) * torch.exp(-bounded_log_std(head))).numpy()
    return quantile_level_scores(head, phi, levels)


def calibrated_threshold(held_out: np.ndarray, level: float) -> float:
    """The ``level`` quantile of the held-out non-members' scores, taken as the smallest score with at
    least ``level`` of them at or below it: scores above it are called members."""
    return float(np.quantile(held_out, level, method="higher"))


def split_rows(n: int, share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``0..n-1`` split at random into those the regressor fits and a held-out ``share``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = max(1, round(share * n))
    return order[held:].sort().values, order[:held].sort().values


def own_heads(model: torch.nn.Module, examples: Labeled, per_class: int) -> torch.Tensor:
    """The regressor's outputs for each example's own class, ``(n, per_class)``."""
    return head_of(predict_logits(model, examples.images).double().cpu(), examples.labels, per_class)


@ATTACKS.register("membership_qmia")
class QuantileRegressionMembershipInference(Attack):
    """QMIA: the target's confidence on a candidate against what a regressor trained on non-members
    predicts for it, Gaussian or quantile, under (B,S)."""

    family = "membership"
    threat_models = ("blackbox_shadow",)
    Settings = QmiaSettings
    uses_shadow_model = False  # its regressors instead

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
                return ctx.models.untrained(arch, channels, ctx.num_classes * outputs_per_class(variant, s), size)

        def train(model: torch.nn.Module) -> dict:
            images, targets = public.images.to(ctx.device), phi.float().to(ctx.device)
            fit_regressor(model.to(ctx.device), images, targets, variant_loss(variant, s), s, ctx.seed)
            return {"rows": len(public)}

        payload = {
            "variant": variant,
            "calibration_share": s.calibration_share,
            "levels": quantile_levels(s).tolist() if variant == "quantile" else None,
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
            f"qmia-{variant}",
            payload,
            build,
            train,
            thread_safe=True,
            images_seen=len(public) * s.epochs,
            series=(variant,),
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
            [model] = ctx.models.prepare([r])
            per_class, levels = outputs_per_class(variant, s), quantile_levels(s)
            head = own_heads(model, pool, per_class)
            score = qmia_scores(variant, head, phi, levels)
            threshold = calibrated_threshold(
                qmia_scores(variant, own_heads(model, held_out, per_class), held_phi, levels), s.level
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
