"""Choose DP-SGD's recipe (learning rate, clipping norm, expected batch size, epochs) for utility, on
data that is not the target's.

An untuned DP-SGD baseline makes every heuristic defense look better than it is (Aerni, Zhang and
Tramer, "Evaluations of machine learning privacy defenses are misleading", CCS 2024). This script
tunes the DP recipe the way its owner would, at the profile's privacy budget (target epsilon at
delta 1e-5, Opacus picking the noise for each batch size and epoch count): every candidate trains
the cell's architecture with DP-SGD on the shadow-train quarter (as many rows as the target's
training quarter, so the sampling rate and the accountant's epsilon are the target's) and is scored
by its accuracy on the shadow-test quarter. Target-train, target-test and any target model are never
read. The partition is the one ``mldoctor-bench`` cuts for the seed.

Every candidate is trained once per seed (``--seeds``; each seed cuts its own partition and draws
its own noise: one DP run is too noisy to rank recipes by) and scored by its mean validation
accuracy. The grid is searched in two stages to keep it affordable on a CPU: (batch size x epochs x
learning rate) at one clipping norm, then the clipping norms at the best of those; ``--candidates``
names the candidates instead (``batch:epochs:lr:clip``, separated by commas). The choice is the
cheapest candidate (fewest images processed) whose mean accuracy is within one binomial standard
error of the best one's (over all its validation rows), as ``scripts/tune_attacks.py`` chooses the
attack model's recipe. The table is printed and written as ``candidates.csv`` with ``recipe.yaml``
under ``results_dir/tuning/dp_sgd/``.

``--match-accuracy A`` instead searches DP-SGD for a validation accuracy within ``--tolerance``
(default 0.01) of ``A``: DP-SGD matched to a heuristic defense's accuracy, as Aerni et al. compare
defenses (which defense protects the vulnerable examples best at the same accuracy), tuned as they
tune it (its step and clipping norm too, at whatever epsilon it takes). It trains the profile's DP
recipe at its privacy budget, then the learning rates ``--match-lrs`` x clipping norms
``--match-clips`` at 1/64 of that noise (an epsilon in the hundreds of thousands: where even the best
falls short, DP-SGD with these recipes cannot reach ``A``), and bisects the noise with the best of
them on a log scale (accuracy falls as the noise grows), ``--steps`` trainings at most. Each training
runs once per seed on the same shadow quarters. It chooses the largest noise within the tolerance
(the most privacy at that accuracy), else the closest, and writes ``match.csv`` and
``match.overrides`` (the overrides that select it, one line) under ``results_dir/tuning/dp_sgd/``.
With ``--match-accuracy``, every candidate trains with as many mislabelled images added as a
worst-case copy holds (half of the profile's worst-case canaries; ``--canaries N`` sets another
number, 0 none, and adds them to the recipe search too), because canaries cost DP-SGD accuracy that a
search without them does not see: the first N rows of the shadow-test quarter, each with a wrong class
drawn at random, validated on the rest of it.

Usage (Hydra overrides as for ``mldoctor-bench``; ``seed`` is the first of the seeds):
    python scripts/tune_dp.py [--seeds 2] [--batches 64,256] [--epochs 20,40] [--lrs 0.02,0.1,0.5]
        [--clips 1.0] [--more-clips 0.3,3.0] [--candidates 64:40:0.02:1.0,...] [--reference]
        profile=quick seed=0 results_dir=/tmp/tune
    python scripts/tune_dp.py --seeds 1 --match-accuracy 0.906 [--steps 6] [--canaries 25]
        profile=quick results_dir=/tmp/tune
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_module

from mldoctor_bench.attacks.canaries import canary_labels
from mldoctor_bench.cell.models import derive_seed
from mldoctor_bench.cell.plan import cell_partition, plan
from mldoctor_bench.data import load_dataset
from mldoctor_bench.defenses.dp_sgd import dp_compatible, train_classifier_dp
from mldoctor_bench.files import atomic_write_text
from mldoctor_bench.inference import accuracy
from mldoctor_bench.models import build_model
from mldoctor_bench.training import Recipe, configure_backends


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def candidates(text: str) -> list[tuple[int, int, float, float]]:
    return [
        (int(b), int(e), float(lr), float(c)) for b, e, lr, c in (item.split(":") for item in text.split(",") if item)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--batches", type=ints, default=[64, 256])
    parser.add_argument("--epochs", type=ints, default=[20, 40])
    parser.add_argument("--lrs", type=floats, default=[0.02, 0.1, 0.5])
    parser.add_argument("--clips", type=floats, default=[1.0])
    parser.add_argument("--more-clips", type=floats, default=[0.3, 3.0])
    parser.add_argument(
        "--candidates", type=candidates, default=None, help="batch:epochs:lr:clip,... instead of the grid"
    )
    parser.add_argument("--reference", action="store_true", help="also train the profile's current DP recipe")
    parser.add_argument("--match-accuracy", type=float, default=None, help="search the noise for this accuracy")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=6, help="noise multipliers tried with the chosen recipe")
    parser.add_argument("--match-lrs", type=floats, default=[0.01, 0.03, 0.1])
    parser.add_argument("--match-clips", type=floats, default=[1.5, 10.0])
    parser.add_argument(
        "--canaries", type=int, default=None, help="mislabelled images added (default: a worst-case copy's share)"
    )
    args, overrides = parser.parse_known_args()
    with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["defense=dp_sgd", *overrides])
    p = plan(cfg)
    if args.canaries is None:  # the match is for the worst-case copies: each canary is in half of them
        args.canaries = int(cfg.recipes.worst_case.canaries) // 2 if args.match_accuracy is not None else 0
    data = load_dataset(cfg.dataset.name, cfg.data)
    first = int(cfg.seed)
    partitions = [
        cell_partition(replace_seed(p, seed), len(data), data.num_classes) for seed in range(first, first + args.seeds)
    ]
    base = Recipe.from_config(cfg.train).resolved(p.device)
    configure_backends(base, p.device)
    dp = p.defense.settings
    epsilon = dp.target_epsilon
    if epsilon is None:
        raise SystemExit("tune at a privacy budget: the profile must set defense.target_epsilon")
    out_dir = Path(str(cfg.results_dir)).expanduser() / "tuning" / "dp_sgd"
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []

    def trial(batch: int, epochs: int, lr: float, clip: float, stage: str, noise: float | None = None) -> dict:
        """Train the candidate once per seed (at ``noise``, else at the profile's epsilon); its row."""
        recipe = replace(base, batch_size=batch, epochs=epochs, lr=lr)
        start, accuracies, info = time.perf_counter(), [], {}
        for seed, splits in enumerate(partitions, start=first):
            model, _ = dp_compatible(build_model(str(cfg.arch.name), data.channels, data.num_classes, data.image_size))
            images, labels, val_idx = with_canaries(data, splits, args.canaries, seed)
            info = train_classifier_dp(
                model.to(p.device),
                images.to(p.device),
                labels.to(p.device),
                recipe,
                derive_seed(seed, "dp-tuning"),
                max_grad_norm=clip,
                delta=dp.delta,
                **({"target_epsilon": epsilon} if noise is None else {"noise_multiplier": noise}),
            )
            accuracies.append(accuracy(model, data.images[val_idx].to(p.device), data.labels[val_idx]))
        records.append(
            {
                "stage": stage,
                "batch_size": batch,
                "epochs": epochs,
                "lr": lr,
                "max_grad_norm": clip,
                "val_accuracy": sum(accuracies) / len(accuracies),
                "per_seed": " ".join(f"{a:.3f}" for a in accuracies),
                "epsilon": info["epsilon"],
                "noise_multiplier": info["noise_multiplier"],
                "images": (len(partitions[0].shadow_train) + args.canaries) * epochs,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(pd.DataFrame([records[-1]]).to_string(index=False, header=len(records) == 1), flush=True)
        return records[-1]

    if args.match_accuracy is not None:
        match(args, p.defense.training_recipe(base), dp.max_grad_norm, trial, out_dir)
        return

    if args.reference:
        trial(base.batch_size, base.epochs, base.lr, dp.max_grad_norm, "current")
    if args.candidates:
        for batch, epochs, lr, clip in args.candidates:
            trial(batch, epochs, lr, clip, "given")
    else:
        for batch in args.batches:
            for epochs in args.epochs:
                for lr in args.lrs:
                    for clip in args.clips:
                        trial(batch, epochs, lr, clip, "grid")
        grid = pd.DataFrame(records)
        best = grid[grid["stage"] == "grid"].sort_values("val_accuracy", ascending=False).iloc[0]
        for clip in args.more_clips:
            trial(int(best["batch_size"]), int(best["epochs"]), float(best["lr"]), clip, "clip")
    table = pd.DataFrame(records)
    top = table["val_accuracy"].max()
    rows = (len(partitions[0].shadow_test) - args.canaries) * len(partitions)  # validation rows
    se = math.sqrt(top * (1 - top) / rows)
    near = table[table["val_accuracy"] >= top - se]  # the profile's own recipe competes too
    chosen = near.sort_values(["images", "val_accuracy"], ascending=[True, False]).iloc[0]
    table.to_csv(out_dir / "candidates.csv", index=False)
    recipe = (
        f"recipes:\n  dp_sgd: {{target_epsilon: {epsilon}, max_grad_norm: {chosen['max_grad_norm']}, "
        f"lr: {chosen['lr']}, batch_size: {int(chosen['batch_size'])}, epochs: {int(chosen['epochs'])}}}\n"
    )
    atomic_write_text(out_dir / "recipe.yaml", recipe)
    print(table.sort_values("val_accuracy", ascending=False).to_string(index=False))
    print(
        f"best mean validation accuracy {top:.3f} (one standard error {se:.3f} on {rows} rows); chosen, the "
        f"cheapest within it:\n{recipe}written {out_dir / 'candidates.csv'} and {out_dir / 'recipe.yaml'}"
    )


def match(args, recipe: Recipe, clip: float, trial, out_dir: Path) -> None:
    """Search the recipe and the noise multiplier for a validation accuracy within ``args.tolerance``
    of ``args.match_accuracy`` (see the module docstring)."""
    goal, tol = args.match_accuracy, args.tolerance
    rows = [trial(recipe.batch_size, recipe.epochs, recipe.lr, clip, "profile's epsilon")]
    low, high = rows[0]["noise_multiplier"] / 64, rows[0]["noise_multiplier"]
    for lr in args.match_lrs:  # the step and clipping norm that the least noise allows
        for norm in args.match_clips:
            rows.append(trial(recipe.batch_size, recipe.epochs, lr, norm, "recipe at the least noise", low))
    best = max(rows[1:], key=lambda r: r["val_accuracy"])
    lr, norm, last = best["lr"], best["max_grad_norm"], best
    searched = [best]
    while (
        len(searched) < args.steps and best["val_accuracy"] >= goal - tol and abs(last["val_accuracy"] - goal) > tol / 2
    ):
        noise = math.sqrt(low * high)  # geometric midpoint: the noise spans decades
        last = trial(recipe.batch_size, recipe.epochs, lr, norm, "noise bisection", noise)
        searched.append(last)
        rows.append(last)
        low, high = (noise, high) if last["val_accuracy"] >= goal else (low, noise)
    table = pd.DataFrame(rows).assign(distance=lambda t: (t["val_accuracy"] - goal).abs())
    mine = pd.DataFrame(searched).assign(distance=lambda t: (t["val_accuracy"] - goal).abs())
    within = mine[mine["distance"] <= tol]
    chosen = within.sort_values("noise_multiplier").iloc[-1] if len(within) else mine.sort_values("distance").iloc[0]
    table.to_csv(out_dir / "match.csv", index=False)
    overrides = (
        f"defense=dp_sgd defense.noise_multiplier={chosen['noise_multiplier']:.4g} defense.target_epsilon=null "
        f"defense.lr={lr:g} defense.max_grad_norm={norm:g}"
    )
    atomic_write_text(out_dir / "match.overrides", overrides + "\n")
    print(table.to_string(index=False))
    print(
        f"validation accuracy {chosen['val_accuracy']:.3f} against {goal:.3f} (tolerance {tol}): "
        f"{'within' if len(within) else 'NOT within; the closest'}, at epsilon {chosen['epsilon']:.3g}; the search "
        f"took {table['seconds'].sum():.0f} s over {len(table)} trainings.\n{overrides}\n"
        f"written {out_dir / 'match.csv'} and {out_dir / 'match.overrides'}"
    )


def with_canaries(data, splits, canaries: int, seed: int):
    """The training images and labels (shadow-train plus the first ``canaries`` rows of shadow-test,
    mislabelled) and the validation rows (the rest of shadow-test)."""
    if canaries >= len(splits.shadow_test):
        raise SystemExit(f"--canaries {canaries}: the shadow-test quarter holds {len(splits.shadow_test)} rows")
    held, val_idx = splits.shadow_test[:canaries], splits.shadow_test[canaries:]
    generator = torch.Generator().manual_seed(derive_seed(seed, "dp-tuning-canaries"))
    wrong = canary_labels(data.labels[held], "mislabeled", data.num_classes, generator)
    fit_idx = splits.shadow_train
    return torch.cat([data.images[fit_idx], data.images[held]]), torch.cat([data.labels[fit_idx], wrong]), val_idx


def replace_seed(p, seed: int):
    """The plan ``p`` with another seed (the partition depends on it alone)."""
    return replace(p, seed=seed)


if __name__ == "__main__":
    main()
