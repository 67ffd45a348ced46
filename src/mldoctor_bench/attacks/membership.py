"""Membership inference with a learned attack model (ML-Doctor's MemInf), spec section 5.

Black-box features come from the released posteriors, built in log space so that they survive
confident predictions (spec section 7): the sorted log-posterior vector in one branch, and the
prediction's correctness, the per-example loss and the logit-scaled confidence
``log p_y - log(1 - p_y)`` in another. The attack model learns on the attacker's own data (shadow
model under S, known parts of the target's data under P) and is scored on held-back target data.
"""

from __future__ import annotations

import torch

from mldoctor_bench.attacks.attack_model import fit_attack_model
from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, VariantMetrics
from mldoctor_bench.attacks.signals import LOG_FLOOR, loss_and_confidence
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.metrics import membership_metrics
from mldoctor_bench.threat_models import BlackBoxAccess


def posterior_features(log_probs: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """The two black-box feature groups: sorted log-posteriors; [correct, loss, logit confidence]."""
    lp = log_probs.clamp_min(LOG_FLOOR)
    sorted_lp = lp.sort(dim=1, descending=True).values
    correct = (lp.argmax(1) == labels).double()
    loss, confidence = loss_and_confidence(lp, labels)
    return [sorted_lp.float(), torch.stack([correct, loss, confidence], dim=1).float()]


def blackbox_features(access: BlackBoxAccess, data: Labeled) -> list[torch.Tensor]:
    return posterior_features(access.log_posteriors(data.images), data.labels)


@ATTACKS.register("membership")
class MembershipInference(Attack):
    """MemInf (B,S) and (B,P): an attack model on posterior features."""

    name = "membership"
    threat_models = ("blackbox_shadow", "blackbox_partial")

    def features(self, access: BlackBoxAccess, data: Labeled, ctx: AttackContext) -> list[torch.Tensor]:
        return blackbox_features(access, data)

    def run(self, ctx: AttackContext) -> VariantMetrics:
        k = ctx.knowledge
        source = k.reference if k.reference is not None else ctx.target
        n = min(len(k.members), len(k.nonmembers))
        train_groups = [
            torch.cat(pair)
            for pair in zip(
                self.features(source, k.members.head(n), ctx),
                self.features(source, k.nonmembers.head(n), ctx),
            )
        ]
        train_labels = torch.cat([torch.ones(n), torch.zeros(n)])
        s = ctx.settings
        fitted = fit_attack_model(
            train_groups, train_labels, int(s.epochs), float(s.lr), int(s.batch_size), ctx.seed
        )
        ev = ctx.evaluation
        m = min(len(ev.members), len(ev.nonmembers))
        eval_groups = [
            torch.cat(pair)
            for pair in zip(
                self.features(ctx.target, ev.members.head(m), ctx),
                self.features(ctx.target, ev.nonmembers.head(m), ctx),
            )
        ]
        labels = torch.cat([torch.ones(m), torch.zeros(m)]).numpy()
        scores = fitted.member_scores(eval_groups).numpy()
        metrics = membership_metrics(labels, scores, (scores > 0.5).astype(int))
        metrics["attack_train_loss"] = fitted.losses[-1]
        return {"": metrics}
