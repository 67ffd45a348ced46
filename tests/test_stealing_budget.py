"""Model stealing as budget curves: the query strategies, the transfer attack, the settings' checks,
the report's curves and the verdict's reading of the largest budget."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mldoctor_bench.attacks import query_selection as qs
from mldoctor_bench.attacks.stealing_budget import StealingBudget, StealingBudgetSettings
from mldoctor_bench.attacks.transfer import pgd
from mldoctor_bench.inference import predict_logits
from mldoctor_bench.models import build_model
from mldoctor_bench.report import stealing_curves
from mldoctor_bench.report.verdicts import largest_budgets


class Brightness(nn.Module):
    """Two classes by mean brightness: confident on dark and bright images, unsure on mid-grey ones."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(8.0))

    def forward(self, x):
        m = x.mean((1, 2, 3))
        return torch.stack([m * self.scale, -m * self.scale], 1)


def grey_images(levels):
    return torch.tensor(levels, dtype=torch.uint8)[:, None, None, None].expand(-1, 1, 4, 4).contiguous()


def test_k_center_takes_the_farthest_point_then_the_next():
    features = torch.tensor([[0.0], [1.0], [10.0], [11.0], [5.0]])
    picked = qs.k_center(features, torch.tensor([0]), 2)
    assert picked.tolist() == [3, 4]  # 11 is farthest from 0; then 5 is farthest from {0, 11}


def test_activethief_uncertainty_queries_the_least_certain_images_after_a_random_first_round():
    levels = list(range(0, 256, 8))  # 32 grey levels; mid-grey is where the model is unsure
    images = grey_images(levels)
    fits = []

    def fit(rows):
        fits.append(rows.clone())
        return Brightness()

    order = qs.activethief_order(images, [4, 10], "uncertainty", fit, torch.Generator().manual_seed(3))
    first = qs.random_order(len(images), torch.Generator().manual_seed(3))[:4]
    assert torch.equal(order[:4], first) and len(fits) == 1 and torch.equal(fits[0], first)
    assert len(set(order.tolist())) == 10
    rest = [i for i in range(len(levels)) if i not in first.tolist()]
    closest = sorted(rest, key=lambda i: abs(levels[i] - 127.5))[:6]
    assert sorted(order[4:].tolist()) == sorted(closest)


def test_knockoff_adaptive_draws_every_image_at_most_once_and_is_reproducible():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8, generator=g)
    actions = torch.arange(30) % 3
    answers = torch.softmax(torch.randn(30, 4, generator=g), 1)

    def run(budget):
        torch.manual_seed(0)
        knockoff = build_model("simple_cnn", 1, 4, 8)
        return qs.knockoff_adaptive_order(images, actions, budget, answers, knockoff, torch.Generator().manual_seed(5))

    full = run(30)
    assert sorted(full.tolist()) == list(range(30))  # exhausted arms leave the bandit
    assert torch.equal(run(12), full[:12])


def test_the_all_reward_is_arts():
    """ART's ``KnockoffNets`` "all" reward, component by component and standardised, on the same
    released probabilities and knockoff outputs (logits, as ART's thieved classifier gives them). ART's
    loss reward softmaxes the victim's output, taking it for logits; it is handed the probabilities'
    log, whose softmax they are (the paper's loss is on the probabilities)."""
    from art.attacks.extraction import KnockoffNets
    from art.estimators.classification import BlackBoxClassifier

    class OnProbabilities(KnockoffNets):
        def _reward_loss(self, y_output, y_hat):
            return super()._reward_loss(np.log(y_output), y_hat)

    g = torch.Generator().manual_seed(1)
    answers = torch.softmax(3 * torch.randn(6, 5, generator=g, dtype=torch.float64), 1)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64)
    peer = OnProbabilities(BlackBoxClassifier(lambda x: x, (5,), 5), reward="all", verbose=False)
    peer.y_avg, peer.reward_avg, peer.reward_var = np.zeros(5), np.zeros(3), np.zeros(3)
    ours, parts = qs.RewardAll(5), qs.RewardAll(5)
    for n in range(6):
        answer, hat = answers[n : n + 1].numpy(), logits[n : n + 1].numpy()
        cert, _, loss = parts.components(answers[n], torch.softmax(logits[n], 0)).tolist()
        assert cert == pytest.approx(peer._reward_cert(answer), abs=1e-12)
        assert loss == pytest.approx(peer._reward_loss(answer, hat), rel=1e-9)
        theirs = peer._reward_all(answer, hat, n + 1)  # diversity inside: it updates the mean answer once
        assert ours(answers[n], torch.softmax(logits[n], 0)) == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert np.allclose(peer.y_avg, parts.mean_answer.numpy()) and np.allclose(peer.reward_var, ours.var.numpy())


def test_pgd_stays_in_its_bound_and_fools_the_model_it_is_crafted_on():
    torch.manual_seed(0)
    model = build_model("simple_cnn", 1, 4, 8)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    labels = predict_logits(model, images).argmax(1)
    adversarial = pgd(model, images, labels, epsilon=16, steps=10)
    assert adversarial.dtype == torch.uint8
    assert (adversarial.int() - images.int()).abs().max() <= 16
    assert (predict_logits(model, adversarial).argmax(1) != labels).float().mean() > 0.5


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"budgets": [500, 100]}, "increasing order"),
        ({"strategies": ["random", "random"]}, "each strategy once"),
        ({"pool": "/no/such/folder"}, "is not a folder"),
    ],
)
def test_bad_settings_are_refused_before_any_query(changes, message):
    settings = StealingBudgetSettings(epochs=1, **changes)
    with pytest.raises(ValueError, match=message):
        StealingBudget().check_settings(settings)


def curve_frame():
    rows = []
    for seed in (0, 1):
        for strategy, budget, agreement in [
            ("random", 500, 0.80),
            ("random", 1000, 0.90),
            ("knockoff_adaptive", 500, 0.92),
            ("knockoff_adaptive", 1000, 0.95),
        ]:
            for metric, value in [
                ("agreement", agreement + seed / 100),
                ("queries", budget),
                ("baseline_agreement", 0.7),
            ]:
                rows.append(
                    dict(
                        dataset="d",
                        arch="a",
                        defense="none",
                        attack="stealing_budget",
                        threat_model="blackbox_shadow",
                        variant=f"{strategy}@{budget}",
                        seed=seed,
                        family="stealing",
                        metric=metric,
                        value=value,
                        status="ok",
                    )
                )
    return pd.DataFrame(rows)


def test_curves_average_the_seeds_and_compare_half_the_budget_with_random():
    table = stealing_curves.curves(curve_frame())
    point = table[(table["strategy"] == "knockoff_adaptive") & (table["budget"] == 500)].iloc[0]
    assert point["agreement"] == pytest.approx(0.925) and point["seeds"] == 2
    [line] = stealing_curves.half_budget_check(table)
    assert "knockoff_adaptive at 500 queries agrees 0.925" in line and "random at 1000 0.905" in line


def test_the_verdict_reads_the_largest_budget_and_leaves_other_stealing_attacks_alone():
    frame = curve_frame()
    plain = frame.iloc[:3].assign(attack="stealing", variant="posteriors")
    kept = largest_budgets(pd.concat([frame, plain], ignore_index=True))
    assert set(kept["variant"]) == {"random@1000", "knockoff_adaptive@1000", "posteriors"}


def test_a_pool_folder_is_read_at_the_targets_shape_with_its_subfolders_as_arms(tmp_path):
    from PIL import Image

    from mldoctor_bench.attacks.stealing_budget import load_pool_folder

    for name, colour in (("cars", (200, 10, 10)), ("trees", (10, 200, 10))):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (40, 30), colour).save(tmp_path / name / f"{i}.png")
    pool = load_pool_folder(tmp_path, torch.zeros(1, 1, 28, 28, dtype=torch.uint8))  # grey 28 x 28 targets
    assert pool.images.shape == (6, 1, 28, 28) and pool.images.dtype == torch.uint8
    assert pool.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert pool.images[0].float().mean() != pool.images[3].float().mean()  # the colours, converted to grey
    StealingBudget().check_settings(StealingBudgetSettings(epochs=1, pool=str(tmp_path)))  # accepted
