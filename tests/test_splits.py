import torch

from mldoctor_bench.data import four_quarters
from mldoctor_bench.data.splits import QUARTERS, Splits


def test_quarters_are_equal_disjoint_and_cover_the_capped_size():
    s = four_quarters(1003, seed=7)
    parts = [getattr(s, q) for q in QUARTERS]
    assert all(len(p) == 250 for p in parts)
    union = torch.cat(parts)
    assert len(union.unique()) == 1000  # disjoint
    assert union.min() >= 0 and union.max() < 1003


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = four_quarters(400, 1), four_quarters(400, 1), four_quarters(400, 2)
    assert all(torch.equal(getattr(a, q), getattr(b, q)) for q in QUARTERS)
    assert not torch.equal(a.target_train, c.target_train)
    assert a.digest() == b.digest() != c.digest()


def test_split_does_not_depend_on_global_rng_state():
    torch.manual_seed(0)
    a = four_quarters(400, 3)
    torch.rand(1000)
    b = four_quarters(400, 3)
    assert torch.equal(a.shadow_test, b.shadow_test)


def test_quarter_size_caps_and_rejects_too_large():
    s = four_quarters(1000, 0, quarter_size=10)
    assert len(s.target_train) == 10
    try:
        four_quarters(100, 0, quarter_size=26)
    except ValueError as exc:
        assert "cannot cut 4 quarters" in str(exc)
    else:
        raise AssertionError("quarter_size larger than n/4 must fail")


def test_saved_indices_round_trip(tmp_path):
    s = four_quarters(200, 5)
    s.save(tmp_path / "splits.safetensors")
    t = Splits.load(tmp_path / "splits.safetensors")
    assert all(torch.equal(getattr(s, q), getattr(t, q)) for q in QUARTERS)


def test_partial_halves_of_class_sorted_data_cover_every_class():
    from mldoctor_bench.data.base import ImageData
    from mldoctor_bench.knowledge import attacker_knowledge
    from mldoctor_bench.threat_models import THREAT_MODELS

    # 10 classes stored in label order, like the embedded MNIST file
    data = ImageData("sorted", torch.zeros(1000, 1, 8, 8, dtype=torch.uint8), torch.arange(1000) // 100, 10)
    splits = four_quarters(len(data), 0, quarter_size=200)
    knowledge, evaluation = attacker_knowledge(THREAT_MODELS.get("blackbox_partial"), data, splits, None)
    for part in (knowledge.members, knowledge.nonmembers, evaluation.members, evaluation.nonmembers):
        assert len(part.labels.unique()) == 10
