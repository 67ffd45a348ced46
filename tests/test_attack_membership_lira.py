"""LiRA: reference masks, Gaussian fits, the score by hand, and a planted case it must find."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm

from hand_context import hand_context
from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.attacks.base import ModelService
from mldoctor_bench.attacks.membership_lira import fit_gaussians, lira_scores
from mldoctor_bench.attacks.reference_models import ONLINE, paired_masks, query_views, reference_set
from mldoctor_bench.data import load_dataset
from mldoctor_bench.data.base import ImageData
from mldoctor_bench.models import build_model
from mldoctor_bench.training import Recipe, train_classifier

RECIPE = Recipe(epochs=80, batch_size=16, lr=0.01, lr_milestones=(), precision="fp32")


def test_paired_masks_put_every_row_in_half_of_the_references():
    masks = paired_masks(101, 8, seed=3)
    assert masks.shape == (8, 101)
    assert (masks.sum(0) == 4).all()  # every row IN for exactly half
    assert set(masks.sum(1).tolist()) <= {50, 51}  # every reference on about half of the rows
    assert (masks[0::2] ^ masks[1::2]).all()  # pairs are complements
    assert torch.equal(masks, paired_masks(101, 8, seed=3)) and not torch.equal(masks, paired_masks(101, 8, seed=4))
    with pytest.raises(ValueError, match="even"):
        paired_masks(10, 5, seed=0)


def test_gaussian_fits_recover_known_parameters():
    g = torch.Generator().manual_seed(0)
    mean, std = torch.tensor([-2.0, 0.5, 4.0]), torch.tensor([0.5, 1.0, 3.0])
    observed = mean + std * torch.randn(20000, 3, generator=g, dtype=torch.float64)
    mask = torch.rand(20000, 3, generator=g) < 0.5
    mu, s = fit_gaussians(observed, mask, fixed_var=False)
    assert torch.allclose(mu.float(), mean, atol=0.06) and torch.allclose(s.float(), std, rtol=0.03)
    _, pooled = fit_gaussians(observed, mask, fixed_var=True)
    assert torch.allclose(pooled, (std.double() ** 2).mean().sqrt().expand(3), rtol=0.03)


def test_scores_equal_the_likelihood_ratio_computed_by_hand():
    refs = torch.tensor([[1.0, 0.0], [3.0, 1.0], [2.0, 4.0], [6.0, 2.0]], dtype=torch.float64)  # (refs, candidates)
    in_mask = torch.tensor([[True, False], [True, True], [False, True], [False, False]])
    target = torch.tensor([[2.5, 3.0]], dtype=torch.float64)
    online = lira_scores(target, refs.unsqueeze(0), in_mask, fixed_var=False)
    # candidate 0: IN {1, 3} -> N(2, 1); OUT {2, 6} -> N(4, 2)
    assert online[0].item() == pytest.approx(norm.logpdf(2.5, 2, 1) - norm.logpdf(2.5, 4, 2))
    # candidate 1: IN {1, 4} -> N(2.5, 1.5); OUT {0, 2} -> N(1, 1)
    assert online[1].item() == pytest.approx(norm.logpdf(3.0, 2.5, 1.5) - norm.logpdf(3.0, 1, 1))
    offline = lira_scores(target, refs.unsqueeze(0), None, fixed_var=False)
    mu, sd = refs.mean(0).numpy(), refs.std(0, unbiased=False).numpy()
    assert np.allclose(offline.numpy(), (target[0].numpy() - mu) / sd)  # the one-sided test's z-score


def test_shifted_queries_keep_the_shape_and_blank_the_vacated_band():
    images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4) + 1
    views = query_views(images, flip=True, shift=1)
    assert len(views) == 6 and all(v.shape == images.shape and v.dtype == torch.uint8 for v in views)
    assert torch.equal(views[1], images.flip(-1))
    right = views[2]
    assert (right[..., 0] == 0).all() and torch.equal(right[..., 1:], images[..., :-1])


class TrainingService(ModelService):
    """Trains every classifier asked for with the test recipe; records what each trained on."""

    def __init__(self):
        self.seen = {}

    def classifier(self, role, images, targets, epochs=None, arch=None):
        self.seen[role] = images.clone()
        torch.manual_seed(len(self.seen))
        model = build_model("simple_cnn", images.shape[1], 10, images.shape[-1])
        return train_classifier(model, images, targets, RECIPE, seed=len(self.seen))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A target that memorised 6 mislabelled members of 4 x 150 digits, and LiRA's context."""
    digits = load_dataset("mnist5k", None)
    rows = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))[:600]
    data = ImageData("digits", digits.images[rows], digits.labels[rows].clone(), 10)
    torch.manual_seed(0)
    model = build_model("simple_cnn", 1, 10, 28)
    ctx = hand_context("blackbox_shadow", data, model, {}, tmp_path_factory.mktemp("lira"))
    planted = torch.arange(6)  # the first six members get a wrong label
    labels = ctx.evaluation.members.labels.clone()
    labels[planted] = (labels[planted] + 5) % 10
    members = replace(ctx.evaluation.members, labels=labels)
    ctx.evaluation = replace(ctx.evaluation, members=members)
    train_classifier(model, members.images, members.labels, RECIPE, seed=0)
    ctx.models = TrainingService()
    return ctx, planted


@pytest.mark.slow
def test_online_lira_ranks_the_memorised_mislabelled_members_first(planted):
    ctx, planted_rows = planted
    attack = ATTACKS.get("membership_lira")()
    ctx.settings = attack.Settings(num_references=8, variants=["online", "offline"], exposed=6)
    results = attack.run(ctx)
    exposed = pd.read_parquet(ctx.out_dir / "exposed.parquet")
    top_online = set(exposed[exposed.variant == "online"].member_position)
    assert top_online == set(planted_rows.tolist())
    top_offline = set(exposed[exposed.variant == "offline"].member_position)
    assert len(top_offline & set(planted_rows.tolist())) >= 5
    assert results["online"]["auc"] > 0.5

    # online references never trained on a candidate their mask marks OUT
    refs = reference_set(ctx, ONLINE, 8)
    pool = refs.pool.images.flatten(1)
    for request, mask in zip(refs.requests, refs.masks):
        seen = ctx.models.seen[request.role].flatten(1)
        matches = (pool.unsqueeze(1) == seen.unsqueeze(0)).all(2)  # (pool rows, seen rows)
        assert matches.any(1)[mask].all() and not matches.any(1)[~mask].any()
