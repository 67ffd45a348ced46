"""Membership inference with a learned attack model (ML-Doctor's MemInf, Liu et al. 2022).

Black-box features come from the released posteriors, built in log space so that they survive
confident predictions (docs/attacks.md): the sorted log-posterior vector in one branch, and the
prediction's correctness, the per-example loss and the logit-scaled confidence
``log p_y - log(1 - p_y)`` in another. The attack model learns on the attacker's own data (shadow
model under S, known parts of the target's data under P) and is scored on held-back target data.

White-box adds what only weights give: the per-example gradient of the loss with respect to the
last layer's weights (a real per-sample gradient, computed with ``torch.func.vmap``; the original
summed gradients across samples), its norm, and the one-hot label. The gradient branch is a small
conv net over the (classes x embedding) gradient matrix. Its form depends on the threat model:

- (W,S): each row's magnitudes sorted and the largest ``TOP_UNITS`` kept. Hidden units of two
  independently trained networks are unordered, so a shadow model's gradients only transfer to the
  target in a form that does not depend on the order of the embedding units.
- (W,P): the raw gradient matrix. The attack trains and scores on the target itself, where unit
  order is meaningful, and sorting would throw away what white-box access adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from mldoctor_bench.attacks.attack_model import fit_attack_model
from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, VariantMetrics
from mldoctor_bench.attacks.scoring import save_exposed, save_scores
from mldoctor_bench.attacks.signals import LOG_FLOOR, loss_and_confidence
from mldoctor_bench.inference import model_inputs
from mldoctor_bench.knowledge import Labeled, balanced
from mldoctor_bench.metrics import membership_metrics
from mldoctor_bench.models import Classifier
from mldoctor_bench.settings import setting
from mldoctor_bench.threat_models import BlackBoxAccess, WhiteBoxAccess

TOP_UNITS = 16  # largest gradient magnitudes kept per class row


def posterior_features(log_probs: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """The two black-box feature groups: sorted log-posteriors; [correct, loss, logit confidence]."""
    lp = log_probs.clamp_min(LOG_FLOOR)
    sorted_lp = lp.sort(dim=1, descending=True).values
    correct = (lp.argmax(1) == labels).double()
    loss, confidence = loss_and_confidence(lp, labels)
    return [sorted_lp.float(), torch.stack([correct, loss, confidence], dim=1).float()]


def blackbox_features(access: BlackBoxAccess, data: Labeled) -> list[torch.Tensor]:
    """Feature groups from the released posteriors of ``data``."""
    return posterior_features(access.log_posteriors(data.images), data.labels)


def head_gradients(
    model: Classifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Per-example gradients of the cross-entropy loss w.r.t. the last layer's weight,
    ``(N, classes, embedding)``; each row is exactly what a backward pass on that example alone gives."""
    device = next(model.parameters()).device
    params = {k: v.detach() for k, v in model.head.named_parameters()}

    def loss(p: dict, emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model.head, p, (emb.unsqueeze(0),)), y.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    out = []
    model.eval()
    for start in range(0, len(images), batch_size):
        x = model_inputs(images[start : start + batch_size].to(device))
        y = labels[start : start + batch_size].to(device)
        with torch.no_grad():
            emb = model.embed(x)
        out.append(per_example(params, emb, y)["weight"].cpu())
    return torch.cat(out)


def whitebox_features(
    access: WhiteBoxAccess, data: Labeled, num_classes: int, order_free: bool = True
) -> list[torch.Tensor]:
    """Black-box groups, with the gradient norm added to the second, plus one-hot label and gradient
    (``order_free``: each row's ``TOP_UNITS`` largest magnitudes, sorted; else the raw matrix)."""
    posterior, extra = blackbox_features(access, data)
    grads = head_gradients(access.model, data.images, data.labels)
    norms = grads.flatten(1).norm(dim=1, keepdim=True).log1p()
    onehot = F.one_hot(data.labels, num_classes).float()
    if order_free:
        grads = grads.abs().sort(dim=2, descending=True).values[:, :, :TOP_UNITS]
    return [posterior, torch.cat([extra, norms], dim=1), onehot, grads.flatten(1)]


def gradient_order_free(ctx: AttackContext) -> bool:
    """Whether the gradient must be unit-order free: when the attack trains on another network."""
    return ctx.threat_model.knowledge != "partial"


class GradientBranch(nn.Module):
    """Small conv net over the flattened (classes x embedding) gradient matrix, to 64 features."""

    def __init__(self, classes: int, embedding: int, width: int = 16) -> None:
        super().__init__()
        self.shape = (1, classes, embedding)
        stride = max(1, embedding // 32)
        self.net = nn.Sequential(
            nn.Conv2d(1, width, kernel_size=(classes, stride), stride=(1, stride)),
            nn.ReLU(),
            nn.Flatten(),
            nn.LazyLinear(64),
            nn.ReLU(),
        )
        self.net(torch.zeros(1, *self.shape))  # materialise the lazy layer

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        return self.net(flat.view(-1, *self.shape))


@dataclass(frozen=True, kw_only=True)
class AttackModelSettings:
    """The learned attack model's recipe (Adam): chosen on attacker data by scripts/tune_attacks.py."""

    epochs: int = setting(min=1, example=60)
    lr: float = setting(min=0, min_exclusive=True, example=1e-3)
    batch_size: int = setting(64, min=1)


@ATTACKS.register("membership")
class MembershipInference(Attack):
    """MemInf (B,S), (B,P), (W,S), (W,P): an attack model on posterior (and gradient) features."""

    family = "membership"
    threat_models = ("blackbox_shadow", "blackbox_partial", "whitebox_shadow", "whitebox_partial")
    Settings = AttackModelSettings

    def features(self, access: BlackBoxAccess, data: Labeled, ctx: AttackContext) -> list[torch.Tensor]:
        if ctx.threat_model.access == "whitebox":
            return whitebox_features(access, data, ctx.num_classes, gradient_order_free(ctx))
        return blackbox_features(access, data)

    def run(self, ctx: AttackContext) -> VariantMetrics:
        a_in, a_out = balanced(ctx.knowledge.members, ctx.knowledge.nonmembers)
        n = len(a_in)
        train_groups = [
            torch.cat(pair)
            for pair in zip(self.features(ctx.reference, a_in, ctx), self.features(ctx.reference, a_out, ctx))
        ]
        train_labels = torch.cat([torch.ones(n), torch.zeros(n)])
        s = ctx.settings
        custom = None
        if ctx.threat_model.access == "whitebox":
            model = ctx.target.model
            units = min(TOP_UNITS, model.embedding_dim) if gradient_order_free(ctx) else model.embedding_dim
            custom = {3: lambda: GradientBranch(model.num_classes, units)}
        fitted = fit_attack_model(train_groups, train_labels, s.epochs, s.lr, s.batch_size, ctx.seed, custom)
        e_in, e_out = balanced(ctx.evaluation.members, ctx.evaluation.nonmembers)
        m = len(e_in)
        eval_groups = [
            torch.cat(pair) for pair in zip(self.features(ctx.target, e_in, ctx), self.features(ctx.target, e_out, ctx))
        ]
        labels = torch.cat([torch.ones(m), torch.zeros(m)]).numpy()
        scores = fitted.member_scores(eval_groups).numpy()
        metrics = membership_metrics(labels, scores, (scores > 0.5).astype(int))
        scored = Labeled.concat([e_in, e_out])
        save_scores(ctx.out_dir / "scores.parquet", {"": (labels, scores)}, scored)
        save_exposed(ctx.out_dir, {"": (labels, scores)}, scored)
        metrics["attack_train_loss"] = fitted.losses[-1]
        return {"": metrics}
