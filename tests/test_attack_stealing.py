"""Model stealing: what the surrogate is trained on, how it is scored, and that it copies a target."""

import pytest
import torch

from hand_context import hand_context
from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.attacks.base import ModelService
from mldoctor_bench.data.base import ImageData
from mldoctor_bench.metrics import agreement
from mldoctor_bench.models import build_model
from mldoctor_bench.training import accuracy, predict_logits


class RecordingModels(ModelService):
    """A model service that records what each model would be trained on and returns ``model``."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def classifier(self, role, images, targets, epochs=None, arch=None):
        self.calls.append({"role": role, "images": images, "targets": targets, "epochs": epochs})
        return self.model


@pytest.fixture
def target():
    torch.manual_seed(0)
    return build_model("simple_cnn", 1, 4, 8)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (400, 1, 8, 8), dtype=torch.uint8, generator=g)
    return ImageData("noise", images, torch.randint(0, 4, (400,), generator=g), 4)


def steal(tm, data, target, tmp_path, budget=None):
    service = RecordingModels(target)
    ctx = hand_context(tm, data, target, {"epochs": 7, "budget": budget}, tmp_path, models=service)
    return ATTACKS.get("stealing")().run(ctx), ctx, service


def test_agreement_counts_matching_predictions():
    assert agreement([0, 1, 2, 3], [0, 1, 1, 3]) == 0.75
    with pytest.raises(ValueError, match="differ in length"):
        agreement([0, 1], [0])


def test_a_perfect_copy_agrees_everywhere(data, target, tmp_path):
    results, ctx, _ = steal("blackbox_shadow", data, target, tmp_path)
    test = ctx.evaluation.target_test
    assert results["posteriors"]["agreement"] == 1.0
    assert results["posteriors"]["accuracy"] == pytest.approx(accuracy(target, test.images, test.labels))


def test_the_baseline_trains_on_the_same_images_with_their_true_labels(data, target, tmp_path):
    results, ctx, service = steal("blackbox_partial", data, target, tmp_path, budget=37)
    surrogate, baseline = service.calls
    assert baseline["role"] == "stealing-baseline" and baseline["epochs"] == 7
    assert torch.equal(baseline["images"], surrogate["images"])
    assert torch.equal(baseline["targets"], ctx.knowledge.members.labels[:37])  # no query answers
    row = results["posteriors"]
    # the recording service hands back the target for both: both copies agree everywhere
    assert row["baseline_agreement"] == row["agreement"] == 1.0 and row["agreement_over_baseline"] == 0.0
    assert row["only_attack_right"] == row["only_baseline_right"] == 0.0  # nothing to tell them apart


def test_posteriors_variant_trains_on_the_targets_probability_rows(data, target, tmp_path):
    results, ctx, service = steal("blackbox_shadow", data, target, tmp_path)
    call, _ = service.calls
    assert "posteriors" in call["role"] and "blackbox_shadow" in call["role"] and call["epochs"] == 7
    assert torch.equal(call["images"], ctx.knowledge.data.images)  # both shadow quarters
    soft = call["targets"]
    assert soft.dtype == torch.float32 and soft.shape == (200, 4)
    assert torch.allclose(soft.sum(1), torch.ones(200), atol=1e-5)
    assert torch.allclose(soft, torch.softmax(predict_logits(target, call["images"]), 1), atol=1e-5)
    assert results["posteriors"]["queries"] == 200


def test_label_only_variant_sees_labels_and_nothing_else(data, target, tmp_path):
    results, ctx, service = steal("blackbox_label_only", data, target, tmp_path)
    assert not hasattr(ctx.target, "posteriors")
    assert set(results) == {"labels"}
    call, _ = service.calls
    assert "labels" in call["role"]
    assert call["targets"].dtype == torch.int64 and call["targets"].dim() == 1
    assert torch.equal(call["targets"], predict_logits(target, call["images"]).argmax(1))


def test_partial_queries_only_its_part_of_target_train(data, target, tmp_path):
    _, ctx, service = steal("blackbox_partial", data, target, tmp_path)
    assert torch.equal(service.calls[0]["images"], ctx.knowledge.members.images)
    assert len(service.calls[0]["images"]) == 50  # half of a 100-image target-train


def test_budget_caps_the_queries(data, target, tmp_path):
    results, ctx, service = steal("blackbox_shadow", data, target, tmp_path, budget=37)
    assert results["posteriors"]["queries"] == 37
    assert len(service.calls[0]["images"]) == 37
    # 37 queries to build the surrogate, then the target-test labels for scoring agreement
    assert ctx.target.queries == 37 + len(ctx.evaluation.target_test)


@pytest.mark.planted
@pytest.mark.slow
@pytest.mark.parametrize("tm", ["blackbox_shadow", "blackbox_label_only"])
def test_a_trained_surrogate_agrees_with_a_trained_target(small_cell, tm):
    results = ATTACKS.get("stealing")().run(small_cell.context("stealing", tm))
    (metrics,) = results.values()
    assert metrics["agreement"] > 0.7, metrics  # chance is about 0.1 on ten digits
    assert metrics["queries"] == 400
