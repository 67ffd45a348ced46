"""One partition per cell: the quarters and the named pools over the real datasets' sizes, without
loading an image. Pools are pairwise disjoint and meet their minimums, or the partition is refused
with a message that names the sizes and the override that fixes it."""

import itertools

import pytest
import torch

from mldoctor_bench.data.splits import DEFAULT_RESERVE, POOLS, QUARTERS, PartitionError, Splits, partition

# Rows each registry dataset holds (all partitions of the official files), and its classes.
SIZES = {
    "mnist5k": (5_000, 10),
    "fmnist": (70_000, 10),
    "cifar10": (60_000, 10),
    "stl10": (13_000, 10),
    "utkface": (23_705, 4),
    "celeba": (202_599, 8),
}


def assert_disjoint(s: Splits) -> None:
    pools = s.all_pools()
    for (a, x), (b, y) in itertools.combinations(pools.items(), 2):
        common = set(x.tolist()) & set(y.tolist())
        assert not common, f"{a} and {b} share {len(common)} rows"
    for name, idx in pools.items():
        assert len(idx.unique()) == len(idx), f"{name} repeats a row"


@pytest.mark.parametrize("dataset", sorted(SIZES))
@pytest.mark.parametrize("quarter_size", [None, 500, 16])
@pytest.mark.parametrize("distillation", [False, True])
@pytest.mark.parametrize("canaries", [0, 10])
def test_pools_are_disjoint_and_meet_their_minimums(dataset, quarter_size, distillation, canaries):
    n, classes = SIZES[dataset]
    s = partition(
        n,
        seed=0,
        quarter_size=quarter_size,
        transfer_size=None if distillation else 0,
        canary_size=canaries,
        min_heldout=classes,
        dataset=dataset,
    )
    assert_disjoint(s)
    size = quarter_size or int(n * (1 - DEFAULT_RESERVE)) // 4
    assert all(len(s.pool(q)) == size for q in QUARTERS)
    if distillation:  # the student trains on as many rows as its teacher, none of them a member
        assert len(s.pool("transfer")) == len(s.target_train)
    else:
        assert len(s.pool("transfer")) == 0
    assert len(s.pool("canary")) == canaries
    assert len(s.pool("heldout")) >= classes
    # every row is in one pool: nothing is silently dropped between the pools
    assert sum(s.sizes().values()) == n
    if quarter_size is None:  # the reserve: transfer and heldout (with the canaries) each a quarter or more
        assert len(s.pool("heldout")) + canaries >= size


def test_without_quarter_size_the_reserve_comes_out_before_quartering():
    """The old split took n // 4 per quarter and left n % 4 rows: one image of CelebA for a
    distillation student. The reserve keeps a documented share for the pools instead."""
    s = partition(202_599, 0, None, transfer_size=None, min_heldout=8)
    assert len(s.target_train) == 33_766  # (2/3 of 202,599) // 4
    assert len(s.pool("transfer")) == 33_766
    assert len(s.pool("heldout")) == 202_599 - 5 * 33_766


def test_extra_pools_never_change_the_quarters():
    """Target and shadow models are keyed by their quarters: a defense or attack that adds a pool
    must not move them (else a defended and an undefended target would train on different rows)."""
    plain = partition(5_000, 3, 500, transfer_size=0)
    with_pools = partition(5_000, 3, 500, transfer_size=700, canary_size=1_000, heldout_size=100, min_heldout=10)
    for q in QUARTERS:
        assert torch.equal(plain.pool(q), with_pools.pool(q))
    assert torch.equal(partition(5_000, 3, 500, transfer_size=700).pool("transfer"), with_pools.pool("transfer"))
    assert len(with_pools.pool("transfer")) == 700 and len(with_pools.pool("heldout")) == 100


def test_pools_keep_the_permutations_random_order():
    """On the class-sorted embedded digits, pools cut in index order would hold one or two digits."""
    labels = torch.arange(5_000) // 500  # sorted by class, like the embedded file
    s = partition(5_000, 0, 500, transfer_size=None, min_heldout=10)
    assert len(labels[s.pool("transfer")].unique()) == 10
    assert len(labels[s.pool("heldout")].unique()) == 10


def test_a_quarter_size_the_data_cannot_hold_names_sizes_and_fix():
    with pytest.raises(PartitionError) as err:
        partition(120, 0, 500, dataset="tiny")
    message = str(err.value)
    assert "tiny has 120 examples" in message and "500" in message
    assert "data.quarter_size=null" in message and "\n" not in message


def test_too_few_rows_for_the_transfer_pool_is_refused_with_the_fix():
    with pytest.raises(PartitionError, match=r"defense\.transfer_size=100"):
        partition(1_000, 0, 225, transfer_size=None)  # 900 in quarters, 100 left < 225 needed


def test_too_few_rows_for_the_evaluator_is_refused():
    with pytest.raises(PartitionError, match="heldout pool"):
        partition(1_005, 0, 250, min_heldout=10)  # 5 rows left for 10 classes


def test_the_quick_audit_fits_mnist5k_beside_the_quarters_and_the_evaluator():
    """1,000 canaries beside 4 quarters of 500 leave 2,000 heldout rows on the embedded digits."""
    s = partition(5_000, 0, 500, canary_size=1_000, min_heldout=10, dataset="mnist5k")
    assert_disjoint(s)
    assert len(s.pool("canary")) == 1_000 and len(s.pool("heldout")) == 2_000


def test_too_few_rows_for_the_canaries_is_refused_with_the_fix():
    with pytest.raises(PartitionError, match=r"attack\.privacy_audit\.canaries=100"):
        partition(1_000, 0, 225, canary_size=500)  # 900 in quarters, 100 left < 500 canaries


def test_every_pool_is_saved_and_loaded_by_name(tmp_path):
    s = partition(1_000, 1, 100, transfer_size=None, canary_size=50, min_heldout=10)
    s.save(tmp_path / "splits.safetensors")
    t = Splits.load(tmp_path / "splits.safetensors")
    for name in QUARTERS + POOLS:
        assert torch.equal(s.pool(name), t.pool(name)), name
    assert t.digest() == s.digest()
