import pytest
import torch

from mldoctor_bench.models import build_model
from mldoctor_bench.threat_models import (
    THREAT_MODELS,
    BlackBoxAccess,
    LabelOnlyAccess,
    WhiteBoxAccess,
    access_for,
)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("simple_cnn", 1, 10, 28)


def images(n=5):
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)


def test_blackbox_refuses_weights(model):
    access = BlackBoxAccess(model, torch.device("cpu"))
    with pytest.raises(PermissionError, match="black-box"):
        _ = access.model
    public = [n for n in dir(access) if not n.startswith("_")]
    assert all(not isinstance(getattr(access, n, None), torch.nn.Module) for n in public if n != "model")


def test_blackbox_posteriors_are_full_precision_log_probs(model):
    access = BlackBoxAccess(model, torch.device("cpu"))
    lp = access.log_posteriors(images())
    assert lp.dtype == torch.float64
    assert torch.allclose(lp.exp().sum(1), torch.ones(5, dtype=torch.float64))
    assert access.queries == 5


def test_label_only_gives_labels_and_nothing_else(model):
    access = LabelOnlyAccess(model, torch.device("cpu"))
    labels = access.labels(images())
    assert labels.shape == (5,) and labels.dtype == torch.int64
    assert not hasattr(access, "log_posteriors") and not hasattr(access, "posteriors")


def test_whitebox_exposes_the_model(model):
    access = WhiteBoxAccess(model, torch.device("cpu"))
    assert access.model is model


def test_output_transform_post_processes_released_posteriors(model):
    def top1(p):
        return torch.nn.functional.one_hot(p.argmax(1), p.shape[1]).double()

    access = BlackBoxAccess(model, torch.device("cpu"), output_transform=top1)
    p = access.posteriors(images())
    assert set(p.unique().tolist()) <= {0.0, 1.0}


def test_access_for_follows_the_threat_model(model):
    cpu = torch.device("cpu")
    assert type(access_for(THREAT_MODELS.get("blackbox_shadow"), model, cpu)) is BlackBoxAccess
    assert type(access_for(THREAT_MODELS.get("blackbox_label_only"), model, cpu)) is LabelOnlyAccess
    assert type(access_for(THREAT_MODELS.get("whitebox_partial"), model, cpu)) is WhiteBoxAccess
