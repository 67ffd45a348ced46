"""Every registered attack under every threat model it declares, on tiny hand-built data.

The settings are the real composed config of the tiny profile (every size a few steps), the
contexts come from the real splits, knowledge and access objects (``hand_context``), and the
attacker's own models are trained for one epoch. Each run either returns finite metrics as
plain data (variant -> metric -> float) or raises :class:`AttackSkipped` with a reason.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from hydra import compose, initialize_config_module

from hand_context import hand_context, noise_data
from mldoctor_bench.attacks import ATTACKS, AttackSkipped
from mldoctor_bench.attacks.base import ModelService
from mldoctor_bench.data.splits import four_quarters
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.models import build_model
from mldoctor_bench.store import ModelStore
from mldoctor_bench.training import Recipe, train_classifier

QUARTER, SIZE, CLASSES = 16, 8, 4

TINY_RECIPE = Recipe(epochs=1, batch_size=16)

PAIRS = [(a, tm) for a in ATTACKS.names() for tm in ATTACKS.get(a).threat_models]


class TinyModels(ModelService):
    """The attacker's own models: the target's architecture trained for one epoch, nothing stored."""

    def classifier(self, role, images, targets, epochs=None, arch=None):
        model = build_model(arch or "simple_cnn", images.shape[1], CLASSES, images.shape[-1])
        recipe = replace(TINY_RECIPE, epochs=int(epochs or 1))
        return train_classifier(model, images, targets, recipe, seed=0)

    def cached(self, role, payload, build, train):
        return ModelStore(None).get_or_train(payload, build, train)


@pytest.fixture(scope="module")
def settings():
    attacks = f"attack=[{','.join(ATTACKS.names())}]"
    with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
        return compose("config", overrides=[attacks, "profile=tiny"]).attack


@pytest.fixture(scope="module")
def data():
    return noise_data(QUARTER, SIZE, CLASSES, attribute=True)


@pytest.fixture(scope="module")
def target(data):
    torch.manual_seed(0)
    idx = four_quarters(len(data), 0).target_train
    model = build_model("simple_cnn", 1, CLASSES, SIZE)
    return train_classifier(model, data.images[idx], data.labels[idx], replace(TINY_RECIPE, epochs=2), seed=0)


def test_every_attack_declares_known_threat_models():
    from mldoctor_bench.threat_models import THREAT_MODELS

    for name in ATTACKS.names():
        declared = ATTACKS.get(name).threat_models
        assert declared and set(declared) <= set(THREAT_MODELS.names()), name


@pytest.mark.parametrize("attack,tm", PAIRS, ids=[f"{a}-{t}" for a, t in PAIRS])
def test_attack_returns_finite_metrics_or_a_reason(attack, tm, settings, data, target, tmp_path):
    torch.manual_seed(0)
    attack_obj = ATTACKS.get(attack)()
    attack_obj.check_settings(settings[attack])
    splits = four_quarters(len(data), 0)
    ctx = hand_context(tm, data, target, {}, tmp_path, models=TinyModels())
    heldout = Labeled.take(data, torch.cat([splits.target_test, splits.shadow_test]))
    ctx = replace(ctx, settings=settings[attack], heldout=heldout)
    try:
        results = attack_obj.run(ctx)
    except AttackSkipped as exc:
        assert str(exc).strip(), f"{attack} under {tm} skipped without a reason"
        return
    assert isinstance(results, dict) and results, f"{attack} under {tm} returned no variant"
    for variant, metrics in results.items():
        assert isinstance(variant, str) and isinstance(metrics, dict) and metrics, (variant, metrics)
        for metric, value in metrics.items():
            assert isinstance(metric, str) and isinstance(value, (int, float)), (variant, metric, value)
            assert math.isfinite(value), f"{attack} under {tm}: {variant}/{metric} = {value}"
