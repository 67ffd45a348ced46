"""Most exposed members: ``save_exposed`` by hand, and what each membership attack saves on tiny data."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image

from hand_context import hand_context, noise_data
from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.attacks.scoring import save_exposed
from mldoctor_bench.cellfiles import EXPOSED
from mldoctor_bench.data.splits import four_quarters
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.models import build_model
from mldoctor_bench.training import Recipe, train_classifier

COLUMNS = ["variant", "member_position", "label", "score", "image"]
WITH_INDEX = ["variant", "member_position", "index", "label", "score", "image"]  # examples of a dataset


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def random_members(n: int, channels: int, seed: int = 0) -> Labeled:
    g = torch.Generator().manual_seed(seed)
    return Labeled(
        torch.randint(0, 256, (n, channels, 5, 4), dtype=torch.uint8, generator=g),
        torch.randint(0, 10, (n,), generator=g),
    )


def interleaved(members: Labeled, is_member: np.ndarray) -> Labeled:
    """The examples scored: ``members`` at the member rows, other (non-member) images elsewhere."""
    others = random_members(int((is_member == 0).sum()), members.images.shape[1], seed=9)
    rows = torch.as_tensor(np.argsort(np.argsort(-is_member, kind="stable"), kind="stable"))
    return Labeled.concat([members, others]).rows(rows)


def test_highest_scoring_members_first_ties_by_position_with_their_labels_and_pixels(tmp_path):
    members = random_members(6, 1)
    # member rows interleaved with non-member rows (which may score higher: they never appear)
    is_member = np.array([0, 1, 1, 0, 1, 1, 1, 1])
    score = np.array([99.0, 0.2, 0.9, 50, 0.5, 0.9, -1, 0.5])
    scored = interleaved(members, is_member)
    save_exposed(tmp_path, {"a": (is_member, score), "b": (is_member, -score)}, scored, count=4)
    frame = pd.read_parquet(tmp_path / EXPOSED)
    assert list(frame.columns) == COLUMNS
    a, b = frame[frame.variant == "a"], frame[frame.variant == "b"]
    # member scores by position: 0.2, 0.9, 0.5, 0.9, -1, 0.5
    assert a.member_position.tolist() == [1, 3, 2, 5] and a.score.tolist() == [0.9, 0.9, 0.5, 0.5]
    assert b.member_position.tolist() == [4, 0, 2, 5] and b.score.tolist() == [1.0, -0.2, -0.5, -0.5]
    for _, row in frame.iterrows():
        assert row.label == members.labels[row.member_position].item()
        pixels = decode(row.image)
        assert pixels.shape == (5, 4)  # grey: no channel axis
        assert np.array_equal(pixels, members.images[row.member_position, 0].numpy())


def test_colour_images_round_trip_and_count_caps_the_rows(tmp_path):
    members = random_members(40, 3, seed=1)
    score = np.random.default_rng(0).normal(size=40)
    save_exposed(tmp_path, {"": (np.ones(40, dtype=int), score)}, members)  # every row a member
    frame = pd.read_parquet(tmp_path / EXPOSED)
    assert len(frame) == 32 and frame.member_position.tolist() == list(np.argsort(-score)[:32])
    for _, row in frame.iterrows():
        assert np.array_equal(decode(row.image), members.images[row.member_position].permute(1, 2, 0).numpy())


def test_per_variant_members_and_a_length_mismatch(tmp_path):
    full = Labeled.concat([random_members(6, 1), random_members(6, 1, seed=2)])
    few = Labeled.concat([full.head(2), random_members(2, 1, seed=3)])
    scores = {
        "all": (np.r_[np.ones(6), np.zeros(6)], np.arange(12.0)),
        "capped": (np.r_[np.ones(2), np.zeros(2)], np.array([1.0, 2, 0, 0])),
    }
    save_exposed(tmp_path, scores, {"all": full, "capped": few})
    frame = pd.read_parquet(tmp_path / EXPOSED)
    assert frame.groupby("variant").size().to_dict() == {"all": 6, "capped": 2}
    assert frame[frame.variant == "capped"].member_position.tolist() == [1, 0]
    with pytest.raises(ValueError, match="'capped' scores 4 rows but 12 examples"):
        save_exposed(tmp_path, scores, full)


# Tiny data and target, as in test_registered_attacks: big enough that the 32 exposed members are a
# strict subset of the evaluation members.
QUARTER, SIZE, CLASSES = 48, 8, 4


@pytest.fixture(scope="module")
def settings():
    with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
        attacks = "attack=[membership,membership_metric,membership_label_only]"
        return compose("config", overrides=[attacks, "profile=tiny"]).attack


@pytest.fixture(scope="module")
def data():
    return noise_data(QUARTER, SIZE, CLASSES)


@pytest.fixture(scope="module")
def target(data):
    torch.manual_seed(0)
    idx = four_quarters(len(data), 0).target_train
    model = build_model("simple_cnn", 1, CLASSES, SIZE)
    return train_classifier(model, data.images[idx], data.labels[idx], Recipe(epochs=3, batch_size=16), seed=0)


CASES = [
    ("membership", "blackbox_shadow"),
    ("membership", "whitebox_partial"),
    ("membership_metric", "blackbox_partial"),
    ("membership_label_only", "blackbox_label_only"),
]


@pytest.mark.parametrize("attack,tm", CASES, ids=[f"{a}-{t}" for a, t in CASES])
def test_attacks_save_their_top_scored_evaluation_members(attack, tm, settings, data, target, tmp_path):
    torch.manual_seed(0)
    ctx = replace(hand_context(tm, data, target, {}, tmp_path), settings=settings[attack])
    results = ATTACKS.get(attack)().run(ctx)
    members = ctx.evaluation.members
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    exposed = pd.read_parquet(tmp_path / EXPOSED)
    assert list(exposed.columns) == WITH_INDEX
    assert set(exposed.variant) == set(results) == set(scores.variant)
    # every score and exposed member names its example by dataset index: the members' own
    assert set(scores[scores.label == 1]["index"]) <= set(members.index.tolist())
    assert set(scores[scores.label == 0]["index"]) <= set(ctx.evaluation.nonmembers.index.tolist())
    for variant, rows in exposed.groupby("variant"):
        member_scores = scores[(scores.variant == variant) & (scores.label == 1)].score.to_numpy()
        scored = int(results[variant]["n_members"])
        assert len(member_scores) == scored
        if attack == "membership_label_only" and variant != "augmentation":
            # the distance variants score the first boundary_examples members only
            assert scored == settings[attack].boundary_examples < len(members)
        else:
            assert scored == len(members)
        assert len(rows) == min(32, scored)
        positions = rows.member_position.to_numpy().copy()
        assert len(set(positions)) == len(positions) and positions.max() < scored
        # the saved scores are those of the member rows at these positions, highest first
        assert np.array_equal(rows.score.to_numpy(), member_scores[positions])
        assert np.all(np.diff(rows.score.to_numpy()) <= 0)
        assert rows.score.min() >= np.delete(member_scores, positions).max(initial=-np.inf)
        assert rows.label.tolist() == members.labels[positions].tolist()
        assert rows["index"].tolist() == members.index[positions].tolist()
        for pos, png in zip(positions, rows.image):
            assert np.array_equal(decode(png), members.images[pos, 0].numpy())
