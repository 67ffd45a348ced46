"""The learned attack classifier shared by membership attacks: MLP branches, concatenated, MLP head,
and the training loop every learned attack model uses (:func:`fit_network`).

Features are standardised with statistics of the attacker's own training features; training zeroes
gradients every step (the original never did) and keeps its loss history so tests can check it
learns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def branch(in_dim: int, out_dim: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, 128), nn.ReLU(), nn.Linear(128, out_dim), nn.ReLU())


class BranchedAttackNet(nn.Module):
    """One MLP branch per feature group (to 64 each), concatenated, then an MLP head to 2 classes.

    ``custom`` maps a group index to a factory of its branch (e.g. a conv net for gradients).
    """

    def __init__(self, dims: list[int], custom: dict[int, Callable[[], nn.Module]] | None = None) -> None:
        super().__init__()
        custom = custom or {}
        self.branches = nn.ModuleList([custom[i]() if i in custom else branch(d) for i, d in enumerate(dims)])
        self.head = nn.Sequential(nn.Linear(64 * len(dims), 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, groups: list[torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([b(g) for b, g in zip(self.branches, groups)], dim=1))


WIDE = 64  # groups wider than this share one scale (per-feature scaling would amplify noise)


@dataclass
class Standardiser:
    """Mean/std from training features, applied to any later features: per feature for narrow
    groups, one scale per group for wide ones (a gradient matrix keeps its shape)."""

    means: list[torch.Tensor] = field(default_factory=list)
    stds: list[torch.Tensor] = field(default_factory=list)

    def fit(self, groups: list[torch.Tensor]) -> "Standardiser":
        self.means, self.stds = [], []
        for g in groups:
            if g.shape[1] > WIDE:
                self.means.append(torch.zeros(1, 1))
                self.stds.append(g.std().clamp_min(1e-12).view(1, 1))
            else:
                self.means.append(g.mean(0, keepdim=True))
                self.stds.append(g.std(0, keepdim=True).clamp_min(1e-6))
        return self

    def __call__(self, groups: list[torch.Tensor]) -> list[torch.Tensor]:
        return [(g - m) / s for g, m, s in zip(groups, self.means, self.stds)]


@dataclass
class FittedAttack:
    net: nn.Module
    scale: Standardiser
    losses: list[float]

    @torch.no_grad()
    def probabilities(self, groups: list[torch.Tensor]) -> torch.Tensor:
        """Class probabilities ``(N, classes)`` of the attack network for feature ``groups``."""
        self.net.eval()
        return F.softmax(self.net(self.scale([g.float() for g in groups])), dim=1)

    def member_scores(self, groups: list[torch.Tensor]) -> torch.Tensor:
        """Probability of "member" for each example."""
        return self.probabilities(groups)[:, 1]


def fit_network(
    build: Callable[[], nn.Module],
    groups: list[torch.Tensor],
    labels: torch.Tensor,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> FittedAttack:
    """Train ``build()`` (a module taking a list of feature groups) to predict class ``labels``.

    Adam on cross-entropy over shuffled mini-batches of the standardised groups; initial weights
    and batch order come from ``seed``. Keeps the mean loss of each epoch.
    """
    groups = [g.float() for g in groups]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build()
    scale = Standardiser().fit(groups)
    x = scale(groups)
    y = labels.long()
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for start in range(0, len(y), batch_size):
            b = order[start : start + batch_size]
            loss = F.cross_entropy(net([g[b] for g in x]), y[b])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(b)
        losses.append(total / len(y))
    return FittedAttack(net.eval(), scale, losses)


def fit_attack_model(
    groups: list[torch.Tensor],
    is_member: torch.Tensor,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    custom: dict[int, Callable[[], nn.Module]] | None = None,
) -> FittedAttack:
    """Train a :class:`BranchedAttackNet` on feature ``groups`` (float32) to predict ``is_member``."""
    dims = [g.shape[1] for g in groups]
    return fit_network(lambda: BranchedAttackNet(dims, custom), groups, is_member, epochs, lr, batch_size, seed)
