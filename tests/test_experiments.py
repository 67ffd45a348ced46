"""The laptop-sized rehearsals of the paper's experiments run end to end, report included, and
show what they rehearse: a target that learns, and (overfitting) leakage growing with epochs."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

pytestmark = pytest.mark.slow


def report(results_dir: Path) -> Path:
    exe = Path(sys.executable).parent / "mldoctor-report"
    proc = subprocess.run([str(exe), str(results_dir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return results_dir / "report" / "report.md"


def sweep(run_cli, out: Path, experiment: str, cells: int) -> pd.DataFrame:
    proc = run_cli("-m", f"+experiment={experiment}", f"results_dir={out}", "device=cpu", timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = pd.read_parquet(next((out / "hydra" / "sweeps").glob("*/results.parquet")))
    assert merged.config_hash.nunique() == cells
    assert (merged.status != "failed").all(), merged[merged.status == "failed"].reason.unique()
    return merged


def target(merged: pd.DataFrame, metric: str) -> pd.Series:
    rows = merged[(merged.attack == "target") & (merged.metric == metric)]
    return rows.set_index("config_hash")["value"]


def test_paper_grid_small_target_learns(run_cli, tmp_path):
    out = tmp_path / "paper_grid_small"
    merged = sweep(run_cli, out, "paper_grid_small", 4)
    assert (target(merged, "test_accuracy") > 0.6).all()  # 10 classes: chance is 0.1
    agreement = merged[
        (merged.attack == "stealing") & (merged.threat_model == "blackbox_shadow") & (merged.metric == "agreement")
    ]["value"]
    assert agreement.mean() > 0.6
    md = report(out)
    assert (out / "report" / "figures" / "bars_membership_auc.png").exists()
    assert "n=2" in md.read_text()


def test_overfitting_small_leaks_more_with_epochs(run_cli, tmp_path):
    out = tmp_path / "overfitting_small"
    merged = sweep(run_cli, out, "overfitting_small", 3)
    epochs = {
        pd.read_parquet(cell / "results.parquet")["config_hash"].iloc[0]: OmegaConf.load(
            cell / "config.yaml"
        ).train.epochs
        for cell in (out / "cells").glob("*")
    }
    train = target(merged, "train_accuracy").groupby(epochs).mean()
    auc = merged[(merged.attack == "membership") & (merged.metric == "auc")].set_index("config_hash")["value"]
    auc = auc.groupby(epochs).mean()
    assert list(train.index) == [5, 15, 45]
    assert train.is_monotonic_increasing and train[45] > 0.99 and target(merged, "test_accuracy").max() > 0.8
    assert auc[45] > auc[5]
    text = report(out).read_text()
    assert "![attacks against training epochs (Figure 8)](figures/setting_train.epochs.png)" in text
    rows = text.split("### membership: auc")[1].split("\n#")[0]
    assert rows.count("95% bootstrap CI") == 3 and "train.epochs=45" in rows  # one seed: one row per epochs
