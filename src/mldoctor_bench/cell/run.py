"""Running the attacks of one prepared cell: what each attack receives under each threat model, the
models the attacks declare they will need trained ahead and together, and each attack's rows (its
metrics, or a skipped or failed row with the reason)."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable, Optional

from omegaconf import OmegaConf

from mldoctor_bench import ui
from mldoctor_bench.attacks import ATTACKS, AttackContext, AttackSkipped
from mldoctor_bench.cell.budget import over_budget
from mldoctor_bench.cell.models import ModelProvider, derive_seed
from mldoctor_bench.cell.plan import Plan
from mldoctor_bench.cell.targets import Obtained, Target
from mldoctor_bench.data import ImageData, Splits
from mldoctor_bench.defenses.base import OUTPUT
from mldoctor_bench.knowledge import Labeled, attacker_knowledge
from mldoctor_bench.results import FAILED, SKIPPED, TARGET, UNSUPPORTED, Cell, metric_rows
from mldoctor_bench.store import StoredModel
from mldoctor_bench.threat_models import BLACKBOX, THREAT_MODELS, WHITEBOX, WhiteBoxAccess, access_for
from mldoctor_bench.timings import ATTACK, Timings
from mldoctor_bench.training import Recipe, configure_backends


@dataclass(frozen=True)
class CellRun:
    """A cell whose target (and the attacker's shadow model) are ready: it runs attacks."""

    plan: Plan
    data: ImageData
    splits: Splits
    target: StoredModel
    shadow: Optional[StoredModel]
    models: ModelProvider
    unavailable: Callable[[str, str], Optional[str]]
    training_size: int
    bars: ui.Bars
    timings: Timings

    @property
    def key(self) -> Cell:
        cfg = self.plan.cfg
        return Cell(cfg.dataset.name, cfg.arch.name, cfg.defense.name, int(cfg.seed))

    def attacks(self, only: Optional[set[tuple[str, str]]] = None) -> list[dict]:
        """Every selected attack x threat model (or the pairs in ``only``), their models trained ahead."""
        p = self.plan
        pairs = [(a, t) for a in p.attacks for t in p.threat_models if only is None or (a, t) in only]
        available = [(a, t) for a, t in pairs if not self.unavailable(a, t)]
        over = over_budget(self, available)
        self.train_ahead([pair for pair in available if pair not in over])
        return [row for a, t in pairs for row in self.run_attack(a, t, over.get((a, t), ""))]

    def train_ahead(self, pairs: list[tuple[str, str]]) -> None:
        """Train the models the attacks say they will need (:meth:`Attack.models_wanted`), together
        where they can be; each attack then finds its own trained. An attack that cannot say, or
        whose models fail to train here, is left to train them itself and report any failure
        against its own rows when it runs."""
        requests = []
        for attack_name, tm_name in pairs:
            attack = ATTACKS.get(attack_name)()
            if tm_name not in attack.threat_models:
                continue
            try:
                requests += attack.models_wanted(self.context(attack_name, tm_name))
            except Exception:  # noqa: BLE001 - run_attack records the same error against the attack
                continue
        if len(requests) > 1:
            try:
                self.models.prepare(requests)
            except Exception as exc:  # noqa: BLE001 - one attack's model must not stop the others
                ui.console.print(
                    f"[yellow]training the attacks' models ahead failed ({exc!r}); each attack "
                    "trains its own when it runs[/]"
                )

    def context(self, attack_name: str, tm_name: str) -> AttackContext:
        """What attack ``attack_name`` receives under threat model ``tm_name``."""
        p, tm = self.plan, THREAT_MODELS.get(tm_name)
        out_dir = p.files.attack_dir(attack_name, tm_name)
        out_dir.mkdir(parents=True, exist_ok=True)
        transform = p.defense.output_transform()
        # An informed attacker passes its shadow's posteriors through the same release transform.
        shadow_transform = transform if self.models.knows_defense and tm.access == BLACKBOX else None
        shadow = WhiteBoxAccess(self.shadow.model, p.device, output_transform=shadow_transform) if self.shadow else None
        knowledge, evaluation = attacker_knowledge(tm, self.data, self.splits, shadow)
        heldout = self.splits.pool("heldout")
        seed = int(p.cfg.seed)
        return AttackContext(
            threat_model=tm,
            target=access_for(tm, self.target.model, p.device, transform),
            knowledge=knowledge,
            evaluation=evaluation,
            settings=p.settings[attack_name],
            out_dir=out_dir,
            device=p.device,
            seed=derive_seed(seed, f"{attack_name}/{tm_name}"),
            cell_seed=seed,
            num_classes=self.data.num_classes,
            num_attribute_classes=self.data.num_attribute_classes,
            target_arch=str(p.cfg.arch.name),
            heldout=Labeled.take(self.data, heldout) if len(heldout) else None,
            models=self.models,
            progress=self.bars,
            training_size=self.training_size,
            control=WhiteBoxAccess(self.shadow.model, p.device) if self.shadow else None,
        )

    def run_attack(self, attack_name: str, tm_name: str, budget_reason: str = "") -> list[dict]:
        """Rows of one attack under one threat model: its metrics, or a skipped/failed row
        (``budget_reason``: why the attacker's budget leaves it out)."""
        attack, cell = ATTACKS.get(attack_name)(), self.key

        def rows(variant: str, metrics: dict, status: str = "ok", reason: str = "") -> list[dict]:
            return metric_rows(cell, attack_name, tm_name, variant, metrics, status, reason, family=attack.family)

        if tm_name not in attack.threat_models:
            return rows(
                "",
                {},
                SKIPPED,
                f"{attack_name}{UNSUPPORTED}{tm_name}; supported: {', '.join(attack.threat_models)}",
            )
        reason = self.unavailable(attack_name, tm_name) or budget_reason
        if reason:
            return rows("", {}, SKIPPED, reason)
        ctx = self.context(attack_name, tm_name)
        advance = self.bars(f"attack {attack_name} {ctx.threat_model.short}", 1)
        try:
            with self.timings.phase(f"attack {attack_name} {ctx.threat_model.short}", ATTACK):
                results = attack.run(ctx)
        except AttackSkipped as exc:
            advance(1)
            return rows("", {}, SKIPPED, str(exc))
        except Exception as exc:  # one broken attack must not lose the rest of the sweep
            advance(1)
            error = self.plan.files.error(attack_name, tm_name)
            error.write_text(traceback.format_exc())
            ui.console.print(f"[red]{attack_name} {tm_name} failed: {exc!r} (traceback in {error})[/]")
            return rows("", {}, FAILED, f"{type(exc).__name__}: {exc}")
        advance(1)  # not on Ctrl-C: an interrupted attack is reported as stopped early, never done
        note = ""
        if self.plan.defense.kind == OUTPUT and ctx.threat_model.access == WHITEBOX:
            note = f"output-time defense {self.plan.defense.name} does not apply to white-box access"
        return [row for variant, metrics in results.items() for row in rows(variant, metrics, reason=note)]


def prepare(
    plan: Plan, data: ImageData, splits: Splits, target: Target, bars: ui.Bars, timings: Timings
) -> tuple[CellRun, list[dict]]:
    """Save the partition, obtain the target and the shadow model; the prepared cell and the
    target's utility rows."""
    splits.save(plan.files.splits)
    models = provider(plan, data, splits, bars, timings, target.architectures())
    obtained: Obtained = target.obtain(plan, data, splits, models)
    run = CellRun(
        plan,
        data,
        splits,
        obtained.target,
        obtained.shadow,
        models,
        target.unavailable,
        target.training_size(splits),
        bars,
        timings,
    )
    return run, metric_rows(run.key, TARGET, "none", "", obtained.utility, family=TARGET)


def provider(
    plan: Plan, data: ImageData, splits: Splits, bars: ui.Bars, timings: Timings, architectures: Optional[dict] = None
) -> ModelProvider:
    """The cell's model provider: its recipe (made concrete for the device), defense and store."""
    recipe = Recipe.from_config(plan.cfg.train).resolved(plan.device)
    configure_backends(recipe, plan.device)
    return ModelProvider(
        data=data,
        splits=splits,
        seed=int(plan.cfg.seed),
        arch=str(plan.cfg.arch.name),
        recipe=recipe,
        defense=plan.defense,
        knows_defense=bool(OmegaConf.select(plan.cfg, "attacker.knows_defense", default=True)),
        device=plan.device,
        store=plan.store,
        timings=timings,
        bars=bars,
        architectures=architectures,
    )
