"""Model stealing as budget curves: how much of the target a thief copies as a function of the number
of queries, for each query strategy (:mod:`.query_selection`: random, Knockoff Nets' adaptive bandit,
ActiveThief's uncertainty and k-center rounds).

The pool is the attacker's images (as :mod:`.stealing` queries them), or an image folder
(``pool=DIR``, torchvision's ImageFolder layout: an out-of-distribution pool as Knockoff Nets use,
its subfolders the adaptive bandit's arms). At every budget ``b`` of ``budgets`` a surrogate of the
target's architecture and recipe trains on the target's answers to a strategy's first ``b`` queries
(soft labels where posteriors are released, unless ``soft_labels=false``; hard labels otherwise), and
is scored on target-test:

- ``agreement`` and ``accuracy`` (Orekondy et al. and Pal et al. report both against the budget);
- ``transfer_rate``: the share of PGD examples crafted on the surrogate that the target misclassifies
  (:mod:`.transfer`, fidelity beyond agreement), beside ``baseline_transfer_rate``, the same attack
  crafted on the no-query model;
- against that no-query model (the target's architecture and recipe on the attacker's labelled images,
  :mod:`.stealing`'s baseline): ``baseline_agreement``, ``agreement_over_baseline`` and the paired
  counts of the stealing verdict, which reads the largest budget run (docs/attacks.md).

Variants are ``<strategy>@<budget>``; the ``queries`` metric holds the budget. Budgets above the pool's
size become the pool's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from mldoctor_bench.attacks import query_selection as qs
from mldoctor_bench.attacks.auxiliary import training_data
from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, ModelRequest, VariantMetrics
from mldoctor_bench.attacks.stealing import against_baseline, query_answers, score_surrogate
from mldoctor_bench.attacks.transfer import transfer
from mldoctor_bench.data import folder
from mldoctor_bench.data import images as image_io
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.settings import setting

BASELINE = "stealing-baseline"  # the no-query model, shared with :mod:`.stealing` at its full budget


@dataclass(frozen=True, kw_only=True)
class StealingBudgetSettings:
    """Strategies, budgets, the pool, the surrogate's epochs and the transfer attack."""

    strategies: list[str] = setting(list(qs.STRATEGIES), choices=qs.STRATEGIES, example="[random,knockoff_adaptive]")
    budgets: list[int] = setting([100, 250, 500, 1000], min=1, example="[100,1000]")
    epochs: int = setting(min=1, example=50)
    pool: Optional[str] = setting(None, example="/data/pool")
    # false: train on the argmax of released posteriors (as ART's KnockoffNets does by default)
    soft_labels: bool = setting(True)
    pgd_epsilon: int = setting(32, min=1, max=255)  # grey levels of 255
    pgd_steps: int = setting(10, min=1)
    transfer_examples: int = setting(500, min=1)


def load_pool_folder(root: Path, like: torch.Tensor) -> Labeled:
    """The images of ``root`` (ImageFolder layout), converted and resized to the shape of ``like``'s
    rows, labelled by subfolder."""
    classes = folder.find_classes(root)
    samples = folder.list_images(root, classes)
    channels, size = int(like.shape[1]), int(like.shape[-1])
    try:
        pixels = image_io.decode_files(
            [root / f for f, _ in samples], size, "pool", lambda label, total: lambda n=1: None, folder.MODES[channels]
        )
    except image_io.UnreadableImage as exc:
        raise folder.FolderError(f"attack.stealing_budget.pool: {exc}; remove or replace the file") from None
    return Labeled(pixels, torch.tensor([label for _, label in samples], dtype=torch.int64))


@ATTACKS.register("stealing_budget")
class StealingBudget(Attack):
    """Budget curves of random, Knockoff Nets (adaptive) and ActiveThief queries, (B,S), (B,P), labels."""

    family = "stealing"
    threat_models = ("blackbox_shadow", "blackbox_partial", "blackbox_label_only")
    Settings = StealingBudgetSettings
    uses_shadow_model = False

    def check_settings(self, settings: StealingBudgetSettings) -> None:
        if list(settings.budgets) != sorted(set(settings.budgets)):
            raise ValueError(f"budgets={list(settings.budgets)}: give them in increasing order, each once")
        if len(set(settings.strategies)) != len(settings.strategies):
            raise ValueError(f"strategies={list(settings.strategies)}: name each strategy once")
        if settings.pool is not None:
            root = Path(settings.pool).expanduser()
            if not root.is_dir():
                raise ValueError(f"pool={settings.pool} is not a folder; give a folder of {folder.LAYOUT}")
            folder.find_classes(root)  # raises, naming the fix, on a folder without class subfolders

    @staticmethod
    def pool(ctx: AttackContext) -> Labeled:
        if ctx.settings.pool is None:
            return training_data(ctx)
        return load_pool_folder(Path(ctx.settings.pool).expanduser(), ctx.evaluation.target_test.images)

    @staticmethod
    def budgets(ctx: AttackContext, pool_size: int) -> list[int]:
        return sorted({min(b, pool_size) for b in ctx.settings.budgets})

    def baseline(self, ctx: AttackContext) -> ModelRequest:
        data = training_data(ctx)
        return ModelRequest(BASELINE, data.images, data.labels, epochs=ctx.settings.epochs)

    def models_wanted(self, ctx: AttackContext) -> list[ModelRequest]:
        return [self.baseline(ctx)]

    def run(self, ctx: AttackContext) -> VariantMetrics:
        pool = self.pool(ctx)
        budgets = self.budgets(ctx, len(pool))
        kind, answers = query_answers(ctx.target, pool.images)
        probs = answers if kind == "posteriors" else torch.eye(ctx.num_classes)[answers]
        if not ctx.settings.soft_labels and kind == "posteriors":
            kind, answers = "argmax", answers.argmax(1)

        def request(rows: torch.Tensor) -> ModelRequest:  # a prefix of queries: the store trains it once
            role = f"steal-prefix-{kind}-{ctx.threat_model.name}-{len(rows)}"
            return ModelRequest(role, pool.images[rows], answers[rows], epochs=ctx.settings.epochs)

        def fit(rows: torch.Tensor) -> torch.nn.Module:
            return ctx.models.prepare([request(rows)])[0]

        orders = {s: self.order(ctx, s, pool, probs, budgets, fit) for s in ctx.settings.strategies}
        wanted = [(s, b) for s in orders for b in budgets]
        surrogates = ctx.models.prepare([request(orders[s][:b]) for s, b in wanted] + [self.baseline(ctx)])
        return self.scores(ctx, dict(zip(wanted, surrogates)), surrogates[-1])

    @staticmethod
    def order(ctx, strategy: str, pool: Labeled, probs: torch.Tensor, budgets: list[int], fit) -> torch.Tensor:
        """The strategy's queries up to the largest budget (the same seed for every strategy: random's
        first round is ActiveThief's too)."""
        generator = torch.Generator().manual_seed(ctx.seed)
        if strategy == "random":
            return qs.random_order(len(pool), generator)[: budgets[-1]]
        if strategy == "knockoff_adaptive":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.seed)
                image = pool.images.shape
                knockoff = ctx.models.untrained(ctx.target_arch, image[1], ctx.num_classes, image[-1])
            hard = not ctx.settings.soft_labels
            return qs.knockoff_adaptive_order(
                pool.images, pool.labels, budgets[-1], probs, knockoff, generator, hard=hard
            )
        return qs.activethief_order(pool.images, budgets, strategy.split("_", 1)[1], fit, generator)

    def scores(self, ctx: AttackContext, surrogates: dict, baseline: torch.nn.Module) -> VariantMetrics:
        """Each surrogate's row: agreement and accuracy, the transfer rates, against the no-query model."""
        test = ctx.evaluation.target_test
        target_labels = ctx.target.labels(test.images)
        target_right = target_labels == test.labels
        base, base_agrees = score_surrogate(baseline, target_labels, test)
        chosen = target_right.nonzero().flatten()[: ctx.settings.transfer_examples]
        s = ctx.settings
        craft = (ctx.target.labels, test.images[chosen], test.labels[chosen], s.pgd_epsilon, s.pgd_steps)
        base_transfer, _ = transfer(baseline, *craft)
        advance = ctx.progress("stealing budget curves", len(surrogates))
        out = {}
        for (strategy, budget), surrogate in surrogates.items():
            metrics, agrees = score_surrogate(surrogate, target_labels, test)
            rate, fooled = transfer(surrogate, *craft)
            out[f"{strategy}@{budget}"] = {
                **metrics,
                **against_baseline(metrics, agrees, base, base_agrees, target_right),
                "transfer_rate": rate,
                "surrogate_fooled": fooled,
                "baseline_transfer_rate": base_transfer,
                "transfer_over_baseline": rate - base_transfer,
                "transfer_examples": float(len(chosen)),
                "queries": float(budget),
                "n_test": float(len(test)),
            }
            advance()
        return out
