"""The one-run privacy audit as an attack: canaries drawn from their own pool, the inclusion mask
saved, rows for both scores, and under DP-SGD a bound that never exceeds the accountant's epsilon."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from safetensors.torch import load_file

from hand_context import CPU
from mldoctor_bench.attacks import ATTACKS, AttackContext, AttackSkipped
from mldoctor_bench.attacks.base import ModelService, ReleasedModel
from mldoctor_bench.attacks.canaries import canary_labels
from mldoctor_bench.attacks.privacy_audit import AuditSettings
from mldoctor_bench.cell import prepared
from mldoctor_bench.cell.plan import cell_partition, plan
from mldoctor_bench.data.base import ImageData
from mldoctor_bench.data.splits import partition
from mldoctor_bench.knowledge import attacker_knowledge
from mldoctor_bench.models import build_model
from mldoctor_bench.threat_models import THREAT_MODELS, BlackBoxAccess, access_for
from mldoctor_bench.training import Recipe, train_classifier

QUARTER, CANARIES, SIZE, CLASSES = 16, 40, 8, 4


class PlainModels(ModelService):
    """The audited copy trained plainly for a few epochs; records what it was trained on."""

    def defended_classifier(self, role, images, labels):
        self.trained_on = len(images)
        model = build_model("simple_cnn", images.shape[1], CLASSES, images.shape[-1])
        train_classifier(model, images, labels, Recipe(epochs=3, batch_size=16), seed=0)
        return ReleasedModel(BlackBoxAccess(model, CPU), {"train_accuracy": 1.0})


def tiny_context(tmp_path, settings: AuditSettings, canary_pool: int = CANARIES) -> AttackContext:
    g = torch.Generator().manual_seed(0)
    n = 4 * QUARTER + canary_pool
    data = ImageData(
        "tiny",
        torch.randint(0, 256, (n, 1, SIZE, SIZE), dtype=torch.uint8, generator=g),
        torch.randint(0, CLASSES, (n,), generator=g),
        CLASSES,
    )
    splits = partition(n, 0, QUARTER, canary_size=canary_pool)
    tm = THREAT_MODELS.get("auditor")
    knowledge, evaluation = attacker_knowledge(tm, data, splits, None)
    model = build_model("simple_cnn", 1, CLASSES, SIZE)
    return AttackContext(
        threat_model=tm,
        target=access_for(tm, model, CPU),
        knowledge=knowledge,
        evaluation=evaluation,
        settings=settings,
        out_dir=tmp_path,
        device=CPU,
        seed=3,
        num_classes=CLASSES,
        models=PlainModels(),
    )


def test_mislabeled_canaries_never_keep_their_label_and_natural_ones_always_do():
    true = torch.arange(1000) % 10
    wrong = canary_labels(true, "mislabeled", 10, torch.Generator().manual_seed(0))
    assert (wrong != true).all() and set(wrong.tolist()) == set(range(10))
    assert torch.equal(canary_labels(true, "natural", 10, torch.Generator()), true)


def test_audit_saves_the_mask_and_reports_both_scores(tmp_path):
    ctx = tiny_context(tmp_path, AuditSettings(canaries=CANARIES))
    results = ATTACKS.get("privacy_audit")().run(ctx)
    assert set(results) == {"loss", "confidence"}
    saved = load_file(str(tmp_path / "canaries.safetensors"))
    included = saved["included"].bool()
    assert len(included) == CANARIES and (saved["training_labels"] != saved["true_labels"]).all()
    # the audited copy saw target-train and exactly the included canaries
    assert ctx.models.trained_on == QUARTER + int(included.sum())
    for metrics in results.values():
        assert metrics["canaries"] == CANARIES and metrics["canaries_included"] == int(included.sum())
        assert 0 <= metrics["correct_guesses"] <= metrics["guesses"] <= CANARIES
        assert metrics["epsilon_lower_bound"] >= 0 and "epsilon" not in metrics  # no DP, no accountant
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    assert len(scores) == 2 * CANARIES and scores["label"].sum() == 2 * int(included.sum())
    # the mask depends on the seed alone
    again = tiny_context(tmp_path / "again", AuditSettings(canaries=CANARIES))
    (tmp_path / "again").mkdir()
    ATTACKS.get("privacy_audit")().run(again)
    assert torch.equal(load_file(str(tmp_path / "again" / "canaries.safetensors"))["included"], saved["included"])


def test_a_pool_smaller_than_the_canaries_is_skipped_with_the_setting_named(tmp_path):
    ctx = tiny_context(tmp_path, AuditSettings(canaries=CANARIES + 1))
    with pytest.raises(AttackSkipped, match=r"attack\.privacy_audit\.canaries=41"):
        ATTACKS.get("privacy_audit")().run(ctx)


def test_a_cell_cuts_a_canary_pool_only_for_the_audit(tmp_path):
    def splits_for(*overrides):
        with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
            cfg = compose("config", overrides=[f"results_dir={tmp_path}", "data.quarter_size=500", *overrides])
        return cell_partition(plan(cfg), 5_000, 10)

    audited = splits_for("attack=privacy_audit", "threat_model=auditor", "attack.privacy_audit.canaries=700")
    assert len(audited.pool("canary")) == 700
    assert len(splits_for("attack=membership", "threat_model=blackbox_shadow").pool("canary")) == 0


@pytest.mark.planted
@pytest.mark.parametrize("noise", [0.7, 2.0])
def test_under_dp_sgd_the_bound_never_exceeds_the_accountants_epsilon(tmp_path, noise):
    """Tiny real cell (64 images a quarter, 200 mislabeled canaries, 4 epochs) trained with DP-SGD
    through a cell: the audited copy's accountant epsilon bounds the audited lower bound."""
    with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"results_dir={tmp_path}",
                "device=cpu",
                "data.quarter_size=64",
                "train.epochs=4",
                "defense=dp_sgd",
                f"defense.noise_multiplier={noise}",
                "defense.target_epsilon=null",
                "attack=privacy_audit",
                "threat_model=auditor",
                "attack.privacy_audit.canaries=200",
            ],
        )
    cell = prepared(cfg)
    results = ATTACKS.get("privacy_audit")().run(cell.context("privacy_audit", "auditor"))
    for variant, metrics in results.items():
        assert metrics["epsilon"] > 0 and metrics["delta"] == pytest.approx(1e-5)
        assert 0 <= metrics["epsilon_lower_bound"] <= metrics["epsilon"], (variant, metrics)
        assert 0 <= metrics["fdp_epsilon_lower_bound"] <= metrics["epsilon"], (variant, metrics)
