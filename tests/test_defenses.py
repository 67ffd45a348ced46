"""Defenses: output transforms, DP accounting, RelaxLoss, and their effect on real small runs."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from mldoctor_bench.defense_catalog import OUTPUT, TRAINING
from mldoctor_bench.defenses import DEFENSES, build_defense
from mldoctor_bench.defenses.dp_sgd import dp_compatible, train_classifier_dp
from mldoctor_bench.defenses.output import one_hot_argmax, rounded, top_k
from mldoctor_bench.defenses.relaxloss import flattened_targets, relaxloss
from mldoctor_bench.models import build_model
from mldoctor_bench.threat_models import BlackBoxAccess
from mldoctor_bench.training import Recipe

CONF_DIR = Path(__file__).resolve().parents[1] / "src" / "mldoctor_bench" / "conf" / "defense"


def random_probs(n=200, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, classes, generator=g, dtype=torch.float64) * 3, 1)


def is_distribution(p):
    return bool((p >= 0).all()) and torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype))


def test_every_defense_config_names_a_registered_defense_and_back():
    names = sorted(path.stem for path in CONF_DIR.glob("*.yaml"))
    assert names == DEFENSES.names()
    for name in names:
        with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
            cfg = compose("config", overrides=[f"defense={name}"])
        defense = build_defense(cfg.defense)
        assert defense.name == name
        # output-time defenses release the undefended model: same store key as `none`
        assert (defense.cache_payload() == {}) == (defense.kind != TRAINING)
        assert (defense.output_transform() is not None) == (defense.kind == OUTPUT)
        assert cfg.attacker.knows_defense is True


def test_top_k_keeps_k_largest_renormalised():
    p = random_probs()
    r = top_k(p, 3)
    assert is_distribution(r)
    assert ((r > 0).sum(1) == 3).all()
    kept = p.topk(3, 1)
    assert torch.equal(r.topk(3, 1).indices, kept.indices)
    assert torch.allclose(r.gather(1, kept.indices), kept.values / kept.values.sum(1, keepdim=True))


def test_rounding_releases_rounded_values_up_to_normalisation():
    p = random_probs()
    r = rounded(p, 2)
    assert is_distribution(r)
    grid = torch.round(p, decimals=2)
    assert torch.allclose(r * grid.sum(1, keepdim=True), grid)  # proportional to the rounded vector
    assert (r.argmax(1) == p.argmax(1)).float().mean() > 0.95  # ties aside, the label survives
    tiny = torch.full((1, 200), 1 / 200, dtype=torch.float64)  # rounds to all zeros: argmax released
    assert is_distribution(rounded(tiny, 1))


@pytest.mark.slow
def test_labels_only_output_gives_posterior_attacks_one_hot_vectors(small_cell):
    defense = build_defense({"name": "output_labels_only"})
    access = BlackBoxAccess(small_cell.target.model, torch.device("cpu"), defense.output_transform())
    images = small_cell.data.images[small_cell.splits.target_train[:100]]
    released = access.posteriors(images)
    assert is_distribution(released)
    assert set(released.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(released.argmax(1), access.labels(images))
    assert torch.equal(one_hot_argmax(released), released)


@pytest.mark.slow
def test_a_cell_applies_output_defense_to_blackbox_target_only(small_cell):
    cell = small_cell
    cell = replace(cell, plan=replace(cell.plan, defense=build_defense({"name": "output_labels_only"})))
    black = cell.context("membership", "blackbox_shadow")
    white = cell.context("membership", "whitebox_shadow")
    images = cell.data.images[cell.splits.target_train[:50]]
    assert set(black.target.posteriors(images).unique().tolist()) == {0.0, 1.0}
    assert set(black.knowledge.reference.posteriors(images).unique().tolist()) == {0.0, 1.0}  # informed attacker
    assert len(white.target.posteriors(images).unique()) > 2  # white box: the raw posteriors


def test_dp_epsilon_is_finite_and_falls_as_noise_grows():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (64,), generator=g)
    eps = []
    for noise in (0.8, 1.3, 3.0):
        model, changed = dp_compatible(build_model("simple_cnn", 1, 10, 28))
        out = train_classifier_dp(
            model,
            images,
            labels,
            Recipe(epochs=1, batch_size=16),
            0,
            max_grad_norm=1.5,
            delta=1e-5,
            noise_multiplier=noise,
        )
        assert not changed and math.isfinite(out["epsilon"]) and out["delta"] == 1e-5
        eps.append(out["epsilon"])
    assert eps[0] > eps[1] > eps[2] > 0


def test_dp_quick_profile_spends_a_budget_in_the_papers_range():
    from opacus.accountants import RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier

    with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["defense=dp_sgd", "profile=quick"])
    s = build_defense(cfg.defense).settings
    steps = math.ceil(cfg.data.quarter_size / cfg.train.batch_size)  # Poisson batches per epoch
    noise = s.noise_multiplier
    if s.target_epsilon is not None:
        noise = get_noise_multiplier(
            target_epsilon=s.target_epsilon,
            target_delta=s.delta,
            sample_rate=1 / steps,
            epochs=cfg.train.epochs,
            accountant="rdp",
        )
    accountant = RDPAccountant()
    accountant.history = [(noise, 1 / steps, steps * cfg.train.epochs)]
    # the paper's budgets for SimpleCNN are eps 5 to 10; noise 1.3 over this recipe spent 17
    assert 5.0 <= accountant.get_epsilon(s.delta) <= 8.0 and s.delta == 1e-5


def test_dp_replaces_batchnorm_and_says_so():
    model, changed = dp_compatible(
        torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(inplace=True))
    )
    assert changed and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def test_relaxloss_flattened_targets_keep_true_probability_and_spread_the_rest():
    logits = torch.randn(8, 10, requires_grad=True)
    labels = torch.arange(8)
    t = flattened_targets(logits, labels, upper=1.0)
    assert t.requires_grad and is_distribution(t.detach().double())  # live targets, as in the authors' code
    p = torch.softmax(logits.detach(), 1)
    assert torch.allclose(t.gather(1, labels.view(-1, 1)).squeeze(1), p.gather(1, labels.view(-1, 1)).squeeze(1))
    others = t.masked_select(torch.nn.functional.one_hot(labels, 10) == 0).view(8, 9)
    assert torch.allclose(others, others[:, :1].expand(-1, 9))


# Three examples, three classes; logits are log-probabilities, so the softmax is the row itself.
# Rows 0 and 2 are classified right; row 1 (label 1, argmax 0) is wrong. Mean CE 0.655.
RELAX_PROBS = [[0.7, 0.2, 0.1], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]
RELAX_LABELS = [0, 1, 2]


def relax_batch():
    logits = torch.tensor(RELAX_PROBS, dtype=torch.float64).log().requires_grad_(True)
    return logits, torch.tensor(RELAX_LABELS)


def flattening_by_hand(logits, labels, upper):
    """The flattening loss in plain arithmetic: mean of ``wrong * soft CE - CE`` per row."""
    total = 0.0
    for row, y in zip(logits, labels):
        z = sum(math.exp(v) for v in row)
        p = [math.exp(v) / z for v in row]
        keep = min(p[y], upper)
        targets = [keep if k == y else (1 - keep) / (len(row) - 1) for k in range(len(row))]
        wrong = max(range(len(row)), key=lambda k: row[k]) != y
        soft_ce = -sum(t * math.log(q) for t, q in zip(targets, p))
        total += (soft_ce if wrong else 0.0) + math.log(p[y])
    return total / len(logits)


def test_relaxloss_flattening_on_a_hand_computed_batch():
    ln = math.log
    mean_ce = -(ln(0.7) + ln(0.25) + ln(0.8)) / 3
    # upper 1: row 1 keeps 0.25 on its label and spreads 0.75 as 0.375 + 0.375
    soft_row1 = -(0.375 * ln(0.5) + 0.25 * ln(0.25) + 0.375 * ln(0.25))
    expected = (ln(0.7) + (soft_row1 + ln(0.25)) + ln(0.8)) / 3  # = -0.2799
    # upper 0.2: row 1 keeps 0.2 and spreads 0.8 as 0.4 + 0.4
    soft_row1_clamped = -(0.4 * ln(0.5) + 0.2 * ln(0.25) + 0.4 * ln(0.25))
    expected_clamped = (ln(0.7) + (soft_row1_clamped + ln(0.25)) + ln(0.8)) / 3
    logits, labels = relax_batch()
    assert relaxloss(alpha=1.0)(logits, labels, 1).item() == pytest.approx(expected, abs=1e-12)
    assert relaxloss(alpha=1.0, upper=0.2)(logits, labels, 1).item() == pytest.approx(expected_clamped, abs=1e-12)
    assert expected == pytest.approx(-0.27991, abs=1e-5)
    # mean CE above alpha on an odd epoch: plain descent; even epochs: |L - alpha|
    assert relaxloss(alpha=0.5)(logits, labels, 1).item() == pytest.approx(mean_ce, abs=1e-12)
    assert relaxloss(alpha=1.0)(logits, labels, 0).item() == pytest.approx(1.0 - mean_ce, abs=1e-12)
    assert relaxloss(alpha=1.0)(logits, labels, 2).item() == pytest.approx(1.0 - mean_ce, abs=1e-12)


def test_relaxloss_flattening_gradient_flows_through_the_soft_targets():
    logits, labels = relax_batch()
    relaxloss(alpha=1.0)(logits, labels, 1).backward()
    # the right rows only ascend: a descent step lowers their true logit
    assert logits.grad[0, 0] > 0 and logits.grad[2, 2] > 0
    # central differences of the plain-arithmetic loss match autograd, soft targets included
    base, h = logits.detach().tolist(), 1e-6
    for i in range(3):
        for k in range(3):
            up = [row[:] for row in base]
            down = [row[:] for row in base]
            up[i][k] += h
            down[i][k] -= h
            numeric = (flattening_by_hand(up, RELAX_LABELS, 1.0) - flattening_by_hand(down, RELAX_LABELS, 1.0)) / (
                2 * h
            )
            assert logits.grad[i, k].item() == pytest.approx(numeric, abs=1e-7)
    # with detached targets the wrong row's gradient would differ
    detached, _ = relax_batch()
    wrong = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    targets = flattened_targets(detached, labels, 1.0).detach()
    ce = torch.nn.functional.cross_entropy(detached, labels, reduction="none")
    soft = -(targets * torch.log_softmax(detached, 1)).sum(1)
    (wrong * soft - ce).mean().backward()
    assert not torch.allclose(detached.grad[1], logits.grad[1], atol=1e-3)


def test_relaxloss_ascends_below_alpha_on_even_epochs():
    logits = torch.tensor([[8.0, 0, 0]], requires_grad=True)  # confident and right: loss << alpha
    relaxloss(alpha=1.0)(logits, torch.tensor([0]), 0).backward()
    assert logits.grad[0, 0] > 0  # the step lowers the true logit: gradient ascent on the loss


@pytest.mark.planted
@pytest.mark.slow
def test_relaxloss_larger_alpha_keeps_a_higher_training_loss():
    from mldoctor_bench.data import load_dataset
    from mldoctor_bench.defenses import TrainingSet

    data = load_dataset("mnist5k", None)
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:200]
    images, labels = data.images[idx], data.labels[idx]
    recipe = Recipe(epochs=16, batch_size=16, lr_milestones=())  # enough steps to fit 200 images
    losses = {}
    for alpha in (0.1, 1.0):
        model = build_model("simple_cnn", 1, 10, 28)
        defense = build_defense({"name": "relaxloss", "alpha": alpha})
        losses[alpha] = defense.fit(model, TrainingSet(images, labels, recipe, 0, lambda: None))["train_loss"]
    # measured (seed 0): train loss 0.065 at alpha 0.1, 1.059 at alpha 1.0
    assert losses[1.0] > losses[0.1] + 0.4
    assert losses[1.0] > 0.6 and losses[0.1] < 0.4


@pytest.mark.planted
@pytest.mark.slow
def test_dp_sgd_at_large_noise_brings_meminf_auc_towards_chance(small_cell, tmp_path):
    from sklearn.metrics import roc_auc_score

    from attack_fixtures import prepared_cell
    from mldoctor_bench.attacks.signals import loss_and_confidence
    from mldoctor_bench.threat_models import BlackBoxAccess

    def loss_threshold_auc(cell):
        """AUC of the loss-threshold attack on all of target-train vs target-test (200 + 200):
        no attack model to fit, so the number reflects the target's leakage alone."""
        access = BlackBoxAccess(cell.target.model, cell.plan.device)
        scores, labels = [], []
        for quarter, member in (("target_train", 1), ("target_test", 0)):
            idx = getattr(cell.splits, quarter)
            loss, _ = loss_and_confidence(access.log_posteriors(cell.data.images[idx]), cell.data.labels[idx])
            scores.append(-loss)
            labels += [member] * len(idx)
        return roc_auc_score(labels, torch.cat(scores).numpy())

    auc_none = loss_threshold_auc(small_cell)  # 200 per quarter, 80 epochs, no defense
    dp_cell = prepared_cell(
        tmp_path,
        "threat_model=blackbox_partial",
        "train.epochs=30",
        "defense=dp_sgd",
        "defense.noise_multiplier=8.0",
        "defense.target_epsilon=null",
    )  # the quick profile's target, nulled
    auc_dp = loss_threshold_auc(dp_cell)
    metrics = dp_cell.target.manifest["metrics"]
    # measured (seed 0, two threads): none 0.655; DP at noise 8, 30 epochs: 0.502, epsilon 1.46
    assert math.isfinite(metrics["epsilon"]) and metrics["epsilon"] < 2.0
    assert auc_none > 0.55
    assert abs(auc_dp - 0.5) < 0.05
    assert abs(auc_dp - 0.5) < abs(auc_none - 0.5) - 0.05


@pytest.mark.slow
def test_defense_sweep_leaves_utility_attack_and_epsilon_rows_per_defense(run_cli, tmp_path):
    import pandas as pd

    from conftest import TINY

    out = tmp_path / "res"
    defenses = ["none", "dp_sgd", "distillation", "output_labels_only", "relaxloss"]
    proc = run_cli("-m", f"defense={','.join(defenses)}", "threat_model=blackbox_shadow", f"results_dir={out}", *TINY)
    assert proc.returncode == 0, proc.stderr
    merged = list((out / "hydra" / "sweeps").glob("*/results.parquet"))
    assert len(merged) == 1
    table = pd.read_parquet(merged[0])
    assert sorted(table.defense.unique()) == sorted(defenses)
    assert (table.status == "ok").all()
    for name in defenses:
        rows = table[table.defense == name]
        utility = rows[rows.attack == "target"].set_index("metric").value
        assert 0 <= utility["test_accuracy"] <= 1
        auc = rows[(rows.attack == "membership") & (rows.metric == "auc")].value
        assert len(auc) == 1 and 0 <= auc.item() <= 1
    dp = table[(table.defense == "dp_sgd") & (table.attack == "target")].set_index("metric").value
    assert math.isfinite(dp["epsilon"]) and dp["epsilon"] > 0 and dp["delta"] == 1e-5
    assert dp["architecture_changed"] == 0  # SimpleCNN has no BatchNorm
    assert "epsilon" not in set(table[table.defense != "dp_sgd"].metric)
    kd = table[(table.defense == "distillation") & (table.attack == "target")].set_index("metric").value
    assert kd["student_data_disjoint"] == 1
