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

Usage (Hydra overrides as for ``mldoctor-bench``; ``seed`` is the first of the seeds):
    python scripts/tune_dp.py [--seeds 2] [--batches 64,256] [--epochs 20,40] [--lrs 0.02,0.1,0.5]
        [--clips 1.0] [--more-clips 0.3,3.0] [--candidates 64:40:0.02:1.0,...] [--reference]
        profile=quick seed=0 results_dir=/tmp/tune
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_module

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
    args, overrides = parser.parse_known_args()
    with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["defense=dp_sgd", *overrides])
    p = plan(cfg)
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

    def trial(batch: int, epochs: int, lr: float, clip: float, stage: str) -> None:
        recipe = replace(base, batch_size=batch, epochs=epochs, lr=lr)
        start, accuracies, info = time.perf_counter(), [], {}
        for seed, splits in enumerate(partitions, start=first):
            model, _ = dp_compatible(build_model(str(cfg.arch.name), data.channels, data.num_classes, data.image_size))
            fit_idx, val_idx = splits.shadow_train, splits.shadow_test
            info = train_classifier_dp(
                model.to(p.device),
                data.images[fit_idx].to(p.device),
                data.labels[fit_idx].to(p.device),
                recipe,
                derive_seed(seed, "dp-tuning"),
                max_grad_norm=clip,
                delta=dp.delta,
                target_epsilon=epsilon,
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
                "images": len(partitions[0].shadow_train) * epochs,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(pd.DataFrame([records[-1]]).to_string(index=False, header=len(records) == 1), flush=True)

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
    rows = len(partitions[0].shadow_test) * len(partitions)
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


def replace_seed(p, seed: int):
    """The plan ``p`` with another seed (the partition depends on it alone)."""
    cfg = p.cfg.copy()
    cfg.seed = seed
    return replace(p, cfg=cfg)


if __name__ == "__main__":
    main()
