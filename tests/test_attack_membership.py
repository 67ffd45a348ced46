"""Learned MemInf on a small overfit target: it learns, and it beats chance."""

import pytest
import torch

from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.attacks.attack_model import fit_attack_model
from mldoctor_bench.attacks.membership import loss_and_confidence, posterior_features


def test_attack_model_training_lowers_its_loss():
    torch.manual_seed(0)
    x = torch.randn(400, 3)
    y = (x[:, 0] + 0.3 * torch.randn(400) > 0).float()
    fitted = fit_attack_model([x[:, :2], x[:, 2:]], y, epochs=20, lr=1e-3, batch_size=64, seed=0)
    assert fitted.losses[-1] < 0.8 * fitted.losses[0]
    scores = fitted.member_scores([x[:, :2], x[:, 2:]])
    assert ((scores > 0.5).float() == y).float().mean() > 0.8


def test_features_survive_float32_saturation():
    # logit margins of 40 and 60: float32 softmax gives exactly 1.0 for both
    logits = torch.tensor([[40.0, 0.0], [60.0, 0.0]], dtype=torch.float64)
    assert torch.softmax(logits.float(), 1)[:, 0].tolist() == [1.0, 1.0]
    lp = torch.log_softmax(logits, 1)
    loss, conf = loss_and_confidence(lp, torch.tensor([0, 0]))
    assert conf[1] - conf[0] == pytest.approx(20.0, abs=1e-6)
    groups = posterior_features(lp, torch.tensor([0, 0]))
    assert not torch.equal(groups[1][0], groups[1][1])


@pytest.mark.planted
@pytest.mark.slow
@pytest.mark.parametrize("tm", ["blackbox_shadow", "blackbox_partial"])
def test_blackbox_meminf_beats_chance_on_an_overfit_target(small_cell, tm):
    metrics = ATTACKS.get("membership")().run(small_cell.context("membership", tm))[""]
    assert metrics["auc"] > 0.55, metrics
    assert metrics["n_members"] == metrics["n_nonmembers"]


def test_per_sample_gradients_equal_one_at_a_time_backward():
    from mldoctor_bench.attacks.membership import head_gradients
    from mldoctor_bench.data.base import normalise
    from mldoctor_bench.models import build_model

    torch.manual_seed(0)
    model = build_model("simple_cnn", 1, 10, 28).eval()
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([0, 3, 3, 9, 1, 5])
    batched = head_gradients(model, images, labels, batch_size=4)
    for i in range(6):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(normalise(images[i : i + 1])), labels[i : i + 1])
        loss.backward()
        assert torch.allclose(batched[i], model.head.weight.grad, atol=1e-6)
    assert not torch.allclose(batched[0], batched[1])  # not a shared or cumulative sum


@pytest.mark.planted
@pytest.mark.slow
@pytest.mark.parametrize("tm", ["whitebox_shadow", "whitebox_partial"])
def test_whitebox_meminf_saves_scores_and_beats_chance_with_shadow_data(small_cell, tm):
    import pandas as pd

    ctx = small_cell.context("membership", tm)
    metrics = ATTACKS.get("membership")().run(ctx)[""]
    if tm == "whitebox_shadow":  # (W,P) learns from only 100+100 examples here: too noisy to bound
        assert metrics["auc"] > 0.55, metrics
    scores = pd.read_parquet(ctx.out_dir / "scores.parquet")
    assert len(scores) == metrics["n_members"] + metrics["n_nonmembers"]
    assert set(scores.label) == {0, 1}


def test_whitebox_gradient_is_raw_on_the_target_and_order_free_across_networks():
    """(W,P) trains and scores on one network, so the gradient keeps its unit order; (W,S) moves
    from the shadow to the target, so it gets each row's sorted magnitudes."""
    from mldoctor_bench.attacks.membership import TOP_UNITS, head_gradients, whitebox_features
    from mldoctor_bench.knowledge import Labeled
    from mldoctor_bench.models import build_model
    from mldoctor_bench.threat_models import WhiteBoxAccess

    torch.manual_seed(0)
    model = build_model("simple_cnn", 1, 10, 28).eval()
    data = Labeled(torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8), torch.tensor([0, 1, 2, 3, 4]))
    access = WhiteBoxAccess(model, torch.device("cpu"))
    grads = head_gradients(model, data.images, data.labels)
    raw = whitebox_features(access, data, 10, order_free=False)[3]
    assert torch.equal(raw, grads.flatten(1))  # every unit, in the network's own order
    free = whitebox_features(access, data, 10, order_free=True)[3].view(5, 10, TOP_UNITS)
    assert torch.equal(free, grads.abs().sort(dim=2, descending=True).values[:, :, :TOP_UNITS])
    # permuting the embedding units (an equivalent network) leaves the order-free form unchanged
    perm = torch.randperm(model.head.weight.shape[1])
    permuted = grads[:, :, perm]
    assert torch.equal(permuted.abs().sort(dim=2, descending=True).values[:, :, :TOP_UNITS], free)
    assert not torch.equal(permuted.flatten(1), raw)
