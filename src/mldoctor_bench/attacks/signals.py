"""Per-example membership signals computed from released log-posteriors, in float64 log space.

Every function takes log-probabilities ``(N, classes)`` (``-inf`` allowed where a release says 0)
and clamps them at :data:`LOG_FLOOR`. Quantities near 1 are never formed as ``1 - p``: the
probability of "anything but class i" is ``log(1 - p_i) = logsumexp_{j != i} log p_j``, which keeps
its resolution where ``p_i`` rounds to 1 (docs/attacks.md).
"""

from __future__ import annotations

import math

import torch

LOG_FLOOR = -100.0  # released probabilities of exactly 0 (rounding, labels-only) map here
LOG_HALF = math.log(0.5)


def log_complements(log_probs: torch.Tensor) -> torch.Tensor:
    """``log(1 - p_i)`` for every class: ``log1p(-p_i)`` where ``p_i < 1/2``, else the log-sum of
    the other classes' probabilities (exact where ``p_i`` is near 1)."""
    lp = log_probs.clamp_min(LOG_FLOOR)
    k = lp.shape[1]
    eye = torch.eye(k, dtype=torch.bool, device=lp.device)
    others = lp.unsqueeze(1).expand(-1, k, -1).masked_fill(eye, float("-inf"))
    rest = torch.logsumexp(others, dim=2).clamp_min(LOG_FLOOR)
    return torch.where(lp < LOG_HALF, torch.log1p(-lp.exp()), rest)


def precise_log_probs(log_probs: torch.Tensor) -> torch.Tensor:
    """``log p_i``, taken as ``log1p(-(1 - p_i))`` where ``p_i > 1/2`` so that it does not round to 0."""
    lp = log_probs.clamp_min(LOG_FLOOR)
    comp = log_complements(lp)
    return torch.where(lp > LOG_HALF, torch.log1p(-comp.exp()), lp)


def loss_and_confidence(log_probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example loss ``-log p_y`` and logit-scaled confidence ``log p_y - log(1 - p_y)``."""
    lp = log_probs.clamp_min(LOG_FLOOR)
    log_py = lp.gather(1, labels.view(-1, 1)).squeeze(1)
    others = lp.scatter(1, labels.view(-1, 1), float("-inf"))
    log_rest = torch.logsumexp(others, dim=1).clamp_min(LOG_FLOOR)
    return -log_py, log_py - log_rest


def entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy ``-sum_i p_i log p_i`` of each posterior (nats)."""
    lp = precise_log_probs(log_probs)
    return -(lp.exp() * lp).sum(1)


def modified_entropy(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Song & Mittal's label-aware entropy ``-(1-p_y) log p_y - sum_{i != y} p_i log(1-p_i)``.

    It is monotone decreasing in ``p_y`` and increasing in every wrong-class ``p_i``, so a correct,
    confident prediction scores low and a confident wrong one scores high (unlike plain entropy).
    """
    lp = precise_log_probs(log_probs)
    comp = log_complements(log_probs)
    is_y = torch.zeros_like(lp, dtype=torch.bool).scatter(1, labels.view(-1, 1), True)
    terms = torch.where(is_y, comp.exp() * lp, lp.exp() * comp)
    return -terms.sum(1)
