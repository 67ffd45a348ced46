"""Model inversion: MIFace raises the target's class probability, GMI is scored by a separate
evaluator, the GAN prior is cached, and the grid and tensors land in the attack's folder."""

from dataclasses import replace

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from attack_fixtures import with_settings
from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.attacks.base import ModelService
from mldoctor_bench.attacks.dcgan import DCGAN, upsampling_plan
from mldoctor_bench.attacks.inversion import MIN_TILE, ModelInversion
from mldoctor_bench.attacks.inversion_search import class_cost, miface, miface_starts

# Small settings so that each attack run takes seconds on a CPU.
SMALL = {
    "miface": {"steps": 150, "lr": 0.1, "window": 100, "threshold": 1e-3, "loss": "nll"},
    # 20 GAN epochs (the quick profile's): with 12, a LeNet evaluator recognised only 0.20 of the
    # GMI images (the target's own architecture had judged them far more kindly); with 20, 0.45
    "gan": {"epochs": 20, "lr": 2e-4, "batch_size": 64, "latent_dim": 100, "width": 32},
    "gmi": {"steps": 150, "lr": 1e-2, "momentum": 0.9, "restarts": 2, "weight": 100.0},
    "evaluator_epochs": 5,
    "per_class": 4,
}


def small_context(cell, tm, **changes):
    return with_settings(cell.context("inversion", tm), **{**SMALL, **changes})


def grid_size(columns, side, rows=1):
    tile = side * max(1, -(-MIN_TILE // side))
    return columns * (tile + 2) + 2, rows * (tile + 2) + 2  # save_image pads 2 pixels


@pytest.mark.parametrize("channels,size,base", [(1, 28, 7), (3, 64, 4), (3, 32, 4)])
def test_dcgan_fits_the_dataset_shape(channels, size, base):
    assert upsampling_plan(size)[0] == base
    gan = DCGAN(100, channels, size, width=16).eval()
    images = gan.generator(torch.randn(5, 100))
    assert images.shape == (5, channels, size, size)
    assert images.min() >= -1 and images.max() <= 1
    assert gan.discriminator(images).shape == (5,)


def test_miface_cost_reads_the_softmax_not_the_logits():
    logits = torch.tensor([[4.0, 1.0, 0.0]])
    c = torch.tensor([0])
    p = torch.softmax(logits, 1)[0, 0]
    assert class_cost(logits, c, "one_minus_p").item() == pytest.approx(1 - p.item())
    assert class_cost(logits, c, "nll").item() == pytest.approx(-p.log().item())
    # a shift of every logit leaves the softmax, and so the cost, unchanged
    assert class_cost(logits + 50, c, "one_minus_p").item() == pytest.approx(1 - p.item(), abs=1e-6)
    with pytest.raises(ValueError, match="nll or one_minus_p"):
        class_cost(logits, c, "logit")


def test_miface_stops_early_once_the_cost_is_below_the_threshold():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].weight.mul_(10)  # steep enough that a valid image reaches the threshold
    starts, classes = miface_starts(3, 2, (1, 4, 4), seed=0)
    inv = miface(model, starts, classes, steps=5000, lr=1.0, window=100, threshold=0.05)
    assert (inv.extra["steps"] < 5000).all()
    assert (inv.extra["cost"] < 0.05).all()
    assert inv.images.min() >= -1 and inv.images.max() <= 1


class ConstantEvaluator(ModelService):
    """A model service whose evaluator always answers class 0 (and that delegates everything else)."""

    def __init__(self, real: ModelService, num_classes: int) -> None:
        self.real = real
        self.model = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
        self.num_classes = num_classes

    def classifier(self, role, images, targets, epochs=None, arch=None):
        assert role == "evaluator"
        self.model(images[:1].float())
        with torch.no_grad():
            self.model[1].weight.zero_()
            self.model[1].bias.copy_(torch.eye(self.num_classes)[0])
        return self.model

    def cached(self, role, payload, build, train):
        return self.real.cached(role, payload, build, train)


class RecordingService(ModelService):
    def __init__(self, real: ModelService) -> None:
        self.real, self.reused = real, []

    def classifier(self, *args, **kwargs):
        return self.real.classifier(*args, **kwargs)

    def cached(self, role, payload, build, train):
        stored = self.real.cached(role, payload, build, train)
        self.reused.append((role, stored.reused))
        return stored


@pytest.mark.planted
@pytest.mark.slow
def test_miface_raises_the_targets_probability_of_every_class(small_cell):
    ctx = small_context(small_cell, "whitebox_none")
    model = ctx.target.model
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    start = torch.zeros(10, 1, 28, 28)
    with torch.no_grad():
        before = torch.softmax(model(start), 1).diagonal()
    inv = miface(model, start, torch.arange(10), steps=150, lr=0.1, window=100, threshold=1e-3)
    with torch.no_grad():
        after = torch.softmax(model(inv.images), 1).diagonal()
    assert (after > before).all(), (before, after)
    assert after.mean() > 0.5 > before.mean()
    # the input was differentiated, not the weights: their gradients are as training left them
    for before_grad, p in zip(grads, model.parameters()):
        assert (p.grad is None) if before_grad is None else torch.equal(p.grad, before_grad)


@pytest.mark.slow
def test_miface_run_reports_metrics_and_writes_grid_and_tensors(small_cell):
    ctx = small_context(small_cell, "whitebox_none")
    metrics = ATTACKS.get("inversion")().run(ctx)["miface"]
    assert {"mse", "mse_start", "eval_accuracy", "eval_accuracy_se", "target_confidence", "evaluator_accuracy"} <= set(
        metrics
    )
    assert metrics["target_confidence"] > 3 / 10, metrics
    assert 0 < metrics["mse"] < 1 and 0 <= metrics["eval_accuracy"] <= 1
    assert metrics["reconstructions"] == 40
    p = metrics["eval_accuracy"]
    assert metrics["eval_accuracy_se"] == pytest.approx((p * (1 - p) / 40) ** 0.5)
    png = ctx.out_dir / "inversion_miface.png"
    assert Image.open(png).size == grid_size(10, 28, rows=4)
    saved = load_file(str(ctx.out_dir / "inversion_miface.safetensors"))
    assert saved["images"].shape == (40, 1, 28, 28)
    # the first start of each class is mid grey (Fredrikson et al.), the others are not copies of it
    assert torch.allclose(saved["starts"][0], torch.full((1, 28, 28), 0.5))
    assert not torch.equal(saved["images"][0], saved["images"][1])
    assert 0 <= saved["images"].min() and saved["images"].max() <= 1
    assert saved["target_probability"].mean().item() == pytest.approx(metrics["target_confidence"], abs=1e-5)
    # MIFace's baseline: the same search from the same starts, guided by the control model (the cell's
    # shadow model, which never saw the training data), per class; its grid beside the target's
    assert sum(metrics[f"control_hits_class_{c}"] for c in range(10)) == round(metrics["no_target_eval_accuracy"] * 40)
    assert Image.open(ctx.out_dir / "inversion_miface_no_target.png").size == grid_size(10, 28, rows=4)


@pytest.mark.planted
@pytest.mark.slow
def test_gmi_recovers_classes_that_a_separate_evaluator_recognises(small_cell):
    ctx = small_context(small_cell, "whitebox_shadow")
    metrics = ATTACKS.get("inversion")().run(ctx)["gmi"]
    assert metrics["evaluator_accuracy"] > 0.8  # a competent judge...
    assert metrics["eval_accuracy"] >= 0.3, metrics  # ...agrees at 3x chance or more
    assert metrics["target_confidence"] > 0.5
    assert Image.open(ctx.out_dir / "inversion_gmi.png").size == grid_size(10, 28, rows=4)
    saved = load_file(str(ctx.out_dir / "inversion_gmi.safetensors"))
    assert saved["latent"].shape == (40, 100) and saved["latent"].abs().max() <= 1
    # what needs no target: the same search from the same latents, guided by a model that never saw the
    # training data (the shadow model), judged by the same evaluator; per class, the hits of both
    assert 0 <= metrics["no_target_eval_accuracy"] <= 1
    target_hits = [metrics[f"target_hits_class_{c}"] for c in range(10)]
    control_hits = [metrics[f"control_hits_class_{c}"] for c in range(10)]
    assert all(0 <= h <= 4 for h in target_hits + control_hits)
    assert sum(target_hits) == round(metrics["eval_accuracy"] * 40)
    assert sum(control_hits) == round(metrics["no_target_eval_accuracy"] * 40)
    baseline = metrics["no_target_eval_accuracy"]
    assert metrics["eval_accuracy_over_baseline"] == pytest.approx(metrics["eval_accuracy"] - baseline)
    assert Image.open(ctx.out_dir / "inversion_gmi_no_target.png").size == grid_size(10, 28, rows=4)


@pytest.mark.slow
def test_gmi_accuracy_comes_from_the_evaluator_not_the_target(small_cell):
    ctx = small_context(small_cell, "whitebox_shadow")
    ctx = replace(ctx, models=ConstantEvaluator(ctx.models, ctx.num_classes))
    metrics = ATTACKS.get("inversion")().run(ctx)["gmi"]
    assert metrics["eval_accuracy"] == pytest.approx(0.1)  # only the class-0 image matches
    assert metrics["target_accuracy"] > 0.5  # while the target agrees far more often


@pytest.mark.slow
def test_gan_prior_is_trained_once_then_reused(small_cell):
    ctx = small_context(small_cell, "whitebox_shadow", gan={**SMALL["gan"], "epochs": 1, "width": 8})
    service = RecordingService(ctx.models)
    ctx = replace(ctx, models=service)
    first = ModelInversion.train_or_load_gan(ctx)
    second = ModelInversion.train_or_load_gan(ctx)
    assert service.reused == [("gan", False), ("gan", True)]
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())


@pytest.mark.parametrize("threat_model", ["whitebox_none", "whitebox_shadow"])
def test_a_cell_running_inversion_alone_trains_the_control_model(threat_model):
    """The control search needs the shadow model under (W,N) too, where no threat model asks for it."""
    from types import SimpleNamespace

    from mldoctor_bench.cell.targets import needs_shadow

    assert needs_shadow(SimpleNamespace(attacks=["inversion"], threat_models=[threat_model]))
    assert not needs_shadow(SimpleNamespace(attacks=["membership_metric"], threat_models=["blackbox_partial"]))
