"""scripts/tune_attacks.py: the attack-model recipe is chosen from the grid, on shadow data only."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from mldoctor_bench.cell.models import ModelProvider
from mldoctor_bench.cell.targets import TrainedTarget
from mldoctor_bench.data import four_quarters
from mldoctor_bench.knowledge import Labeled

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tune_attacks.py"
spec = importlib.util.spec_from_file_location("tune_attacks", SCRIPT)
tune_attacks = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = tune_attacks  # dataclasses look their module up there
spec.loader.exec_module(tune_attacks)
Candidate = tune_attacks.Candidate


def test_selection_uses_only_shadow_quarters_and_picks_from_the_grid(tmp_path, monkeypatch, capsys):
    taken, trained = [], []
    real_take, real_obtain = Labeled.take.__func__, ModelProvider.obtain

    def spy_take(cls, data, indices):
        taken.append((len(data), indices.clone()))
        return real_take(cls, data, indices)

    def spy_obtain(self, items):
        trained.extend((item.role, item.rows) for item in items)
        return real_obtain(self, items)

    def no_target(*args):
        raise AssertionError("tuning must not train or load the target")

    monkeypatch.setattr(Labeled, "take", classmethod(spy_take))
    monkeypatch.setattr(ModelProvider, "obtain", spy_obtain)
    monkeypatch.setattr(TrainedTarget, "obtain", no_target)

    tune_attacks.main(
        [
            "--seeds",
            "1",
            "--lrs",
            "1e-3,1e-2",
            "--epochs",
            "2",
            "data.quarter_size=32",
            "train.epochs=2",
            "device=cpu",
            "seed=3",
            f"results_dir={tmp_path}",
        ]
    )

    out = tmp_path / "tuning" / "membership"
    recipe = OmegaConf.load(out / "recipe.yaml").recipes.membership
    assert (float(recipe.lr), int(recipe.epochs)) in {(1e-3, 2), (1e-2, 2)}
    assert int(recipe.batch_size) == 64
    rows = pd.read_csv(out / "candidates.csv")
    assert set(rows.columns) >= {"seed", "features", "lr", "epochs", "val_auc", "val_auc_se"}
    assert len(rows) == 2 * 2 and set(rows["features"]) == {"blackbox", "whitebox"}
    assert rows["val_auc"].between(0, 1).all()
    assert "chosen" in capsys.readouterr().out

    n = taken[0][0]
    quarters = four_quarters(n, 3, 32)
    assert trained == [("shadow", quarters.digest("shadow_train"))]  # the shadow on its quarter, nothing else
    shadow = set(torch.cat([quarters.shadow_train, quarters.shadow_test]).tolist())
    target = set(torch.cat([quarters.target_train, quarters.target_test]).tolist())
    used = set(torch.cat([idx for _, idx in taken]).tolist())
    assert used and used <= shadow and not used & target
    # the fit and validate halves are disjoint and together cover the shadow quarters
    from safetensors.torch import load_file

    halves = {k: set(v.tolist()) for k, v in load_file(str(out / "halves_seed3.safetensors")).items()}
    fit = halves["fit_members"] | halves["fit_nonmembers"]
    val = halves["val_members"] | halves["val_nonmembers"]
    assert not fit & val and fit | val == shadow
    assert halves["fit_members"] | halves["val_members"] == set(quarters.shadow_train.tolist())


def summary(aucs: dict[tuple[float, int], float], se: float = 0.01) -> pd.DataFrame:
    return pd.DataFrame([{"lr": lr, "epochs": e, "mean_auc": a, "se": se} for (lr, e), a in aucs.items()])


@pytest.mark.parametrize(
    "aucs, tie, expected",
    [
        ({(1e-3, 20): 0.700, (1e-3, 150): 0.704, (1e-2, 60): 0.60}, 0.005, Candidate(1e-3, 20)),  # near-tie: cheaper
        ({(1e-3, 20): 0.690, (1e-3, 150): 0.704, (1e-2, 60): 0.60}, 0.005, Candidate(1e-3, 150)),  # clear win
        ({(1e-4, 60): 0.702, (1e-3, 60): 0.704}, 0.005, Candidate(1e-3, 60)),  # same cost: higher AUC
        ({(1e-3, 20): 0.695, (1e-3, 150): 0.704}, None, Candidate(1e-3, 20)),  # within one standard error (0.01)
        ({(1e-3, 20): 0.690, (1e-3, 150): 0.704}, None, Candidate(1e-3, 150)),  # beyond it
    ],
)
def test_choose_breaks_near_ties_toward_fewer_epochs(aucs, tie, expected):
    assert tune_attacks.choose(summary(aucs), tie) == expected


def test_auc_standard_error_matches_the_chance_level_formula():
    # at AUC 0.5, Hanley & McNeil's variance is (n_pos + n_neg + 1) / (12 n_pos n_neg)
    assert tune_attacks.auc_standard_error(0.5, 250, 250) == pytest.approx((501 / (12 * 250 * 250)) ** 0.5)
    assert tune_attacks.auc_standard_error(0.9, 250, 250) < tune_attacks.auc_standard_error(0.6, 250, 250)
