"""Every architecture on every dataset's image shape: forward, backward, the uniform embedding."""

import pytest
import torch

from mldoctor_bench.models import ARCHS, build_model

# (channels, side): mnist5k/FMNIST native, CIFAR-10 native, FMNIST at 64, colour at 64, STL-10 native.
SHAPES = [(1, 28), (3, 32), (1, 64), (3, 64), (3, 96)]


@pytest.mark.parametrize("name", ARCHS.names())
@pytest.mark.parametrize("channels,side", SHAPES)
def test_forward_and_backward_reach_every_parameter(name, channels, side):
    torch.manual_seed(0)
    model = build_model(name, channels, 7, side).train()
    x = torch.randn(2, channels, side, side)
    logits = model(x)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 6])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 7
    emb = model.eval().embed(x)
    assert emb.shape == (2, model.embedding_dim)
    assert torch.allclose(model.head(emb), model(x), atol=1e-5)


@pytest.mark.parametrize("name", ARCHS.names())
def test_a_batch_of_one_runs_in_training_and_evaluation(name):
    """A last training batch of one must not trip BatchNorm (no 1x1 maps), nor evaluation on one image."""
    model = build_model(name, 1, 10, 28)
    x = torch.randn(1, 1, 28, 28)
    assert model.train()(x).shape == (1, 10)
    assert model.eval()(x).shape == (1, 10)


@pytest.mark.parametrize("name", ["simple_cnn", "lenet"])
def test_pooling_before_the_relu_trains_exactly_as_relu_then_pool(name):
    """simple_cnn and lenet pool before their ReLUs (less work); the textbook order gives the same
    outputs and gradients to the bit."""
    torch.manual_seed(0)
    model = build_model(name, 1, 10, 28).train()
    textbook = build_model(name, 1, 10, 28).train()
    textbook.load_state_dict(model.state_dict())
    layers = list(textbook.features)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], torch.nn.MaxPool2d) and isinstance(layers[i + 1], torch.nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    textbook.features = torch.nn.Sequential(*layers)
    assert [type(m) for m in textbook.features] != [type(m) for m in model.features]
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for net in (model, textbook):
        torch.nn.functional.cross_entropy(net(x), y).backward()
    assert torch.equal(model(x), textbook(x))
    for (pname, p), q in zip(model.named_parameters(), textbook.parameters()):
        assert torch.equal(p.grad, q.grad), pname
