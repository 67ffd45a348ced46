"""Label-only MemInf: augmentations, the query-budgeted noise-robustness and HopSkipJump boundary
searches, labels-only access."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from attack_fixtures import with_settings
from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.attacks.hop_skip_jump import HopSkipJump, hop_skip_jump
from mldoctor_bench.attacks.membership_label_only import (
    Augmentation,
    NoiseSearch,
    augmentation_correctness,
    augmentation_set,
    boundary_distances,
    noise_robustness_distances,
)
from mldoctor_bench.data.base import normalise
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.models import Classifier
from mldoctor_bench.threat_models import BlackBoxAccess, LabelOnlyAccess

CPU = torch.device("cpu")


def test_translation_moves_content_and_fills_with_zeros():
    img = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3)
    down = Augmentation(1, 0)(img)[0, 0]
    assert down.tolist() == [[0, 0, 0], [1, 2, 3], [4, 5, 6]]
    left = Augmentation(0, -1)(img)[0, 0]
    assert left.tolist() == [[2, 3, 0], [5, 6, 0], [8, 9, 0]]
    assert Augmentation(0, 0, flip=True)(img)[0, 0].tolist() == [[3, 2, 1], [6, 5, 4], [9, 8, 7]]


def test_augmentation_set_sizes():
    assert len(augmentation_set(0, False)) == 1
    assert len(augmentation_set(1, False)) == 5  # identity + 4 one-pixel moves
    assert len(augmentation_set(2, False)) == 9  # identity + (+-2,0), (0,+-2), (+-1,+-1)
    assert len(augmentation_set(1, True)) == 10
    assert augmentation_set(1, False)[0] == Augmentation(0, 0, False)


def linear_model(dim=64, classes=3):
    """A linear classifier on 8x8 images: its exact distance to the boundary is computable."""
    torch.manual_seed(0)
    model = Classifier(nn.Flatten(), nn.Linear(dim, classes))
    return model.eval()


def exact_boundary_distance(model, images):
    """Smallest L2 distance (normalised units) to a label change, ignoring the [0,255] box."""
    x = normalise(images).flatten(1).double()
    w, b = model.head.weight.detach().double(), model.head.bias.detach().double()
    logits = x @ w.T + b
    pred = logits.argmax(1)
    dists = []
    for i in range(len(x)):
        gaps = [
            (logits[i, pred[i]] - logits[i, j]) / (w[pred[i]] - w[j]).norm() for j in range(w.shape[0]) if j != pred[i]
        ]
        dists.append(min(gaps))
    return torch.stack(dists), pred


class Uint8OnlyAccess(LabelOnlyAccess):
    """Label access that refuses anything but a batch of valid images, as a served model would."""

    def labels(self, images):
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 8, 8), (images.dtype, images.shape)
        return super().labels(images)


def test_noise_robustness_search_respects_budget_and_never_undercuts_the_true_distance():
    model = linear_model()
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    exact, pred = exact_boundary_distance(model, images)
    labels = pred.clone()
    labels[:5] = (pred[:5] + 1) % 3  # five misclassified examples
    access = Uint8OnlyAccess(model, CPU)
    search = NoiseSearch(budget=20, directions=4, levels=3, max_rms=2.0, rel_tolerance=0.001)
    dist, queries = noise_robustness_distances(
        access, Labeled(images, labels), search, torch.Generator().manual_seed(0)
    )
    assert access.queries == int(queries.sum())  # every query went through the access object
    assert int(queries.max()) <= 20
    assert dist[:5].tolist() == [0.0] * 5 and queries[:5].tolist() == [1] * 5
    # each distance is that of a submitted image whose label changed: never below the exact minimum
    assert (dist[5:] >= exact[5:] - 1e-4).all()
    assert (dist[5:] > 0).all()


def test_noise_robustness_budget_below_the_direction_search_is_refused():
    with pytest.raises(ValueError, match=r"queries_per_example=10 .* 1 \+ directions \* levels = 13"):
        NoiseSearch(budget=10, directions=4, levels=3)


def linear_float_problem(n=100, dim=64, classes=3, seed=0):
    """A linear classifier on float points well inside [-1, 1], and each point's exact distance to
    its decision boundary: min over j != y of ((w_y - w_j).x + b_y - b_j) / ||w_y - w_j||."""
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(classes, dim, generator=g), 0.1 * torch.randn(classes, generator=g)
    x = torch.rand(n, dim, generator=g) - 0.5
    logits = x @ w.T + b
    y = logits.argmax(1)
    gaps = (logits.gather(1, y[:, None]) - logits) / (w[y][:, None] - w[None]).norm(dim=2)
    exact = gaps.masked_fill(torch.nn.functional.one_hot(y, classes).bool(), float("inf")).min(1).values
    return x, y, exact, lambda p: (p @ w.T + b).argmax(1)


def test_hop_skip_jump_ranks_points_by_their_exact_linear_boundary_distance():
    # Measured: Spearman 0.977, median estimate / exact 1.51, 78 batched calls for all 100 points.
    x, y, exact, labels_of = linear_float_problem()
    calls = []

    def counted(points):
        calls.append(len(points))
        return labels_of(points)

    search = HopSkipJump(budget=200, iterations=5)
    est, queries = hop_skip_jump(counted, x, y, search, torch.Generator().manual_seed(0), box=None)
    assert spearmanr(est, exact)[0] >= 0.9
    # every estimate is the distance of a point whose label was seen to differ: never below the exact one
    assert (est >= exact - 1e-5).all()
    assert float((est / exact).median()) < 1.8  # and the search got most of the way down
    assert int(queries.max()) <= search.budget - 1  # the clean query is the caller's
    assert sum(calls) == int(queries.sum())
    # one batched call per bisection, gradient estimate and step halving, whatever the number of points
    per_iteration = 1 + search.step_halvings + search.bisections()
    assert len(calls) <= search.bisections() + search.iterations * per_iteration


def test_hop_skip_jump_in_small_memory_slices_keeps_its_estimate(monkeypatch):
    import mldoctor_bench.attacks.hop_skip_jump as hsj

    monkeypatch.setattr(hsj, "CHUNK_ELEMENTS", 10 * 64)  # 10 points per chunk, one probe per call
    x, y, exact, labels_of = linear_float_problem()
    est, queries = hop_skip_jump(labels_of, x, y, HopSkipJump(200, 5), torch.Generator().manual_seed(0), box=None)
    assert spearmanr(est, exact)[0] >= 0.9 and (est >= exact - 1e-5).all()
    assert int(queries.max()) <= 199


def test_hop_skip_jump_improves_with_iterations():
    x, y, exact, labels_of = linear_float_problem(seed=1)
    ratios = []
    for budget, iterations in [(60, 1), (1000, 15)]:
        est, _ = hop_skip_jump(
            labels_of, x, y, HopSkipJump(budget, iterations), torch.Generator().manual_seed(0), box=None
        )
        ratios.append(float((est / exact).median()))
    assert ratios[1] < 1.15 < ratios[0], ratios


def test_hop_skip_jump_starts_from_noise_when_no_point_is_labelled_otherwise():
    x, y, exact, labels_of = linear_float_problem(n=100)
    alone = (y == y[0]).nonzero().squeeze(1)  # one class only: no start in the batch
    est, queries = hop_skip_jump(labels_of, x[alone], y[alone], HopSkipJump(200, 5), torch.Generator().manual_seed(0))
    assert torch.isfinite(est).all() and (est >= exact[alone] - 1e-5).all()
    assert int(queries.min()) >= 1


def test_boundary_search_queries_valid_images_within_budget_and_never_undercuts_the_true_distance():
    model = linear_model()
    images = torch.randint(64, 192, (100, 1, 8, 8), dtype=torch.uint8)
    exact, pred = exact_boundary_distance(model, images)
    labels = pred.clone()
    labels[:5] = (pred[:5] + 1) % 3  # five misclassified examples
    access = Uint8OnlyAccess(model, CPU)
    search = HopSkipJump(budget=150, iterations=4)
    dist, queries = boundary_distances(access, Labeled(images, labels), search, torch.Generator().manual_seed(0))
    assert access.queries == int(queries.sum())  # every query went through the access object
    assert int(queries.max()) <= 150
    assert dist[:5].tolist() == [0.0] * 5 and queries[:5].tolist() == [1] * 5
    # each distance is that of a submitted image whose label changed: never below the exact minimum
    assert (dist[5:] >= exact[5:] - 1e-4).all()
    assert spearmanr(dist[5:], exact[5:])[0] >= 0.8


def test_hop_skip_jump_budget_too_small_for_its_searches_is_refused():
    with pytest.raises(ValueError, match=r"hsj_queries=50 .* hsj_iterations=5 .* at least \d+"):
        HopSkipJump(budget=50, iterations=5)


def quick_label_only(ctx, **changes):
    return with_settings(
        ctx,
        **{
            "boundary_examples": 40,
            "queries_per_example": 25,
            "directions": 4,
            "hsj_queries": 60,
            "hsj_iterations": 2,
            **changes,
        },
    )


@pytest.mark.slow
def test_label_only_attack_uses_labels_alone(small_cell, monkeypatch):
    ctx = quick_label_only(small_cell.context("membership_label_only", "blackbox_label_only"))
    assert isinstance(ctx.target, LabelOnlyAccess) and not isinstance(ctx.target, BlackBoxAccess)
    assert not hasattr(ctx.target, "log_posteriors") and not hasattr(ctx.target, "posteriors")

    def refuse(*args, **kwargs):
        raise AssertionError("a label-only attack asked for posteriors")

    # not even the attacker's own shadow model may be read for posteriors
    monkeypatch.setattr(BlackBoxAccess, "log_posteriors", refuse)
    monkeypatch.setattr(BlackBoxAccess, "posteriors", refuse)
    results = ATTACKS.get("membership_label_only")().run(ctx)
    aug, noise, bnd = results["augmentation"], results["noise_robustness"], results["boundary"]
    assert aug["queries_per_example"] == aug["augmentations"] == 5
    assert noise["queries_max"] <= noise["query_budget"] == 25
    assert bnd["queries_max"] <= bnd["query_budget"] == 60
    n_aug = aug["n_members"] + aug["n_nonmembers"]
    n_noise = noise["n_members"] + noise["n_nonmembers"]
    n_bnd = bnd["n_members"] + bnd["n_nonmembers"]
    assert n_noise == n_bnd == 80
    assert ctx.target.queries == pytest.approx(
        5 * n_aug + noise["queries_per_example"] * n_noise + bnd["queries_per_example"] * n_bnd
    )
    scores = pd.read_parquet(ctx.out_dir / "scores.parquet")
    # each score names its example: its pool of the partition, dataset index and class
    assert list(scores.columns) == ["score", "label", "variant", "role", "index", "class"]
    assert ((scores.role == "target_train") == (scores.label == 1)).all()
    assert scores.groupby("variant").size().to_dict() == {
        "augmentation": n_aug,
        "noise_robustness": n_noise,
        "boundary": n_bnd,
    }


@pytest.mark.planted
@pytest.mark.slow
def test_augmentation_attack_finds_members_on_an_overfit_target(small_cell):
    # Measured on this cell: AUC 0.59; members' mean correct-augmentation fraction above non-members'.
    ctx = with_settings(small_cell.context("membership_label_only", "blackbox_label_only"), variants=["augmentation"])
    metrics = ATTACKS.get("membership_label_only")().run(ctx)["augmentation"]
    assert metrics["auc"] > 0.55, metrics
    augs = augmentation_set(1, False)
    ev = ctx.evaluation
    members = augmentation_correctness(ctx.target, ev.members, augs).mean(1)
    nonmembers = augmentation_correctness(ctx.target, ev.nonmembers, augs).mean(1)
    assert members.mean() > nonmembers.mean() + 0.03, (float(members.mean()), float(nonmembers.mean()))


@pytest.mark.planted
@pytest.mark.slow
@pytest.mark.parametrize("variant", ["noise_robustness", "boundary"])
def test_boundary_distance_is_larger_for_members(small_cell, variant):
    # Measured on this cell (150 + 150 examples, quick budgets): AUC noise_robustness 0.63 (mean
    # distance 16.5 vs 13.5), boundary 0.60 (7.9 vs 6.5, about 116 queries per example).
    ctx = with_settings(small_cell.context("membership_label_only", "blackbox_label_only"), variants=[variant])
    metrics = ATTACKS.get("membership_label_only")().run(ctx)[variant]
    assert metrics["auc"] > 0.55, metrics
    scores = pd.read_parquet(ctx.out_dir / "scores.parquet")
    means = scores.groupby("label").score.mean()
    assert means[1] > means[0]
    assert metrics["queries_max"] <= metrics["query_budget"]
    assert np.isfinite(metrics["threshold"]) and metrics["threshold"] > 0


def deepfool_distances(model, images, labels, steps=50, overshoot=0.02):
    """White-box reference: the L2 distance (normalised units) at which DeepFool (Moosavi-Dezfooli et
    al. 2016) first changes the label, an upper bound on the minimal distance; inf where it does not."""
    x0 = normalise(images)
    x = x0.clone()
    rows = torch.arange(len(x))
    done = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(steps):
        x.requires_grad_(True)
        z = model(x)
        done |= z.argmax(1) != labels
        if done.all():
            break
        grads = torch.stack(
            [torch.autograd.grad(z[:, j].sum(), x, retain_graph=True)[0].flatten(1) for j in range(z.shape[1])], 1
        )
        w = grads - grads[rows, labels][:, None]
        gap = (z - z[rows, labels][:, None]).detach().abs() / w.norm(dim=2).clamp_min(1e-12)
        gap[rows, labels] = float("inf")
        j = gap.argmin(1)
        step = (gap[rows, j] + 1e-4)[:, None] * w[rows, j] / w[rows, j].norm(dim=1, keepdim=True).clamp_min(1e-12)
        with torch.no_grad():
            moved = (x + (1 + overshoot) * step.view_as(x)).clamp(-1, 1)
            x = torch.where(done[:, None, None, None], x, moved).detach()
    dist = (x.detach() - x0).flatten(1).norm(dim=1).double()
    return torch.where(done, dist, torch.full_like(dist, float("inf")))


@pytest.mark.planted
@pytest.mark.slow
def test_boundary_variant_ranks_like_white_box_distances_and_noise_robustness_does_not(small_cell):
    # Measured on this cell (the first 50 + 50 evaluation examples, quick budgets): Spearman with
    # DeepFool's distances 0.70 for HopSkipJump (median 2.3 times DeepFool's distance) and 0.42 for
    # the random-direction search (4.5 times).
    ctx = small_cell.context("membership_label_only", "blackbox_label_only")
    data = Labeled.concat([ctx.evaluation.members.head(50), ctx.evaluation.nonmembers.head(50)])
    model = small_cell.target.model.eval()
    access = LabelOnlyAccess(model, CPU)
    keep = access.labels(data.images) == data.labels
    data = Labeled(data.images[keep], data.labels[keep])
    reference = deepfool_distances(model, data.images, data.labels)
    assert torch.isfinite(reference).all()
    s = ctx.settings
    hsj, _ = boundary_distances(
        access, data, HopSkipJump(s.hsj_queries, s.hsj_iterations, s.hsj_tolerance), torch.Generator().manual_seed(0)
    )
    noise, _ = noise_robustness_distances(
        access,
        data,
        NoiseSearch(s.queries_per_example, s.directions, s.levels, s.max_rms, s.rel_tolerance),
        torch.Generator().manual_seed(0),
    )
    rho_hsj, rho_noise = spearmanr(hsj, reference)[0], spearmanr(noise, reference)[0]
    ratio_hsj, ratio_noise = float((hsj / reference).median()), float((noise / reference).median())
    assert rho_hsj >= 0.6 and rho_hsj > rho_noise + 0.15, (rho_hsj, rho_noise)
    assert ratio_hsj < ratio_noise, (ratio_hsj, ratio_noise)
