"""Membership inference at low false-positive rates on the quick default cell: ML-Doctor's MemInf
(B,S) against LiRA and RMIA, mean over seeds, with the time it took to train the reference models.

Per seed, three runs of the same cell share one model store, so references of the same kind and
number are trained once and shared between LiRA and RMIA:

1. MemInf, LiRA (all four variants, ``--references``) and RMIA (online and offline, ``--few``);
2. LiRA offline with ``--few`` references (RMIA's offline ones, already trained);
3. RMIA online and offline with ``--references`` (LiRA's, already trained);
4. with ``--published``, LiRA and RMIA with ``--references`` again (the same references, no training)
   under the choices of the authors' released code: LiRA ``conventions=published``, RMIA gamma 2 and
   a trimmed mean (trim 0.2). Column ``estimator`` says which choices a row rests on.

It prints one row per attack, variant and number of references: AUC, TPR at 1% and 0.1% FPR (mean
and standard deviation over seeds), the ratio of TPR at 1% to MemInf's in the same seed, and
``references_s``: the seconds spent training that attack's references in the run that trained them
(the sum of the models' ``train_seconds``; models trained side by side in threads share their wall
time), mean over seeds.

Usage: ``python scripts/bench_low_fpr.py [--seeds 0 1 2] [--references 16] [--few 2]
[--published] [--results-dir DIR] [--device cpu]``. On 2 CPU cores: about 8 minutes per seed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

BASE = ["threat_model=blackbox_shadow"]


PUBLISHED = [
    "attack.membership_lira.conventions=published",
    "attack.membership_rmia.gamma=2",
    "attack.membership_rmia.trim=0.2",
]


def runs(references: int, few: int, published: bool = False) -> list[list[str]]:
    both = "attack.membership_rmia.variants=[online,offline]"
    extra = [
        [
            "attack=[membership_lira,membership_rmia]",
            f"attack.membership_lira.num_references={references}",
            f"attack.membership_rmia.num_references={references}",
            both,
            *PUBLISHED,
        ]
    ]
    return [
        [
            "attack=[membership,membership_lira,membership_rmia]",
            f"attack.membership_lira.num_references={references}",
            both,
            f"attack.membership_rmia.num_references={few}",
        ],
        [
            "attack=membership_lira",
            f"attack.membership_lira.num_references={few}",
            "attack.membership_lira.variants=[offline,offline_fixed_var]",
        ],
        ["attack=membership_rmia", both, f"attack.membership_rmia.num_references={references}"],
    ] + (extra if published else [])


def estimator(cell: Path, attack: str) -> str:
    """The estimator choices a cell's ``attack`` used, from its saved config."""
    settings = OmegaConf.load(cell / "config.yaml").attack.get(attack, {})
    if attack == "membership_lira":
        return str(settings.get("conventions", "ours"))
    if attack == "membership_rmia":
        return f"gamma {settings.get('gamma', 1.0):g}, trim {settings.get('trim', 0.0):g}"
    return ""


def cli() -> str:
    exe = Path(sys.executable).parent / "mldoctor-bench"
    return str(exe) if exe.exists() else "mldoctor-bench"


def references_seconds(cell: Path) -> dict[tuple[str, int], float]:
    """Seconds spent training each (kind, number) of reference models in this cell's run."""
    timings = json.loads((cell / "timings.json").read_text())
    out: dict[tuple[str, int], float] = {}
    for phase in timings["phases"]:
        for model in phase.get("info", {}).get("models", []):
            role = model["role"]
            if role.startswith("reference-") and not model["reused"]:
                _, kind, _, _, k = role.split("-")
                out[(kind, int(k))] = out.get((kind, int(k)), 0.0) + model["train_seconds"]
    return out


def collect(results_dir: Path) -> pd.DataFrame:
    rows, seconds = [], {}
    for cell in sorted((results_dir / "cells").iterdir()):
        table = pd.read_parquet(cell / "results.parquet")
        for (kind, k), s in references_seconds(cell).items():
            seed = int(table.seed.iloc[0])
            seconds[(seed, kind, k)] = seconds.get((seed, kind, k), 0.0) + s
        ok = table[(table.status == "ok") & table.attack.str.startswith("membership")]
        wide = ok.pivot_table(index=["seed", "attack", "variant"], columns="metric", values="value").reset_index()
        wide["estimator"] = [estimator(cell, a) for a in wide["attack"]]
        rows.append(wide)
    frame = pd.concat(rows, ignore_index=True)
    frame["num_references"] = frame.get("num_references", pd.Series(0, index=frame.index)).fillna(0).astype(int)
    frame["kind"] = frame.variant.str.split("_").str[0]
    frame["references_s"] = [
        seconds.get((r.seed, r.kind, r.num_references), float("nan")) if r.num_references else float("nan")
        for r in frame.itertuples()
    ]
    base = frame[frame.attack == "membership"].groupby("seed")["tpr_at_fpr_0.01"].first()
    frame["x_meminf"] = frame["tpr_at_fpr_0.01"] / frame.seed.map(base)
    return frame


def table(frame: pd.DataFrame) -> str:
    frame = frame.drop_duplicates(["seed", "attack", "variant", "num_references", "estimator"])
    keys = ["attack", "estimator", "variant", "num_references"]
    g = frame.groupby(keys, sort=False)
    out = g.agg(
        seeds=("seed", "nunique"),
        auc=("auc", "mean"),
        auc_sd=("auc", "std"),
        tpr_1=("tpr_at_fpr_0.01", "mean"),
        tpr_1_sd=("tpr_at_fpr_0.01", "std"),
        tpr_01=("tpr_at_fpr_0.001", "mean"),
        x_meminf=("x_meminf", "mean"),
        references_s=("references_s", "mean"),
    ).reset_index()
    lines = [
        "| attack | estimator | variant | refs | seeds | AUC | TPR@1% FPR | TPR@0.1% FPR | TPR@1% / MemInf's "
        "| references_s |",
        "| --- | --- | --- | ---: | ---: | --- | --- | ---: | ---: | ---: |",
    ]
    for r in out.itertuples():
        refs = str(r.num_references) if r.num_references else ""
        secs = "" if pd.isna(r.references_s) else f"{r.references_s:.0f}"
        lines.append(
            f"| {r.attack} | {r.estimator} | {r.variant} | {refs} | {r.seeds} | {r.auc:.3f} ± {r.auc_sd:.3f} | "
            f"{r.tpr_1:.3f} ± {r.tpr_1_sd:.3f} | {r.tpr_01:.3f} | {r.x_meminf:.1f} | {secs} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--references", type=int, default=16)
    parser.add_argument("--few", type=int, default=2)
    parser.add_argument(
        "--results-dir", type=Path, default=None, help="keep everything here (default: a temporary folder)"
    )
    parser.add_argument("--published", action="store_true", help="also score under the published code's choices")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mldoctor-lowfpr-") as tmp:
        results_dir = args.results_dir or Path(tmp)
        for seed in args.seeds:
            for overrides in runs(args.references, args.few, args.published):
                cmd = [cli(), *BASE, *overrides, f"seed={seed}", f"device={args.device}", f"results_dir={results_dir}"]
                print("$", " ".join(cmd), flush=True)
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        print(table(collect(results_dir)))


if __name__ == "__main__":
    main()
