"""The privacy distance of inversion: nearer to the training images than to unseen ones only where a
reconstruction carries something of the training images."""

import pytest
import torch

from mldoctor_bench.attacks.privacy_distance import balanced, distance_gaps, nearest
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.models import build_model


def images(n, generator):
    return torch.randint(0, 256, (n, 1, 16, 16), dtype=torch.uint8, generator=generator)


def as_inputs(x):
    return x.float() / 127.5 - 1.0


@pytest.fixture
def sets():
    g = torch.Generator().manual_seed(0)
    classes = torch.arange(10).repeat_interleave(5)  # a handful of images per class, as a small target's
    training, unseen, third = (Labeled(images(50, g), classes) for _ in range(3))
    torch.manual_seed(0)
    return training, unseen, third, build_model("simple_cnn", 1, 10, 16)


def test_nearest_is_per_class():
    pool = torch.tensor([[0.0], [10.0], [3.0]])
    d = nearest(torch.tensor([[1.0], [9.0]]), torch.tensor([0, 0]), pool, torch.tensor([0, 1, 0]))
    assert d.tolist() == [1.0, 6.0]  # the class-1 row at 10 is never a candidate


def test_balanced_keeps_as_many_of_each_set_per_class():
    a = Labeled(torch.zeros(7, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 0, 0, 1, 1, 1, 1]))
    b = Labeled(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1, 1]))
    rows_a, rows_b = balanced(a, b, 2, seed=0)
    assert sorted(a.labels[rows_a].tolist()) == sorted(b.labels[rows_b].tolist()) == [0, 1, 1, 1]


def test_reconstructions_of_training_images_are_nearer_to_them_and_others_are_not(sets):
    """Planted: noisy copies of the training images sit nearer to them than to unseen images of their
    class in every class; noisy copies of a third set of images (what a model that never saw the
    training images could give at best) do not, on average over classes."""
    training, unseen, third, evaluator = sets
    noise = torch.randn(50, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.2
    found = {"leaked_": as_inputs(training.images) + noise, "blind_": as_inputs(third.images) + noise}
    both = distance_gaps(evaluator, found, training.labels, training, unseen, 10, 0)  # third has the same labels
    leaked, blind = ({k[len(p) :]: v for k, v in both.items() if k.startswith(p)} for p in found)
    gaps = [leaked[f"distance_gap_class_{c}"] for c in range(10)]
    assert min(gaps) > 0 and leaked["distance_gap"] == pytest.approx(sum(gaps) / 10)
    null_gaps = [blind[f"distance_gap_class_{c}"] for c in range(10)]
    spread = torch.tensor(null_gaps).std().item()
    assert abs(blind["distance_gap"]) < 2 * spread / 10**0.5 + 1e-9  # within two standard errors of 0
    assert leaked["distance_gap"] > 5 * spread
