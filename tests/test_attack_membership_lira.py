"""LiRA and RMIA: reference masks, Gaussian fits, both scores by hand, and a planted case both must find;
QMIA on the same planted case, and on a target that never saw the candidates."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm

from hand_context import hand_context
from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.attacks.membership_lira import fit_gaussians, lira_scores
from mldoctor_bench.attacks.membership_rmia import (
    choose_offline_a,
    offline_pr,
    out_means,
    rmia_fractions,
    rmia_scores,
    trimmed_means,
)
from mldoctor_bench.attacks.reference_models import (
    OFFLINE,
    ONLINE,
    half_masks,
    paired_masks,
    query_views,
    reference_set,
)
from mldoctor_bench.data import load_dataset
from mldoctor_bench.metrics import membership_metrics
from mldoctor_bench.models import build_model
from mldoctor_bench.report.significance import auc_interval
from mldoctor_bench.threat_models import BlackBoxAccess
from mldoctor_bench.training import train_classifier
from planted_cell import RECIPE, TrainingService, cell_digits, planted_above_others, planted_context


def test_paired_masks_put_every_row_in_half_of_the_references():
    masks = paired_masks(101, 8, seed=3)
    assert masks.shape == (8, 101)
    assert (masks.sum(0) == 4).all()  # every row IN for exactly half
    assert set(masks.sum(1).tolist()) <= {50, 51}  # every reference on about half of the rows
    assert (masks[0::2] ^ masks[1::2]).all()  # pairs are complements
    assert torch.equal(masks, paired_masks(101, 8, seed=3)) and not torch.equal(masks, paired_masks(101, 8, seed=4))
    with pytest.raises(ValueError, match="even"):
        paired_masks(10, 5, seed=0)
    offline = half_masks(101, 3, seed=3)
    assert offline.shape == (3, 101) and (offline.sum(1) == 50).all()


def test_an_odd_number_of_references_is_refused_only_where_online_references_are_needed():
    lira, rmia = ATTACKS.get("membership_lira")(), ATTACKS.get("membership_rmia")()
    with pytest.raises(ValueError, match="num_references=3 must be even .* e.g. 4"):
        lira.check_settings(lira.Settings(num_references=3))
    with pytest.raises(ValueError, match="must be even"):
        rmia.check_settings(rmia.Settings(num_references=3, variants=["online", "offline"]))
    lira.check_settings(lira.Settings(num_references=3, variants=["offline"]))
    rmia.check_settings(rmia.Settings(num_references=3))  # offline only, the default


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


def test_rmia_score_equals_the_pairwise_likelihood_ratio_computed_by_hand():
    # two references; candidate x0 is OUT for both, x1 only for the second
    probs = np.array([[0.2, 0.9], [0.4, 0.5]])
    in_mask = np.array([[False, True], [False, False]])
    assert np.allclose(out_means(probs, in_mask), [0.3, 0.5])
    assert np.isnan(out_means(probs, np.ones_like(in_mask)))[0]
    pr_x = offline_pr(np.array([0.3, 0.5]), a=0.6)  # (1.6 / 2) * mean + 0.2
    assert np.allclose(pr_x, [0.44, 0.6])
    ratio_x = np.array([0.88, 0.3]) / pr_x  # 2.0, 0.5
    ratio_z = np.array([0.5, 1.0, 1.5, 3.0])
    # x0 beats z with 2.0 / ratio_z > gamma: gamma 1 -> 0.5, 1.0, 1.5 (3/4); gamma 2 -> 0.5 only
    assert rmia_fractions(ratio_x, ratio_z, gamma=1.0).tolist() == [0.75, 0.0]
    assert rmia_fractions(ratio_x, ratio_z, gamma=2.0).tolist() == [0.25, 0.0]
    # the score: (beaten + 1/2 + atan(log ratio) / pi) / (|z| + 1)
    expected = [(3 + 0.5 + np.arctan(np.log(2.0)) / np.pi) / 5, (0 + 0.5 + np.arctan(np.log(0.5)) / np.pi) / 5]
    assert np.allclose(rmia_scores(ratio_x, ratio_z, gamma=1.0), expected)


def test_rmia_breaks_ties_by_the_ratio_and_keeps_the_fractions_order():
    ratio_z = np.array([0.5, 1.0, 1.5, 3.0])
    ratio_x = np.array([4.0, 40.0, 3.5, 2.0, 1.2, 0.7, 0.1, 0.01])
    fractions, scores = rmia_fractions(ratio_x, ratio_z, 1.0), rmia_scores(ratio_x, ratio_z, 1.0)
    assert fractions.tolist() == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]  # three tie at 1, two at 0
    assert np.argsort(-scores).tolist() == np.argsort(-ratio_x).tolist()  # the ratio's order, no tie left
    assert len(set(scores.tolist())) == len(scores)
    # wherever fractions differ, scores keep their order
    assert all(
        (scores[i] > scores[j]) == (fractions[i] > fractions[j])
        for i in range(8)
        for j in range(8)
        if fractions[i] != fractions[j]
    )


def test_a_saturating_non_member_no_longer_ties_with_the_exposed_members():
    # 20 exposed members beat every population sample, and so do two non-members, with smaller
    # ratios: as fractions all 22 tie at 1.0, a threshold cannot split the tie, and with 100
    # non-members (one false positive allowed at 1% FPR) TPR falls to what lies below it
    rng = np.random.default_rng(0)
    ratio_z = rng.lognormal(0, 0.5, 1000)
    members = np.r_[np.full(20, 50.0) * rng.uniform(1, 2, 20), rng.lognormal(0, 0.5, 80)]
    nonmembers = np.r_[20.0, 30.0, rng.lognormal(0, 0.5, 98)]
    y = np.r_[np.ones(100), np.zeros(100)]
    ratio_x = np.r_[members, nonmembers]
    assert (rmia_fractions(ratio_x, ratio_z, 1.0)[100:102] == 1.0).all()  # the two non-members saturate
    tied = membership_metrics(y, rmia_fractions(ratio_x, ratio_z, 1.0), np.zeros(200))
    broken = membership_metrics(y, rmia_scores(ratio_x, ratio_z, 1.0), np.zeros(200))
    assert broken["tpr_at_fpr_0.01"] >= 0.20 > tied["tpr_at_fpr_0.01"]


def test_rmia_trimmed_mean_leaves_out_each_ends_share():
    probs = np.array([[0.1, 0.5], [0.2, 0.6], [0.3, 0.7], [0.4, 0.8], [0.9, 0.0]])
    use = np.array([[True, True], [True, True], [True, True], [True, True], [True, False]])
    # column 0: five values, trim 0.2 cuts one from each end -> mean(0.2, 0.3, 0.4); column 1 has four
    # (0.5..0.8), floor(0.8) = 0 cut -> their mean
    assert np.allclose(trimmed_means(probs, use, 0.2), [0.3, 0.65])
    assert np.allclose(trimmed_means(probs, use, 0.0), [0.38, 0.65])
    assert np.allclose(out_means(probs, use), [np.nan, 0.0], equal_nan=True)  # OUT: where use is False


def test_lira_published_conventions_follow_the_authors_plot_py():
    # a transcription of the released plot.py's arithmetic (median per side, np.std of every IN value
    # for both sides when the variance is fixed, two-sided offline) on random signals
    from scipy.stats import norm

    from mldoctor_bench.attacks.membership_lira import lira_scores

    rng = np.random.default_rng(0)
    refs = rng.normal(size=(8, 30)) + np.linspace(-2, 2, 30)
    target = rng.normal(size=30)
    mask = np.zeros((8, 30), dtype=bool)
    mask[::2] = True
    mask[:, ::3] = ~mask[:, ::3]  # four IN and four OUT per candidate, in varying rows
    dat_in = np.array([refs[mask[:, j], j] for j in range(30)])
    dat_out = np.array([refs[~mask[:, j], j] for j in range(30)])
    fixed = np.std(dat_in)
    expected = {
        (True, False): norm.logpdf(target, np.median(dat_in, 1), dat_in.std(1))
        - norm.logpdf(target, np.median(dat_out, 1), dat_out.std(1)),
        (True, True): norm.logpdf(target, np.median(dat_in, 1), fixed)
        - norm.logpdf(target, np.median(dat_out, 1), fixed),
        (False, False): -norm.logpdf(target, np.median(refs, 0), refs.std(0)),
        (False, True): -norm.logpdf(target, np.median(refs, 0), np.std(refs)),
    }
    for (online, fixed_var), want in expected.items():
        got = lira_scores(
            torch.from_numpy(target)[None],
            torch.from_numpy(refs)[None],
            torch.from_numpy(mask) if online else None,
            fixed_var,
            published=True,
        )
        assert np.allclose(got.numpy(), want), (online, fixed_var)


def test_offline_a_is_the_one_that_best_separates_a_stand_in_targets_members():
    # members 0, 1 and non-members 2, 3 of the stand-in; neither the stand-in's probability alone
    # (a = 0) nor its ratio to the OUT mean (a = 1) separates them, a value between does; row 4,
    # which every other reference trained on, is left out
    stand_in = np.array([0.7, 0.4, 0.2, 0.8, 0.99])
    others = np.array([[0.6, 0.1, 0.1, 0.8, 0.01]])
    others_in = np.array([[False, False, False, False, True]])
    members = np.array([1, 1, 0, 0, 0])

    def pairwise_auc(a):
        ratio = stand_in[:4] / offline_pr(others[0, :4], a)
        return np.mean([ratio[m] > ratio[n] for m in (0, 1) for n in (2, 3)])

    a, auc = choose_offline_a(stand_in, others, others_in, members)
    assert pairwise_auc(0.0) == 0.5 and pairwise_auc(1.0) == 0.75
    assert a == 0.3 and auc == pairwise_auc(0.3) == 1.0
    assert all(pairwise_auc(b) < 1.0 for b in (0.0, 0.1, 0.2))  # the first of the best
    with pytest.raises(ValueError, match="more references"):
        choose_offline_a(stand_in, others, np.ones_like(others_in), members)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A target that memorised 6 mislabelled members of 4 x 150 digits, and the attacks' context."""
    return planted_context(tmp_path_factory.mktemp("lira"))


def member_scores(out_dir):
    """Per variant, the saved scores of the members, in the order of the evaluation members."""
    scores = pd.read_parquet(out_dir / "scores.parquet")
    return {variant: rows[rows.label == 1].score.to_numpy() for variant, rows in scores.groupby("variant")}


# Variants whose scores must put every planted member above every other member.
# Per-example variances from 4 IN and 4 OUT references are noisy (Carlini et al. use a fixed variance
# below 64 references), and online RMIA's Pr(x) averages IN references too, which bounds the ratio of
# a memorised example near 2: those variants must only rank the planted members well above the rest.
FIRST = {"membership_lira": ("online_fixed_var", "offline_fixed_var"), "membership_rmia": ("offline",)}


@pytest.mark.slow
@pytest.mark.planted
@pytest.mark.parametrize("name", ["membership_lira", "membership_rmia"])
def test_both_attacks_rank_the_memorised_mislabelled_members_first(planted, name, tmp_path):
    ctx, planted_rows = planted
    attack = ATTACKS.get(name)()
    variants = list(attack.Settings.__dataclass_fields__["variants"].metadata["choices"])
    ctx.settings = attack.Settings(num_references=8, variants=variants, exposed=6)
    ctx.out_dir = tmp_path
    results = attack.run(ctx)
    assert set(results) == set(variants)
    others = [i for i in range(len(ctx.evaluation.members)) if i not in planted_rows]
    for variant, scores in member_scores(tmp_path).items():
        lowest, highest_other = min(scores[i] for i in planted_rows), max(scores[others])
        if variant in FIRST[name]:
            assert lowest > highest_other, variant
        assert planted_above_others(scores, planted_rows) > 0.75, variant
        assert results[variant]["auc"] > 0.6

    # online references never trained on a candidate their mask marks OUT, and on every one marked IN
    refs = reference_set(ctx, ONLINE, 8)
    pool = refs.pool.images.flatten(1)
    for request, mask in zip(refs.requests, refs.masks):
        seen = ctx.models.seen[request.role].flatten(1)
        matches = (pool.unsqueeze(1) == seen.unsqueeze(0)).all(2)  # (pool rows, seen rows)
        assert matches.any(1)[mask].all() and not matches.any(1)[~mask].any()
    offline = reference_set(ctx, OFFLINE, 8)
    candidates_seen = torch.cat([ctx.models.seen[r.role].flatten(1) for r in offline.requests])
    assert not (pool.unsqueeze(1) == candidates_seen.unsqueeze(0)).all(2).any()  # offline: no candidate


QMIA = {"epochs": 40, "lr": 1e-3, "batch_size": 64}  # the quick profile's regressor recipe
# Share of (planted, other member) pairs QMIA must order right; the regressor fits 240 shadow images.
# Measured on this case (scripts/qmia_ablation.py, docs/attacks.md), at 1 and 2 torch threads: gaussian
# 0.869-0.873 (0.83-0.88 over regressor seeds 0-2); quantile, the paper's grid of quantiles, 0.668 and
# 0.832 (0.65-0.83 over seeds), above chance but not reliably above 0.75 at this size, which is why it
# is not a default variant. Each bar holds at both thread counts.
QMIA_PLANTED_FIRST = {"gaussian": 0.75, "quantile": 0.6}


@pytest.mark.slow
@pytest.mark.planted
def test_qmia_ranks_the_memorised_mislabelled_members_above_most(planted, tmp_path):
    ctx, planted_rows = planted
    attack = ATTACKS.get("membership_qmia")()
    ctx.settings = attack.Settings(**QMIA, variants=list(QMIA_PLANTED_FIRST), exposed=6)
    ctx.out_dir = tmp_path
    results = attack.run(ctx)
    ordered = {v: planted_above_others(scores, planted_rows) for v, scores in member_scores(tmp_path).items()}
    print("planted members above others, share of pairs:", ordered)
    assert all(ordered[v] > QMIA_PLANTED_FIRST[v] for v in QMIA_PLANTED_FIRST), ordered
    assert all(results[v]["auc"] > 0.5 for v in QMIA_PLANTED_FIRST), results


@pytest.mark.slow
@pytest.mark.planted
def test_qmia_finds_nothing_on_a_target_that_never_saw_the_candidates(tmp_path):
    data = cell_digits()
    digits = load_dataset("mnist5k", None)
    elsewhere = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))[600:750]
    null = train_classifier(
        build_model("simple_cnn", 1, 10, 28), digits.images[elsewhere], digits.labels[elsewhere], RECIPE, seed=3
    )
    ctx = hand_context("blackbox_shadow", data, null, {}, tmp_path, models=TrainingService())
    attack = ATTACKS.get("membership_qmia")()
    ctx.settings = attack.Settings(**QMIA, variants=list(QMIA_PLANTED_FIRST))
    for variant, r in attack.run(ctx).items():
        low, high = auc_interval(r["auc"], int(r["n_members"]), int(r["n_nonmembers"]))
        assert low <= 0.5 <= high, (variant, r["auc"], low, high)


@pytest.mark.slow
@pytest.mark.parametrize("knows", [True, False])
def test_references_are_trained_and_released_as_the_shadow_model_is(tmp_path, knows):
    from attack_fixtures import prepared_cell

    def first_reference(defense):
        cell = prepared_cell(
            tmp_path / defense,
            "attack=membership_rmia",
            "threat_model=blackbox_shadow",
            f"defense={defense}",
            f"attacker.knows_defense={str(knows).lower()}",
            "data.quarter_size=40",
            "train.epochs=2",
        )
        ctx = cell.context("membership_rmia", "blackbox_shadow")
        return cell, ctx, reference_set(ctx, OFFLINE, 2).requests[0]

    # a training-time defense enters the reference's training (its stored key) when the attacker knows it
    cell, ctx, request = first_reference("relaxloss")
    assert ("relaxloss" in str(cell.models.request_spec(request).store_key(cell.models.shop))) is knows

    # an output-time defense is applied to what the attacker reads from its reference when it knows it
    cell, ctx, request = first_reference("output_rounding")
    [model] = ctx.models.prepare([request])
    images = ctx.knowledge.data.images[:20]
    raw = BlackBoxAccess(model, torch.device("cpu")).log_posteriors(images)
    released = ctx.models.released(model).log_posteriors(images)
    rounded = torch.log(cell.plan.defense.output_transform()(raw.exp()))
    assert torch.equal(released, rounded if knows else raw) and not torch.equal(rounded, raw)
