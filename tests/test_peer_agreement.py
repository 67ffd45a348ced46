"""Independent checks against a peer library: IBM's Adversarial Robustness Toolbox (ART).

ART's ``MembershipInferenceBlackBoxRuleBased`` (the correctness / gap attack: "member" iff the
model's prediction is right) is run on the same target's released posteriors, on the same
evaluation examples, as our ``membership_metric`` correctness variant. Both are deterministic
functions of the same outputs, so the tolerance is zero: identical per-example decisions and
identical metrics. ART's low-FPR ROC reading is checked against ours on the saved scores too.
"""

import copy
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from art.attacks.inference.membership_inference import MembershipInferenceBlackBoxRuleBased
from art.estimators.classification import BlackBoxClassifier

from attack_fixtures import with_settings
from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.metrics import membership_metrics


@pytest.mark.slow
@pytest.mark.parametrize("tm", ["blackbox_shadow", "blackbox_partial"])
def test_correctness_attack_agrees_with_art_rule_based(small_cell, tm):
    ctx = with_settings(small_cell.context("membership_metric", tm), variants=["correctness"])
    ours = ATTACKS.get("membership_metric")().run(ctx)["correctness"]
    saved = pd.read_parquet(ctx.out_dir / "scores.parquet")
    our_decisions = (saved.score.to_numpy() >= 0.5).astype(int)

    ev = ctx.evaluation
    m = min(len(ev.members), len(ev.nonmembers))
    images = torch.cat([ev.members.images[:m], ev.nonmembers.images[:m]])
    labels = torch.cat([ev.members.labels[:m], ev.nonmembers.labels[:m]])
    is_member = np.r_[np.ones(m), np.zeros(m)].astype(int)

    def released_posteriors(x: np.ndarray) -> np.ndarray:
        # ART refuses uint8 input; the float32 copies it hands back hold whole uint8 values
        return ctx.target.posteriors(torch.from_numpy(np.asarray(x)).to(torch.uint8)).numpy()

    peer = BlackBoxClassifier(released_posteriors, tuple(images.shape[1:]), ctx.num_classes)
    one_hot = np.eye(ctx.num_classes)[labels.numpy()]
    art_decisions = MembershipInferenceBlackBoxRuleBased(peer).infer(images.numpy().astype(np.float32), one_hot)

    assert np.array_equal(saved.label.to_numpy(), is_member)
    assert art_decisions.shape == our_decisions.shape == (2 * m,)
    assert np.array_equal(art_decisions, our_decisions)
    theirs = membership_metrics(is_member, art_decisions, art_decisions)
    for key in ("accuracy", "precision", "recall", "f1", "auc", "advantage"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key
    # the check is not vacuous: the attack decides both ways and is right more often than not
    assert 0 < art_decisions.mean() < 1 and ours["accuracy"] > 0.5


@pytest.mark.slow
def test_low_fpr_metrics_agree_with_art(small_cell):
    """Our TPR at 0.1% and 1% FPR of every metric attack equals ART's ``get_roc_for_fpr`` on the
    scores the attack saved (both read the same ROC, so again to the last bit)."""
    from art.metrics.privacy.worst_case_mia_score import get_roc_for_fpr

    ctx = small_cell.context("membership_metric", "blackbox_shadow")
    ours = ATTACKS.get("membership_metric")().run(ctx)
    saved = pd.read_parquet(ctx.out_dir / "scores.parquet")
    for variant, rows in saved.groupby("variant"):
        for fpr in (0.001, 0.01):
            [(_, tpr, _)] = get_roc_for_fpr(rows.score.to_numpy(), rows.label.to_numpy(), targeted_fpr=fpr)
            assert ours[variant][f"tpr_at_fpr_{fpr:g}"] == pytest.approx(tpr, abs=1e-12), (variant, fpr)


BATCH = 16  # the peer cell's batch size
BUDGET = 600  # queries of its 800-image pool


class Normalised(torch.nn.Module):
    """A registry model taking ART's float grey levels in [0, 255] (ours normalise ``uint8`` input
    to [-1, 1] before the model: :func:`mldoctor_bench.inference.model_inputs`)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x / 127.5 - 1.0).contiguous(memory_format=torch.channels_last))


def art_thief(recipe, shape: tuple, classes: int):
    """ART's thieved classifier: SimpleCNN with our recipe's SGD; its final fit (the one of several
    epochs) starts from the initial weights, as ours does, with our recipe's step decay (ART goes on
    from the model it updated one query at a time, and has no schedule of its own)."""
    from art.estimators.classification import PyTorchClassifier

    from mldoctor_bench.models import build_model
    from mldoctor_bench.training import sgd_with_schedule, step_decay

    model = Normalised(build_model("simple_cnn", shape[0], classes, shape[-1]))
    initial = copy.deepcopy(model.state_dict())
    optimiser, _ = sgd_with_schedule(model, recipe)

    class Scheduled(PyTorchClassifier):
        def fit(self, x, y, batch_size=128, nb_epochs=10, **kwargs):
            if nb_epochs > 1:
                self.model.load_state_dict(initial)
                self.optimizer.state.clear()
                for group in self.optimizer.param_groups:
                    group["lr"], group["initial_lr"] = recipe.lr, recipe.lr
                kwargs["scheduler"] = step_decay(self.optimizer, recipe)
            return super().fit(x, y, batch_size=batch_size, nb_epochs=nb_epochs, **kwargs)

    return Scheduled(model, torch.nn.CrossEntropyLoss(), shape, classes, optimizer=optimiser, clip_values=(0, 255))


def knockoff_as_ours(pool_size: int):
    """ART's ``KnockoffNets`` (bandit, rewards, training) with two choices ours makes otherwise: an
    image is never queried twice (ART draws a class's images with replacement), and the loss reward
    is on the released probabilities (ART softmaxes the victim's output, taking it for logits)."""
    from art.attacks.extraction import KnockoffNets

    class AsOurs(KnockoffNets):
        queried = np.zeros(pool_size, dtype=bool)

        def _sample_data(self, x, y, action):
            left = np.flatnonzero((y.argmax(1) == action) & ~self.queried)
            if len(left) == 0:  # the class is exhausted (ours then leaves the arm): any image not queried
                left = np.flatnonzero(~self.queried)
            pick = np.random.choice(left)
            self.queried[pick] = True
            return x[pick]

        def _reward_loss(self, y_output, y_hat):
            return super()._reward_loss(np.log(np.maximum(y_output, 1e-300)), y_hat)

    return AsOurs


def art_knockoff_agreement(ctx, pool, strategy: str, budget: int, epochs: int, seed: int) -> float:
    """ART's Knockoff Nets (:func:`knockoff_as_ours`, :func:`art_thief`) on the target's released
    posteriors, the pool and budget given: its surrogate's agreement with the target on target-test."""
    from mldoctor_bench.training import Recipe

    np.random.seed(seed)
    torch.manual_seed(seed)
    recipe, shape, classes = Recipe(epochs=epochs, batch_size=BATCH), tuple(pool.images.shape[1:]), ctx.num_classes
    thief = art_thief(recipe, shape, classes)

    def released(x: np.ndarray) -> np.ndarray:
        return ctx.target.posteriors(torch.from_numpy(np.asarray(x)).to(torch.uint8)).numpy()

    victim = BlackBoxClassifier(released, shape, classes, clip_values=(0, 255))
    attack = knockoff_as_ours(len(pool))(
        victim,
        batch_size_fit=recipe.batch_size,
        batch_size_query=256,
        nb_epochs=epochs,
        nb_stolen=budget,
        sampling_strategy=strategy,
        verbose=False,
    )
    x = pool.images.numpy().astype(np.float32)
    stolen = attack.extract(
        x, np.eye(classes)[pool.labels.numpy()] if strategy == "adaptive" else None, thieved_classifier=thief
    )
    test = ctx.evaluation.target_test
    predicted = stolen.predict(test.images.numpy().astype(np.float32)).argmax(1)
    return float((predicted == ctx.target.labels(test.images).numpy()).mean())


@pytest.fixture(scope="module")
def peer_cell(tmp_path_factory):
    """A cell of 400 images a quarter (the attacker's pool: its 800 shadow images) and a batch of 16
    (600 queries then make 38 SGD steps an epoch: the surrogates converge in 30 epochs)."""
    from attack_fixtures import prepared_cell

    return prepared_cell(
        tmp_path_factory.mktemp("peer-cell"),
        "attack=[stealing_budget]",
        "threat_model=[blackbox_shadow]",
        f"train.batch_size={BATCH}",
        "data.quarter_size=400",
    )


@pytest.mark.slow
@pytest.mark.parametrize("ours, theirs", [("random", "random"), ("knockoff_adaptive", "adaptive")])
def test_knockoff_nets_agree_with_art(peer_cell, ours, theirs):
    """Knockoff Nets as ART runs it (with ours' three choices: no image queried twice, the loss
    reward on probabilities, the surrogate trained afresh on the queries; see
    :func:`knockoff_as_ours` and :func:`art_thief`) and as ``stealing_budget`` runs it, on the same target (its
    posteriors released; both train on their argmax, ART's default), the same pool (the attacker's
    800 shadow images), budget (600 queries) and surrogate recipe (the architecture, SGD with the
    step decay, batch 16, 30 epochs): the surrogates' agreement with the target on images neither
    saw (target-test and the heldout rows, 3,800), averaged over seeds 0, 1 and 2, within 0.02 of
    each other."""
    from mldoctor_bench.attacks.auxiliary import training_data

    ctx = peer_cell.context("stealing_budget", "blackbox_shadow")
    ctx = with_settings(ctx, strategies=[ours], budgets=[BUDGET], epochs=30, transfer_examples=20, soft_labels=False)
    test, heldout = ctx.evaluation.target_test, ctx.heldout
    unseen = Labeled(torch.cat([test.images, heldout.images]), torch.cat([test.labels, heldout.labels]))
    ctx = replace(ctx, evaluation=replace(ctx.evaluation, target_test=unseen))
    pool = training_data(ctx)
    assert len(pool) == 800 and len(unseen) == 3800
    mine, art = [], []
    for seed in range(3):
        row = ATTACKS.get("stealing_budget")().run(replace(ctx, seed=seed))[f"{ours}@{BUDGET}"]
        mine.append(row["agreement"])
        art.append(art_knockoff_agreement(ctx, pool, theirs, BUDGET, 30, seed))
    print(f"{ours}: ours {mine}, ART {art}")
    assert 0.5 < np.mean(mine) < 1 and 0.5 < np.mean(art) < 1  # both steal something, neither everything
    assert abs(np.mean(mine) - np.mean(art)) <= 0.02
