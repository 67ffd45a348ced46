"""Choose the MemInf attack model's recipe (learning rate, epochs) on the attacker's own data only.

The attacker of the (.,S) threat models holds the shadow quarters and its shadow model, nothing of
the target. This script cuts each shadow quarter in two halves (quarters are already in random
order): the first halves of shadow-train (members of the shadow model) and shadow-test
(non-members) *fit* the attack model through the shadow model, the second halves *validate* it
(ROC AUC). Target-train, target-test and the target model are never loaded, trained or queried.

Every candidate of a grid (learning rate x epochs; Adam, the profile's batch size) is fitted on
both feature sets the membership attack uses: black-box (sorted log-posteriors; correctness, loss,
logit confidence) and white-box (those, plus gradient norm, one-hot label and the unit-order-free
sorted last-layer gradient that (W,S) uses), for each seed (a seed changes the split and the shadow
model). The shadow model is trained exactly as ``mldoctor-bench`` trains it and cached in the same
model store (``results_dir/cache``), so a later run with the same overrides reuses it.

Selection rule (the one-standard-error rule of cross-validation): each candidate's score is its
validation AUC averaged over the two feature sets and the seeds. Among candidates whose score is
within one standard error of the best score, the cheapest wins (fewest epochs; then the higher
score). The standard error is the best candidate's: Hanley & McNeil's (1982) for each validation
AUC, the two feature sets measured on one validation set counted as one measurement, the seeds as
independent ones; ``--tie`` replaces it by a fixed margin.

The table of candidates and the choice are printed, and written under
``results_dir/tuning/membership/``: ``candidates.csv`` (one row per seed x features x candidate),
``recipe.yaml`` (``recipes: membership: {epochs, lr, batch_size}``) and, per seed, the fit and
validate indices into the dataset (``halves_seed<N>.safetensors``).

Usage (Hydra overrides as for ``mldoctor-bench``; ``seed`` is the first of ``--seeds`` seeds):
    OMP_NUM_THREADS=1 python scripts/tune_attacks.py [--seeds 2] [--lrs 1e-5,1e-4,1e-3,1e-2]
        [--epochs 20,60,150] [--tie MARGIN] profile=quick seed=0 results_dir=/tmp/tune
The quick profile's default grid takes about one CPU-minute per seed, plus the shadow's training.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score

from mldoctor_bench import ui
from mldoctor_bench.attacks.attack_model import fit_attack_model
from mldoctor_bench.attacks.membership import TOP_UNITS, GradientBranch, blackbox_features, whitebox_features
from mldoctor_bench.cell.models import derive_seed
from mldoctor_bench.cell.plan import cell_partition, plan
from mldoctor_bench.cell.run import provider
from mldoctor_bench.data import ImageData, load_dataset
from mldoctor_bench.files import atomic_write_text
from mldoctor_bench.knowledge import Labeled, balanced
from mldoctor_bench.threat_models import WhiteBoxAccess
from mldoctor_bench.timings import Timings

LRS = (1e-5, 1e-4, 1e-3, 1e-2)
EPOCHS = (20, 60, 150)
FEATURES = ("blackbox", "whitebox")
# The threat model whose attack-model seed each feature set borrows (as in a real run).
THREAT_MODEL_OF = {"blackbox": "blackbox_shadow", "whitebox": "whitebox_shadow"}


@dataclass(frozen=True)
class Candidate:
    """One attack-model recipe on the grid; its cost is its number of epochs."""

    lr: float
    epochs: int


@dataclass(frozen=True)
class ShadowSide:
    """Everything the attacker holds: the two shadow quarters (indices into ``data``) and the
    shadow model trained on ``shadow_train``, as the access objects a real run gives the attack."""

    data: ImageData
    shadow_train: torch.Tensor
    shadow_test: torch.Tensor
    blackbox: WhiteBoxAccess  # the shadow's released posteriors (with the defense's output transform)
    whitebox: WhiteBoxAccess


@dataclass(frozen=True)
class Halves:
    """Balanced fit and validate sets cut from the shadow quarters, with their dataset indices."""

    fit_members: Labeled
    fit_nonmembers: Labeled
    val_members: Labeled
    val_nonmembers: Labeled
    indices: dict[str, torch.Tensor]


def attacker_halves(data: ImageData, shadow_train: torch.Tensor, shadow_test: torch.Tensor) -> Halves:
    """Fit on the first half of each shadow quarter, validate on the second half (balanced)."""
    half = min(len(shadow_train), len(shadow_test)) // 2
    if half < 2:
        raise ValueError(f"shadow quarters of {len(shadow_train)} leave too few examples to fit and validate")
    indices = {
        "fit_members": shadow_train[:half],
        "fit_nonmembers": shadow_test[:half],
        "val_members": shadow_train[half : 2 * half],
        "val_nonmembers": shadow_test[half : 2 * half],
    }
    return Halves(**{k: Labeled.take(data, v) for k, v in indices.items()}, indices=indices)


def labelled_groups(
    extract: Callable[[Labeled], list[torch.Tensor]], members: Labeled, nonmembers: Labeled
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Feature groups of members then non-members, and the membership labels (1, then 0)."""
    members, nonmembers = balanced(members, nonmembers)
    groups = [torch.cat(pair) for pair in zip(extract(members), extract(nonmembers))]
    return groups, torch.cat([torch.ones(len(members)), torch.zeros(len(nonmembers))])


def validation_rows(
    side: ShadowSide,
    halves: Halves,
    grid: Sequence[Candidate],
    batch_size: int,
    seed: int,
    features: Sequence[str] = FEATURES,
) -> list[dict]:
    """Validation AUC of every candidate on every feature set: fit on ``halves``' fit part through
    the shadow model, score on its validate part. One row per (features, candidate)."""
    model = side.whitebox.model
    extractors = {
        "blackbox": (lambda d: blackbox_features(side.blackbox, d), None),
        "whitebox": (
            lambda d: whitebox_features(side.whitebox, d, model.num_classes),
            {3: lambda: GradientBranch(model.num_classes, min(TOP_UNITS, model.embedding_dim))},
        ),
    }
    rows = []
    for kind in features:
        extract, custom = extractors[kind]
        fit_x, fit_y = labelled_groups(extract, halves.fit_members, halves.fit_nonmembers)
        val_x, val_y = labelled_groups(extract, halves.val_members, halves.val_nonmembers)
        init_seed = derive_seed(seed, f"membership/{THREAT_MODEL_OF[kind]}")
        for c in grid:
            t0 = time.perf_counter()
            fitted = fit_attack_model(fit_x, fit_y, c.epochs, c.lr, batch_size, init_seed, custom)
            auc = roc_auc_score(val_y.numpy(), fitted.member_scores(val_x).numpy())
            rows.append(
                {
                    "seed": seed,
                    "features": kind,
                    "lr": c.lr,
                    "epochs": c.epochs,
                    "val_auc": round(float(auc), 6),
                    "val_auc_se": round(
                        auc_standard_error(auc, len(halves.val_members), len(halves.val_nonmembers)), 6
                    ),
                    "fit_loss": round(fitted.losses[-1], 6),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
    return rows


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil's (1982) standard error of an AUC measured on ``n_pos`` positives and
    ``n_neg`` negatives."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per candidate: validation AUC per feature set (mean over seeds), their mean, and the
    mean's standard error (feature sets share a validation set: one measurement per seed)."""
    per_kind = rows.pivot_table(index=["lr", "epochs"], columns="features", values="val_auc", aggfunc="mean")
    per_kind.columns = [f"{k}_auc" for k in per_kind.columns]
    by_candidate = rows.groupby(["lr", "epochs"])
    per_kind["mean_auc"] = by_candidate["val_auc"].mean()
    seeds = rows["seed"].nunique()
    per_kind["se"] = by_candidate["val_auc_se"].apply(lambda se: math.sqrt((se**2).mean() / seeds))
    return per_kind.reset_index()


def margin(summary: pd.DataFrame, tie: Optional[float] = None) -> float:
    """How far below the best mean AUC a candidate still ties: ``tie``, or the best one's standard error."""
    return float(tie) if tie is not None else float(summary.loc[summary["mean_auc"].idxmax(), "se"])


def choose(summary: pd.DataFrame, tie: Optional[float] = None) -> Candidate:
    """The cheapest candidate (fewest epochs, then higher mean AUC) within :func:`margin` of the best."""
    near = summary[summary["mean_auc"] >= summary["mean_auc"].max() - margin(summary, tie)]
    best = near.sort_values(["epochs", "mean_auc"], ascending=[True, False]).iloc[0]
    return Candidate(float(best["lr"]), int(best["epochs"]))


def shadow_side(cfg: DictConfig, bars: ui.Bars) -> ShadowSide:
    """Load the data, split it, and train (or load from the store) the shadow model, exactly as a
    run of ``cfg`` would. Only the shadow quarters and the shadow model leave this function."""
    p = plan(cfg)
    data = load_dataset(cfg.dataset.name, cfg.data)
    splits = cell_partition(p, len(data), data.num_classes)  # the run's own partition
    models = provider(p, data, splits, bars, Timings())
    [shadow] = [s.model for s in models.obtain([models.pool_spec("shadow", "shadow_train", models.knows_defense)])]
    transform = p.defense.output_transform() if models.knows_defense else None
    return ShadowSide(
        data,
        splits.shadow_train,
        splits.shadow_test,
        WhiteBoxAccess(shadow, p.device, output_transform=transform),
        WhiteBoxAccess(shadow, p.device),
    )


def tune(
    cfgs: Sequence[DictConfig],
    grid: Sequence[Candidate],
    out_dir: Optional[Path] = None,
    bars: Optional[ui.Bars] = None,
) -> pd.DataFrame:
    """Rows of :func:`validation_rows` for every config (one per seed); saves each seed's halves
    under ``out_dir`` if given."""
    bars = bars or (lambda label, total: lambda n=1, info="": None)
    rows = []
    for cfg in cfgs:
        side = shadow_side(cfg, bars)
        halves = attacker_halves(side.data, side.shadow_train, side.shadow_test)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            save_file(
                {k: v.contiguous() for k, v in halves.indices.items()},
                str(out_dir / f"halves_seed{cfg.seed}.safetensors"),
            )
        ui.console.print(
            f"seed {cfg.seed}: fitting {len(grid)} candidates x {len(FEATURES)} feature sets "
            f"on {2 * len(halves.fit_members)} shadow examples, validating on {2 * len(halves.val_members)}"
        )
        rows += validation_rows(side, halves, grid, int(cfg.recipes.membership.batch_size), int(cfg.seed))
    return pd.DataFrame(rows)


def recipe_yaml(chosen: Candidate, batch_size: int, command: str) -> str:
    """The YAML snippet to paste into a profile."""
    return (
        f"# From `{command}` (validation on the attacker's shadow quarters only).\n"
        f"recipes:\n  membership: {{epochs: {chosen.epochs}, lr: {yaml_float(chosen.lr)}, batch_size: {batch_size}}}\n"
    )


def yaml_float(value: float) -> str:
    """``1.0e-3``: a float YAML 1.1 reads as a float (it needs the dot), as the profiles write it."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def compose_configs(overrides: list[str], seeds: int) -> list[DictConfig]:
    """The config for each seed: ``overrides``, then ``seed`` stepped from the composed one."""
    with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
        first = int(compose("config", overrides=overrides).seed)
        return [compose("config", overrides=[*overrides, f"seed={first + i}"]) for i in range(seeds)]


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="number of seeds (splits and shadow models), from `seed`")
    parser.add_argument("--lrs", type=floats, default=list(LRS), help="comma-separated learning rates")
    parser.add_argument("--epochs", type=ints, default=list(EPOCHS), help="comma-separated epoch counts")
    parser.add_argument(
        "--tie",
        type=float,
        default=None,
        help="fixed AUC margin within which the cheaper recipe wins (default: one standard error)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. profile=quick seed=0 results_dir=/tmp/tune")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    cfgs = compose_configs(args.overrides, args.seeds)
    out_dir = Path(str(cfgs[0].results_dir)).expanduser().resolve() / "tuning" / "membership"
    grid = [Candidate(lr, e) for lr in args.lrs for e in args.epochs]
    with ui.progress_bars() as bars:
        rows = tune(cfgs, grid, out_dir, bars)
    summary = summarise(rows)
    chosen = choose(summary, args.tie)
    batch_size = int(cfgs[0].recipes.membership.batch_size)
    summary["chosen"] = [
        "<==" if (lr == chosen.lr and e == chosen.epochs) else "" for lr, e in zip(summary["lr"], summary["epochs"])
    ]
    seeds = ", ".join(str(c.seed) for c in cfgs)
    print(
        f"MemInf attack-model candidates: validation AUC on shadow-quarter halves, seeds {seeds} "
        f"({cfgs[0].dataset.name}, {cfgs[0].arch.name}, profile {cfgs[0].profile_name}, batch {batch_size})"
    )
    print(summary.to_string(index=False, formatters={"lr": "{:g}".format}, float_format="{:.4f}".format))
    rule = f"{args.tie}" if args.tie is not None else f"one standard error ({margin(summary):.4f})"
    print(
        f"chosen (cheapest within {rule} of the best mean AUC {summary['mean_auc'].max():.4f}): "
        f"lr {chosen.lr:g}, epochs {chosen.epochs}, batch_size {batch_size}"
    )
    command = " ".join(["python scripts/tune_attacks.py", *(argv if argv is not None else sys.argv[1:])])
    rows.to_csv(out_dir / "candidates.csv", index=False)
    atomic_write_text(out_dir / "recipe.yaml", recipe_yaml(chosen, batch_size, command))
    print(recipe_yaml(chosen, batch_size, command), end="")
    print(f"written: {out_dir / 'candidates.csv'}, {out_dir / 'recipe.yaml'} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
