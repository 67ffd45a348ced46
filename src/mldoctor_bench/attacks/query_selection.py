"""Which of the attacker's pool images a model thief sends to the target, in what order.

A strategy returns an order over the pool: the queries at budget ``b`` are its first ``b`` entries,
so one order gives a whole budget curve (:mod:`.stealing_budget` trains a surrogate on each prefix).

- ``random``: a uniformly random order (Knockoff Nets' random strategy, Orekondy, Schiele and Fritz,
  CVPR 2019; ML-Doctor's ModSteal queries the same way).
- ``knockoff_adaptive``: Knockoff Nets' adaptive strategy: a gradient bandit over the pool's classes
  (its actions), one query at a time, with a knockoff model updated on each answer by one SGD step and
  the paper's "all" reward, the mean of the certainty, diversity and loss rewards, each standardised
  by its running mean and variance (as ART's ``KnockoffNets`` computes it). A class's image is drawn
  without replacement (a repeated query teaches nothing); an exhausted class leaves the bandit.
- ``activethief_uncertainty`` / ``activethief_kcenter``: ActiveThief (Pal et al., AAAI 2020): rounds
  that end at the budgets; the first round is random, each later one picks the next queries with the
  surrogate trained on the answers so far: the highest entropy of its prediction (uncertainty), or
  greedy k-center in the space of its probability vectors (the point farthest from every query
  so far, then the next). The caller trains the surrogate between rounds (``fit``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mldoctor_bench.attacks.signals import entropy
from mldoctor_bench.inference import model_inputs, predict_logits

STRATEGIES = ("random", "knockoff_adaptive", "activethief_uncertainty", "activethief_kcenter")
Fit = Callable[[torch.Tensor], nn.Module]  # the pool rows queried so far -> the surrogate trained on them


def random_order(n: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random order of ``range(n)``."""
    return torch.randperm(n, generator=generator)


class RewardAll:
    """Knockoff Nets' "all" reward: certainty (the margin of the target's top two probabilities),
    diversity (how far the answer exceeds the running mean answer) and the knockoff's loss on the
    answer, each standardised by its running mean and variance, then averaged; on the first query,
    each clipped to [0, 1]."""

    def __init__(self, classes: int) -> None:
        self.n, self.mean_answer = 0, torch.zeros(classes, dtype=torch.float64)
        self.mean, self.var = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)

    def components(self, answer: torch.Tensor, knockoff_probs: torch.Tensor) -> torch.Tensor:
        """Certainty, diversity and loss of one answer (the running mean answer updated first)."""
        self.n += 1
        top2 = answer.topk(2).values
        self.mean_answer += (answer - self.mean_answer) / self.n
        cert = top2[0] - top2[1]
        div = (answer - self.mean_answer).clamp(min=0).sum()
        loss = -(answer * knockoff_probs.clamp(min=1e-12).log()).sum()
        return torch.stack([cert, div, loss]).double()

    def __call__(self, answer: torch.Tensor, knockoff_probs: torch.Tensor) -> float:
        rewards = self.components(answer, knockoff_probs)
        self.mean += (rewards - self.mean) / self.n
        self.var += ((rewards - self.mean) ** 2 - self.var) / self.n
        if self.n == 1:
            return float(rewards.clamp(0, 1).mean())
        return float(((rewards - self.mean) / self.var.sqrt().clamp(min=1e-12)).mean())


def knockoff_adaptive_order(
    images: torch.Tensor,
    actions: torch.Tensor,
    budget: int,
    answers: torch.Tensor,
    knockoff: nn.Module,
    generator: torch.Generator,
    lr: float = 0.01,
    hard: bool = False,
) -> torch.Tensor:
    """The first ``budget`` queries of Knockoff Nets' adaptive strategy over ``images`` whose classes
    (the bandit's arms) are ``actions``; ``knockoff`` is trained online, one SGD step per answer.
    ``answers`` holds the target's probability rows (one-hot for labels) of the pool, looked up, not
    queried: the strategy reads only the rows it has chosen. ``hard``: the knockoff trains on each
    answer's argmax, as the surrogate does then, instead of the probabilities."""
    arms = sorted(int(a) for a in actions.unique())
    left = {}  # each arm's images, in the random order they are drawn
    for a in arms:
        rows = (actions == a).nonzero().flatten()
        left[a] = rows[torch.randperm(len(rows), generator=generator)]
    taken = {a: 0 for a in arms}
    h, pulls = torch.zeros(len(arms), dtype=torch.float64), torch.zeros(len(arms))
    reward_of, avg_reward, order = RewardAll(answers.shape[1]), 0.0, []
    optimiser = torch.optim.SGD(knockoff.parameters(), lr=lr, momentum=0.9)
    for step in range(1, min(budget, len(images)) + 1):
        open_arms = torch.tensor([taken[a] < len(left[a]) for a in arms])
        probs = torch.softmax(h.masked_fill(~open_arms, float("-inf")), 0)
        arm = int(torch.multinomial(probs.float(), 1, generator=generator))
        index = int(left[arms[arm]][taken[arms[arm]]])
        taken[arms[arm]] += 1
        order.append(index)
        target_probs = answers[index : index + 1].float()
        knockoff.eval()  # one image a step: batch norm keeps its running statistics (a 1x1 map would fail)
        optimiser.zero_grad()
        wanted = F.one_hot(target_probs.argmax(1), target_probs.shape[1]).float() if hard else target_probs
        loss = -(wanted * F.log_softmax(knockoff(model_inputs(images[index : index + 1])), 1)).sum()
        loss.backward()
        optimiser.step()
        knockoff_probs = torch.softmax(predict_logits(knockoff, images[index : index + 1]), 1)[0].double()
        reward = reward_of(target_probs[0].double(), knockoff_probs)
        avg_reward += (reward - avg_reward) / step
        pulls[arm] += 1
        # gradient bandit (Sutton and Barto, section 2.8), the step size 1 / pulls of the arm, as ART's
        step_size = (reward - avg_reward) / pulls[arm]
        h -= step_size * probs.double()
        h[arm] += step_size
    return torch.tensor(order, dtype=torch.int64)


def entropy_scores(surrogate: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The entropy of the surrogate's prediction on each image (higher: less certain)."""
    return entropy(F.log_softmax(predict_logits(surrogate, images).double(), 1))


def k_center(features: torch.Tensor, chosen: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy k-center: ``k`` rows of ``features`` not in ``chosen``, each the farthest (Euclidean) from
    every row chosen so far (Sener and Savarese, ICLR 2018; ActiveThief's k-center)."""
    nearest = (
        torch.cdist(features, features[chosen]).min(1).values
        if len(chosen)
        else torch.full((len(features),), float("inf"), dtype=features.dtype)
    )
    nearest[chosen] = -1.0
    picked = []
    for _ in range(k):
        i = int(nearest.argmax())
        picked.append(i)
        nearest = torch.minimum(nearest, (features - features[i]).norm(dim=1))
        nearest[i] = -1.0
    return torch.tensor(picked, dtype=torch.int64)


def activethief_order(
    images: torch.Tensor, budgets: list[int], kind: str, fit: Fit, generator: torch.Generator
) -> torch.Tensor:
    """ActiveThief's queries up to ``max(budgets)``: a random first round of ``budgets[0]``, then each
    round up to the next budget chosen by ``kind`` (``uncertainty`` or ``kcenter``) with the surrogate
    ``fit`` returns for the queries so far."""
    order = random_order(len(images), generator)[: budgets[0]]
    for done, goal in zip(budgets, budgets[1:]):
        surrogate = fit(order)
        rest = torch.ones(len(images), dtype=torch.bool)
        rest[order] = False
        pool = rest.nonzero().flatten()
        if kind == "uncertainty":
            picked = pool[entropy_scores(surrogate, images[pool]).argsort(descending=True, stable=True)[: goal - done]]
        else:
            probs = torch.softmax(predict_logits(surrogate, images).double(), 1)
            picked = k_center(probs, order, goal - done)
        order = torch.cat([order, picked])
    return order
