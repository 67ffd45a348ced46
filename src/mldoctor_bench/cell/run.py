"""Running the attacks of one prepared cell: what each attack receives under each threat model, the
models the attacks declare they will need trained ahead and together, and each attack's rows (its
metrics, or a skipped or failed row with the reason)."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Optional

from mldoctor_bench import ui
from mldoctor_bench.attacks import ATTACKS, AttackContext, AttackSkipped
from mldoctor_bench.cell.models import SHADOW_ROLE, ModelProvider, derive_seed
from mldoctor_bench.cell.plan import Plan
from mldoctor_bench.cell.targets import Obtained, Selection, Target
from mldoctor_bench.data import ImageData, Splits
from mldoctor_bench.defense_catalog import OUTPUT
from mldoctor_bench.knowledge import Labeled, attacker_knowledge
from mldoctor_bench.models import NoEmbedding
from mldoctor_bench.results import FAILED, SKIPPED, TARGET, UNSUPPORTED, Cell, metric_rows
from mldoctor_bench.store import StoredModel
from mldoctor_bench.threat_models import BLACKBOX, SHADOW, THREAT_MODELS, WHITEBOX, WhiteBoxAccess, access_for
from mldoctor_bench.timings import ASKED, ATTACK, Timings
from mldoctor_bench.training import configure_backends

Pair = tuple[str, str]  # (attack, threat model)


@dataclass(frozen=True)
class CellRun:
    """A cell whose target (and the attacker's shadow model) are ready: it runs attacks."""

    plan: Plan
    data: ImageData
    splits: Splits
    target: StoredModel
    shadow: Optional[StoredModel]
    models: ModelProvider
    attacked: Target
    training_size: int
    bars: ui.Bars
    timings: Timings
    contexts: dict[Pair, AttackContext] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> Cell:
        p = self.plan
        return Cell(p.dataset, p.arch, p.defense.name, p.seed)

    def attacks(self, only: Optional[set[Pair]] = None) -> list[dict]:
        """Every selected attack x threat model (or the pairs in ``only``), their models trained ahead;
        the pairs the target leaves out (an owner's budget: :meth:`Target.leave_out`) are skipped."""
        p = self.plan
        pairs = [(a, t) for a in p.attacks for t in p.threat_models if only is None or (a, t) in only]
        runnable = [
            (a, t) for a, t in pairs if t in ATTACKS.get(a).threat_models and not self.attacked.unavailable(a, t)
        ]
        wanted = self.models_wanted(runnable)
        left_out = self.attacked.leave_out(Selection(wanted, self.models, self.shadow))
        self.train_ahead([r for pair, requests in wanted.items() if pair not in left_out for r in requests])
        return [row for a, t in pairs for row in self.run_attack(a, t, left_out.get((a, t), ""))]

    def models_wanted(self, pairs: list[Pair]) -> dict[Pair, list]:
        """The models each pair's attack says it will need (:meth:`Attack.models_wanted`); a pair
        whose attack cannot say is left out (it trains its own, and reports any error, when it runs)."""
        wanted = {}
        for attack_name, tm_name in pairs:
            try:
                wanted[(attack_name, tm_name)] = ATTACKS.get(attack_name)().models_wanted(
                    self.context(attack_name, tm_name)
                )
            except Exception:  # run_attack records the same error against the attack
                continue
        return wanted

    def train_ahead(self, requests: list) -> None:
        """Train the models the attacks will need together, where they can be; each attack then finds
        its own trained. Models that fail to train here are left to their attack, which reports the
        failure against its own rows when it runs."""
        if len(requests) < 2:
            return
        try:
            self.models.prepare(requests)
        except Exception as exc:  # one attack's model must not stop the others
            ui.console.print(
                f"[yellow]training the attacks' models ahead failed ({exc!r}); each attack "
                "trains its own when it runs[/]"
            )

    def context(self, attack_name: str, tm_name: str) -> AttackContext:
        """What attack ``attack_name`` receives under threat model ``tm_name`` (made once per pair)."""
        if (attack_name, tm_name) not in self.contexts:
            self.contexts[(attack_name, tm_name)] = self.new_context(attack_name, tm_name)
        return self.contexts[(attack_name, tm_name)]

    def new_context(self, attack_name: str, tm_name: str) -> AttackContext:
        p, tm = self.plan, THREAT_MODELS.get(tm_name)
        out_dir = p.files.attack_dir(attack_name, tm_name)
        out_dir.mkdir(parents=True, exist_ok=True)
        transform = p.defense.output_transform()
        # An informed attacker passes its shadow's posteriors through the same release transform.
        shadow_transform = transform if p.attacker.knows_defense and tm.access == BLACKBOX else None
        shadow = WhiteBoxAccess(self.shadow.model, p.device, output_transform=shadow_transform) if self.shadow else None
        knowledge, evaluation = attacker_knowledge(tm, self.data, self.splits, shadow)
        heldout = self.splits.pool("heldout")
        return AttackContext(
            threat_model=tm,
            target=access_for(tm, self.target.model, p.device, transform),
            knowledge=knowledge,
            evaluation=evaluation,
            settings=p.settings[attack_name],
            out_dir=out_dir,
            device=p.device,
            seed=derive_seed(p.seed, f"{attack_name}/{tm_name}"),
            cell_seed=p.seed,
            num_classes=self.data.num_classes,
            num_attribute_classes=self.data.num_attribute_classes,
            target_arch=p.arch,
            heldout=Labeled.take(self.data, heldout) if len(heldout) else None,
            models=self.models.for_attack(),
            progress=self.bars,
            training_size=self.training_size,
            control=WhiteBoxAccess(self.shadow.model, p.device) if self.shadow else None,
        )

    def run_attack(self, attack_name: str, tm_name: str, left_out: str = "") -> list[dict]:
        """Rows of one attack under one threat model: its metrics, or a skipped/failed row
        (``left_out``: why the target left it out)."""
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
        reason = self.attacked.unavailable(attack_name, tm_name) or left_out
        if reason:
            return rows("", {}, SKIPPED, reason)
        ctx = self.context(attack_name, tm_name)
        advance = self.bars(f"attack {attack_name} {ctx.threat_model.short}", 1)
        try:
            with self.timings.phase(f"attack {attack_name} {ctx.threat_model.short}", ATTACK) as phase:
                phase.info[ASKED] = ctx.models.asked  # the models it uses, as it asks for them
                if attack.uses_shadow_model and ctx.threat_model.knowledge == SHADOW and self.shadow is not None:
                    ctx.models.record(SHADOW_ROLE)
                results = attack.run(ctx)
        except (AttackSkipped, NoEmbedding) as exc:  # it cannot apply to this cell: a skipped row, the reason
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
        target,
        target.training_size(splits),
        bars,
        timings,
    )
    return run, metric_rows(run.key, TARGET, "none", "", obtained.utility, family=TARGET)


def provider(
    plan: Plan, data: ImageData, splits: Splits, bars: ui.Bars, timings: Timings, architectures: Optional[dict] = None
) -> ModelProvider:
    """The cell's model provider: its recipe, defense and store."""
    configure_backends(plan.recipe, plan.device)
    return ModelProvider(
        data=data,
        splits=splits,
        seed=plan.seed,
        arch=plan.arch,
        recipe=plan.recipe,
        defense=plan.defense,
        knows_defense=plan.attacker.knows_defense,
        device=plan.device,
        store=plan.store,
        timings=timings,
        bars=bars,
        architectures=architectures,
    )
