"""QMIA's pieces: its two losses are minimised by what they claim to estimate, each row reads its own
class's head, the scores are as defined (the quantile variant's: the level reached among its grid),
and the threshold flags the stated share of held-out non-members. The planted and null cases are in
tests/test_attack_membership_lira.py, beside LiRA's and RMIA's on the same target."""

import numpy as np
import pytest
import torch

from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.attacks.membership_qmia import (
    QmiaSettings,
    calibrated_threshold,
    gaussian_nll,
    head_of,
    pinball,
    qmia_scores,
    quantile_level_scores,
    quantile_levels,
    split_rows,
)

PHI = torch.randn(5000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 + 1


def test_the_pinball_loss_is_least_at_the_quantile():
    grid = torch.linspace(-8, 10, 3601, dtype=torch.float64)  # steps of 0.005
    for level in (0.5, 0.9, 0.99):
        losses = torch.stack([pinball(q.expand(len(PHI), 1), PHI, torch.tensor([level])) for q in grid])
        assert grid[losses.argmin()].item() == pytest.approx(torch.quantile(PHI, level).item(), abs=0.01)


def test_the_gaussian_loss_is_least_at_the_mean_and_spread():
    best = torch.tensor([PHI.mean(), PHI.std(unbiased=False).log()], requires_grad=True)
    loss = gaussian_nll(best.expand(len(PHI), 2), PHI)
    (gradient,) = torch.autograd.grad(loss, best)
    assert gradient.abs().max() < 1e-9  # a stationary point, and the loss is convex there
    for step in ([0.1, 0], [-0.1, 0], [0, 0.1], [0, -0.1]):
        moved = (best + torch.tensor(step, dtype=torch.float64)).expand(len(PHI), 2)
        assert gaussian_nll(moved, PHI) > loss
    assert PHI.mean().item() == pytest.approx(1.0, abs=0.1)


def test_each_row_reads_the_head_of_its_own_class():
    outputs = torch.arange(12.0).view(2, 6)  # 2 rows, 3 classes x 2 outputs
    assert head_of(outputs, torch.tensor([2, 0]), 2).tolist() == [[4.0, 5.0], [6.0, 7.0]]
    assert head_of(outputs, torch.tensor([1, 5]), 1).tolist() == [[1.0], [11.0]]


def test_scores_are_z_or_the_level_reached_among_the_predicted_quantiles():
    phi = torch.tensor([0.0, 2.0, 2.4, 5.0], dtype=torch.float64)
    gaussian = torch.tensor([[1.0, 0.0], [1.0, np.log(2.0)], [0.0, 0.0], [1.0, np.log(0.5)]], dtype=torch.float64)
    levels = torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)
    assert np.allclose(qmia_scores("gaussian", gaussian, phi, levels), [-1.0, 0.5, 2.4, 8.0])
    odds = torch.logit(levels).numpy()  # 0, 2.197, 4.595
    slope = (odds[-1] - odds[0]) / 2.0  # over the row's whole grid, 0 to 2
    quantiles = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64).expand(5, 3)
    reached = quantile_level_scores(quantiles, torch.tensor([0.5, 2.0, 1.0, 3.0, -1.0], dtype=torch.float64), levels)
    expected = [odds[1] / 2, odds[2], odds[1], odds[2] + slope, -slope]  # between, at the top, past both ends
    assert np.allclose(reached, expected)
    crossed = torch.tensor([[2.0, 0.0, 1.0]], dtype=torch.float64)  # quantiles that cross are sorted first
    assert np.allclose(quantile_level_scores(crossed, torch.tensor([0.5], dtype=torch.float64), levels), odds[1] / 2)
    assert np.all(np.diff(quantile_level_scores(quantiles[:1].expand(50, 3), torch.linspace(-3, 5, 50), levels)) > 0)


def test_the_grid_is_log_spaced_in_the_tail_up_to_its_top_level():
    levels = quantile_levels(QmiaSettings(quantiles=3, top_level=0.999)).tolist()
    assert np.allclose(levels, [0.9, 0.99, 0.999])
    assert quantile_levels(QmiaSettings()).shape == (20,) and quantile_levels(QmiaSettings())[-1] == 0.999


def test_the_threshold_flags_the_stated_share_of_held_out_non_members():
    held_out = np.random.default_rng(0).normal(size=1000)
    for level in (0.9, 0.99):
        threshold, allowed = calibrated_threshold(held_out, level), round((1 - level) * len(held_out))
        assert threshold in held_out and (held_out > threshold).sum() <= allowed
        assert (held_out >= threshold).sum() >= allowed  # the smallest such score: one lower flags too many
    fit, held = split_rows(10, 0.2, seed=0)
    assert len(held) == 2 and sorted(torch.cat([fit, held]).tolist()) == list(range(10))
    assert torch.equal(held, split_rows(10, 0.2, seed=0)[1]) and not torch.equal(held, split_rows(10, 0.2, seed=1)[1])


def test_no_variant_is_refused_before_training():
    attack = ATTACKS.get("membership_qmia")()
    with pytest.raises(ValueError, match="choose at least one variant"):
        attack.check_settings(attack.Settings(variants=[]))
    assert attack.family == "membership" and attack.threat_models == ("blackbox_shadow",)


def test_the_regressor_of_an_architecture_with_fixed_outputs_gets_a_head_of_the_wanted_width():
    """An owner's model.factory ignores the number of outputs asked for; QMIA still needs 2 per class."""
    from mldoctor_bench.attacks.base import ModelService

    class FixedOutputs(ModelService):
        def builder(self, arch):
            return lambda channels, outputs, size: torch.nn.Sequential(
                torch.nn.Flatten(), torch.nn.Linear(channels * size * size, 10)
            )

    images = torch.rand(3, 1, 28, 28)
    regressor = FixedOutputs().untrained("owner-x", 1, 20, 28)
    assert regressor(images).shape == (3, 20) and regressor.training
    registry = ModelService().untrained("simple_cnn", 1, 20, 28)  # the registry's own head: no extra layer
    assert not isinstance(registry, torch.nn.Sequential) and registry(images).shape == (3, 20)


def test_the_regressor_draws_nothing_from_the_global_generator_so_it_may_train_in_threads():
    """Why its model request is thread-safe: a request that is not makes its whole group sequential."""
    from mldoctor_bench.attacks.membership_qmia import fit_regressor, variant_loss
    from mldoctor_bench.models import build_model

    model = build_model("simple_cnn", 1, 20, 28)
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    phi = torch.randn(40, 10)
    before = torch.random.get_rng_state()
    settings = QmiaSettings(epochs=2, batch_size=16)
    fit_regressor(model, images, phi, variant_loss("gaussian", settings), settings, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
