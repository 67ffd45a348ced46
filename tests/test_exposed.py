"""Most exposed members: ``save_exposed`` by hand."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mldoctor_bench.attacks.scoring import save_exposed
from mldoctor_bench.cellfiles import EXPOSED
from mldoctor_bench.knowledge import Labeled

COLUMNS = ["variant", "member_position", "label", "score", "image"]


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def random_members(n: int, channels: int, seed: int = 0) -> Labeled:
    g = torch.Generator().manual_seed(seed)
    return Labeled(torch.randint(0, 256, (n, channels, 5, 4), dtype=torch.uint8, generator=g),
                   torch.randint(0, 10, (n,), generator=g))


def test_highest_scoring_members_first_ties_by_position_with_their_labels_and_pixels(tmp_path):
    members = random_members(6, 1)
    # member rows interleaved with non-member rows (which may score higher: they never appear)
    is_member = np.array([0, 1, 1, 0, 1, 1, 1, 1])
    score = np.array([99.0, 0.2, 0.9, 50, 0.5, 0.9, -1, 0.5])
    save_exposed(tmp_path, {"a": (is_member, score), "b": (is_member, -score)}, members, count=4)
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
    save_exposed(tmp_path, {"": (np.ones(40, dtype=int), score)}, members)
    frame = pd.read_parquet(tmp_path / EXPOSED)
    assert len(frame) == 32 and frame.member_position.tolist() == list(np.argsort(-score)[:32])
    for _, row in frame.iterrows():
        assert np.array_equal(decode(row.image), members.images[row.member_position].permute(1, 2, 0).numpy())


def test_per_variant_members_and_a_length_mismatch(tmp_path):
    full, few = random_members(6, 1), random_members(6, 1).head(2)
    scores = {"all": (np.r_[np.ones(6), np.zeros(6)], np.arange(12.0)),
              "capped": (np.r_[np.ones(2), np.zeros(2)], np.array([1.0, 2, 0, 0]))}
    save_exposed(tmp_path, scores, {"all": full, "capped": few})
    frame = pd.read_parquet(tmp_path / EXPOSED)
    assert frame.groupby("variant").size().to_dict() == {"all": 6, "capped": 2}
    assert frame[frame.variant == "capped"].member_position.tolist() == [1, 0]
    with pytest.raises(ValueError, match="'capped' scores 2 member rows but 6 members"):
        save_exposed(tmp_path, scores, full)
