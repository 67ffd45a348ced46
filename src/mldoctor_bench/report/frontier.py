"""Membership power per second of compute: for each membership attack series of a setting (dataset,
arch, defense), its TPR at 1% FPR and AUC over seeds against what it cost the attacker beyond the
target, and the series on the Pareto frontier (no other series as cheap or cheaper is as strong or
stronger at 1% FPR, with one of the two strictly).

A series' cost in one cell, read from the cell's ``timings.json``:

- ``models_s``: the ``train_seconds`` of every attacker model the series uses: those its attack asked
  for that serve its variant, as the attack's phase records them (``asked``: each model's role and the
  variants whose scores use it; the attacker's shadow model where the attack uses it under a threat
  model that gives one: :attr:`Attack.uses_shadow_model`). A model trained in a batch with others is
  charged its share of the batch's wall time; one reused from the model store is charged what it cost
  when it was trained, so the figure does not depend on which run trained it first. The target is
  never counted. A cell written before attacks' phases recorded their models has no cost.
- ``attack_s``: the attack phase's own seconds (queries, scoring, an attack model's fit; not the
  models trained inside it), split equally among the variants the phase scored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from mldoctor_bench.report import stats
from mldoctor_bench.report.figures import Drawn, _save, _slug, plt
from mldoctor_bench.threat_catalog import THREAT_MODELS
from mldoctor_bench.timings import ASKED

TPR, AUC = "tpr_at_fpr_0.01", "auc"
SETTING = ["dataset", "arch", "defense", "target_config"]
SERIES = ["attack", "threat_model", "variant", "num_references"]


def model_seconds(timings: dict) -> dict[str, float]:
    """Every model role a cell trained or loaded, with the seconds it cost when it was trained."""
    out = {}
    for phase in timings["phases"]:
        for model in phase.get("info", {}).get("models", []):
            if "train_seconds" in model:
                out[model["role"]] = float(model["train_seconds"])
    return out


def attack_phases(timings: dict) -> dict[str, dict]:
    """Each attack phase by name (``attack membership_lira (B,S)``): its own seconds and the models
    its attack asked for (``None`` where the phase did not record them)."""
    return {
        p["name"]: {"self_s": float(p["self_s"]), "asked": p.get("info", {}).get(ASKED)}
        for p in timings["phases"]
        if p.get("kind") == "attack"
    }


def target_config(cell: Path) -> str:
    """A short hash of what the cell's target was trained with (dataset, arch, defense, recipe, data
    sizes; not the seed): cells of one setting share it, cells of a swept training setting do not."""
    config = OmegaConf.to_container(OmegaConf.load(cell / "config.yaml"), resolve=False)
    data = {k: v for k, v in config.get("data", {}).items() if k not in ("root", "cache_dir", "download")}
    what = {k: config.get(k) for k in ("dataset", "arch", "defense", "train")} | {"data": data}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:8]


def roles_used(asked: list[dict] | None, variant: str) -> list[str] | None:
    """The roles of the models (of those an attack ``asked`` for) that serve ``variant``; ``None``
    where the attack's phase did not record what it asked for."""
    if asked is None:
        return None
    return [a["role"] for a in asked if a["series"] is None or variant in a["series"]]


def cell_series(cell: Path) -> pd.DataFrame:
    """One row per membership series of a finished cell: its setting, seed, TPR at 1% FPR, AUC and
    cost; empty where the cell has no ``timings.json``."""
    if not (cell / "timings.json").exists() or not (cell / "results.parquet").exists():
        return pd.DataFrame()
    timings = json.loads((cell / "timings.json").read_text())
    table = pd.read_parquet(cell / "results.parquet")
    table = table[(table["status"] == stats.OK) & table["metric"].isin([TPR, AUC, "num_references"])].copy()
    table = table[stats.families(table) == "membership"]
    if table.empty:
        return pd.DataFrame()
    table["target_config"] = target_config(cell) if (cell / "config.yaml").exists() else ""
    keys = SETTING + ["seed", "attack", "threat_model", "variant"]
    wide = table.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()
    wide["num_references"] = wide.get("num_references", pd.Series(0.0, index=wide.index)).fillna(0).astype(int)
    seconds, phases = model_seconds(timings), attack_phases(timings)
    shares = wide.groupby(["attack", "threat_model"])["variant"].transform("count")
    models_s, attack_s = [], []
    for row, share in zip(wide.itertuples(), shares):
        phase = phases.get(f"attack {row.attack} {THREAT_MODELS.get(row.threat_model).short}", {})
        used = roles_used(phase.get("asked"), row.variant)
        models_s.append(np.nan if used is None else sum(seconds.get(r, np.nan) for r in used))
        attack_s.append(phase.get("self_s", np.nan) / share)
    wide["models_s"], wide["attack_s"] = models_s, attack_s
    wide["cost_s"] = wide["models_s"] + wide["attack_s"]
    return wide.dropna(subset=[TPR, "cost_s"])


def pareto(cost: np.ndarray, power: np.ndarray) -> np.ndarray:
    """Booleans: the points no other point dominates (cost as low or lower and power as high or
    higher, one of the two strictly)."""
    cost, power = np.asarray(cost, float), np.asarray(power, float)
    no_worse = (cost[None, :] <= cost[:, None]) & (power[None, :] >= power[:, None])
    better = (cost[None, :] < cost[:, None]) | (power[None, :] > power[:, None])
    return ~(no_worse & better).any(axis=1)


def frontier(series: pd.DataFrame) -> pd.DataFrame:
    """Per setting and series: seeds, mean cost, TPR at 1% FPR and AUC (mean and 95% t-interval over
    seeds), and whether the series is on its setting's Pareto frontier (by the means)."""
    if series.empty:
        return pd.DataFrame()
    series = series.drop_duplicates(SETTING + ["seed"] + SERIES)
    rows = []
    for key, group in series.groupby(SETTING + SERIES, sort=False):
        tpr, auc = stats.t_summary(group[TPR], metric=TPR), stats.t_summary(group[AUC], metric=AUC)
        rows.append(
            dict(
                zip(SETTING + SERIES, key),
                seeds=group["seed"].nunique(),
                models_s=group["models_s"].mean(),
                attack_s=group["attack_s"].mean(),
                cost_s=group["cost_s"].mean(),
                tpr=tpr.mean,
                tpr_low=tpr.ci_low,
                tpr_high=tpr.ci_high,
                auc=auc.mean,
                auc_low=auc.ci_low,
                auc_high=auc.ci_high,
            )
        )
    out = pd.DataFrame(rows)
    out["pareto"] = False
    for _, group in out.groupby(SETTING, sort=False):
        out.loc[group.index, "pareto"] = pareto(group["cost_s"].to_numpy(), group["tpr"].to_numpy())
    return out.sort_values(SETTING + ["cost_s"]).reset_index(drop=True)


def label(row) -> str:
    """A series' short name: ``membership_lira (B,S) online, 16 refs``."""
    name = stats.series_label(row.attack, row.threat_model, row.variant)
    return f"{name}, {row.num_references} refs" if row.num_references else name


def _interval(mean: float, low: float, high: float) -> str:
    return f"{mean:.3f}" if pd.isna(low) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def setting_names(table: pd.DataFrame) -> pd.Series:
    """``dataset/arch/defense``, with the target configuration's hash where two settings share that."""
    names = table["dataset"] + "/" + table["arch"] + "/" + table["defense"]
    shared = table.groupby(names)["target_config"].transform("nunique") > 1
    return names.where(~shared, names + " (target " + table["target_config"] + ")")


def frontier_table(table: pd.DataFrame) -> str:
    """The frontier as Markdown, cheapest first; ``*`` marks the Pareto-optimal series."""
    lines = [
        "| setting | series | seeds | models s | attack s | cost s | TPR at 1% FPR | AUC | Pareto |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | :---: |",
    ]
    for setting, row in zip(setting_names(table), table.itertuples()):
        lines.append(
            f"| {setting} | {label(row)} | {row.seeds} | {row.models_s:.0f} | {row.attack_s:.0f} | {row.cost_s:.0f} "
            f"| {_interval(row.tpr, row.tpr_low, row.tpr_high)} | {_interval(row.auc, row.auc_low, row.auc_high)} "
            f"| {'*' if row.pareto else ''} |"
        )
    return "\n".join(lines)


def frontier_figures(table: pd.DataFrame, fig_dir: Path) -> list[Drawn]:
    """Per setting, TPR at 1% FPR and AUC against cost (log seconds), the frontier joined by a line."""
    drawn = []
    table = table.assign(setting=setting_names(table))
    for setting, group in table.groupby("setting", sort=False):
        title = f"Membership power per second of compute: {setting}"
        if len(group) < 2:
            drawn.append(Drawn(title, None, f"only {len(group)} membership series with a cost"))
            continue
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
        for ax, (metric, name) in zip(axes, [("tpr", "TPR at 1% FPR"), ("auc", "AUC")]):
            err = np.vstack([group[metric] - group[f"{metric}_low"], group[f"{metric}_high"] - group[metric]])
            ax.errorbar(group["cost_s"], group[metric], yerr=np.nan_to_num(err), fmt="none", ecolor="0.6", lw=1)
            best = group[group["pareto"]]
            ax.scatter(group["cost_s"], group[metric], c=np.where(group["pareto"], "C3", "C0"), s=22, zorder=3)
            if metric == "tpr":
                ax.step(best["cost_s"], best[metric], where="post", color="C3", lw=1, label="Pareto frontier")
            ax.scatter([], [], c="C3", s=22, label="Pareto-optimal at 1% FPR")
            ax.legend(loc="lower right", fontsize=8)
            for row in group[group["pareto"]].itertuples():  # the rest are in the table
                ax.annotate(
                    label(row),
                    (row.cost_s, getattr(row, metric)),
                    fontsize=6,
                    xytext=(3, 2),
                    textcoords="offset points",
                )
            ax.set_xscale("log")
            ax.set_xlabel("attacker's seconds beyond the target (log scale)")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
        fig.suptitle(title, fontsize=10)
        path = _save(fig, fig_dir / f"frontier_{_slug(setting)}.png")
        drawn.append(Drawn(title, path, f"Mean over {int(group['seeds'].max())} seed(s); whiskers: 95% t-interval."))
    return drawn


def frontier_of(cell_dirs: list[Path]) -> pd.DataFrame:
    """The frontier table of every finished cell in ``cell_dirs``."""
    parts = [cell_series(cell) for cell in cell_dirs]
    parts = [p for p in parts if not p.empty]
    return frontier(pd.concat(parts, ignore_index=True)) if parts else pd.DataFrame()
