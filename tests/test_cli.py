"""End-to-end runs of the installed ``mldoctor-bench`` from an unrelated working directory."""

import json

import pandas as pd
import pytest
import torch

from conftest import TINY
from mldoctor_bench.results import COLUMNS

pytestmark = pytest.mark.slow


def test_default_style_run_writes_tidy_tables_and_nothing_else(run_cli, tmp_path):
    out = tmp_path / "res"
    proc = run_cli("threat_model=blackbox_shadow", f"results_dir={out}", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert list(run_cli.workdir.iterdir()) == []  # nothing in the working directory
    cells = list((out / "cells").iterdir())
    assert len(cells) == 1
    cell = cells[0]
    for name in (
        "results.parquet",
        "results.csv",
        "splits.safetensors",
        "target.safetensors",
        "target.json",
        "done.json",
        "config.yaml",
        "timings.json",
    ):
        assert (cell / name).exists(), name
    table = pd.read_parquet(cell / "results.parquet")
    assert list(table.columns) == COLUMNS
    assert list(pd.read_csv(cell / "results.csv").columns) == COLUMNS
    target = table[table.attack == "target"].set_index("metric")["value"]
    assert {"train_accuracy", "test_accuracy"} <= set(target.index)
    mia = table[(table.attack == "membership") & (table.threat_model == "blackbox_shadow")]
    assert set(mia.metric) >= {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "auc",
        "advantage",
        "tpr_at_fpr_0.001",
        "tpr_at_fpr_0.01",
    }
    assert (mia.status == "ok").all()
    rates = mia[~mia.metric.str.startswith("n_") & (mia.metric != "attack_train_loss")]
    assert rates.value.between(0, 1).all()
    assert table.config_hash.nunique() == 1 and table.code_version.iloc[0]
    manifest = json.loads((cell / "target.json").read_text())
    assert manifest["arch"] == "simple_cnn" and manifest["splits"] == "splits.safetensors"

    timings = json.loads((cell / "timings.json").read_text())
    names = [p["name"] for p in timings["phases"]]
    assert names[0] == "load data" and "train target+shadow" in names  # trained together
    assert "attack membership (B,S)" in names
    assert sum(p["self_s"] for p in timings["phases"]) <= timings["total_s"] + 0.01
    assert isinstance(timings["torch_threads"], int) and timings["torch_threads"] >= 1  # pairs cells fairly
    trained = next(p for p in timings["phases"] if p["name"] == "train target+shadow")["info"]["models"]
    assert [m["role"] for m in trained] == ["target", "shadow"]
    assert all(m["train_seconds"] > 0 and m["images_per_second"] > 0 for m in trained)
    stored = [json.loads(f.read_text()) for f in (out / "cache").glob("*.json")]
    assert stored and all(m["train_seconds"] > 0 and m["images_per_second"] > 0 for m in stored)
    # the summary names the largest phases, one per line, within 100 columns
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("time: ") and line.endswith("; largest:"))
    assert lines[at + 1].startswith("  ") and "s (" in lines[at + 1]
    assert all(len(line) <= 100 for line in lines[at : at + 4])


def test_saved_target_and_splits_reproduce_the_reported_accuracy(run_cli, tmp_path):
    from mldoctor_bench.cell import load_target
    from mldoctor_bench.data import load_dataset
    from mldoctor_bench.training import accuracy

    out = tmp_path / "res"
    assert run_cli("threat_model=blackbox_shadow", f"results_dir={out}", *TINY).returncode == 0
    cell = next((out / "cells").iterdir())
    model, splits, manifest = load_target(cell)
    data = load_dataset(manifest["dataset"], None)
    table = pd.read_parquet(cell / "results.parquet")
    reported = table.query("attack == 'target' and metric == 'test_accuracy'").value.item()
    idx = splits.target_test
    assert accuracy(model, data.images[idx], data.labels[idx]) == pytest.approx(reported, abs=1e-6)
    # the one-call form, from a str path: the model's own preprocessing applied
    import mldoctor_bench

    probs = mldoctor_bench.predict(str(cell), data.images[idx])
    assert (probs.argmax(1) == data.labels[idx]).double().mean().item() == pytest.approx(reported, abs=1e-6)
    assert torch.allclose(probs.sum(1), torch.ones(len(idx)), atol=1e-5)
    with pytest.raises(ValueError, match="uint8 images"):
        mldoctor_bench.predict(cell, data.images[idx].float() / 255)


def test_rerun_skips_the_done_cell_and_reuses_models(run_cli, tmp_path):
    out = tmp_path / "res"
    args = ("threat_model=blackbox_shadow", f"results_dir={out}", *TINY)
    assert run_cli(*args).returncode == 0
    again = run_cli(*args)
    assert again.returncode == 0 and "cell already done" in again.stderr
    other = run_cli(*args, "attack.membership.epochs=3")  # new cell, same target and shadow
    assert other.returncode == 0
    assert other.stderr.count("reused cached") == 2


def test_multirun_over_seeds_leaves_one_merged_table(run_cli, tmp_path):
    out = tmp_path / "res"
    proc = run_cli("-m", "seed=0,1", "threat_model=blackbox_shadow", f"results_dir={out}", *TINY)
    assert proc.returncode == 0, proc.stderr
    merged = list((out / "hydra" / "sweeps").glob("*/results.parquet"))
    assert len(merged) == 1
    table = pd.read_parquet(merged[0])
    assert sorted(table.seed.unique()) == [0, 1]
    assert not table.duplicated(["config_hash", "attack", "threat_model", "variant", "metric"]).any()
    assert list(run_cli.workdir.iterdir()) == []


@pytest.mark.parametrize(
    "override,expected",
    [
        ("dataset=nope", "mnist5k"),
        ("attack=nope", "membership"),
        ("threat_model=nope", "blackbox_shadow"),
        ("train.epoch=3", "epoch"),
        ("device=cuda:7", "device"),
    ],
)
def test_bad_input_fails_fast_with_choices_and_no_traceback(run_cli, tmp_path, override, expected):
    proc = run_cli(override, f"results_dir={tmp_path / 'res'}", timeout=60)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert expected in text
    assert "Traceback" not in text
    assert not (tmp_path / "res" / "cells").exists()  # failed before any work


def test_unsupported_combination_is_a_skipped_row_not_a_crash(run_cli, tmp_path):
    out = tmp_path / "res"
    # nothing selected can run: refused before any training, naming what would
    alone = run_cli("threat_model=whitebox_none", f"results_dir={out}", *TINY, timeout=60)
    assert alone.returncode == 2 and "Traceback" not in alone.stderr
    assert "nothing would run" in alone.stderr and "attack=membership threat_model=blackbox_shadow" in alone.stderr
    assert not (out / "cells").exists()
    # beside a pair that runs, the unsupported one is a skipped row with its reason
    proc = run_cli("threat_model=[blackbox_shadow,whitebox_none]", f"results_dir={out}", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    table = pd.read_parquet(next((out / "cells").iterdir()) / "results.parquet")
    row = table[(table.attack == "membership") & (table.threat_model == "whitebox_none")]
    assert len(row) == 1 and row.status.item() == "skipped"
    assert (table[table.threat_model == "blackbox_shadow"].status == "ok").all()
    assert "does not support whitebox_none" in row.reason.item()


def test_impossible_attack_settings_fail_before_training(run_cli, tmp_path):
    proc = run_cli(
        "attack=membership_label_only",
        "attack.membership_label_only.queries_per_example=5",
        f"results_dir={tmp_path / 'res'}",
        timeout=60,
    )
    assert proc.returncode == 2
    assert "queries_per_example=5" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "res" / "cells").exists()


@pytest.mark.parametrize(
    "override",
    [
        "data.quarter_size=100000",
        "data.quarter_size=-5",
        "seed=abc",
        "train.lr=abc",
        "train.epochs=0",
        "dataset=cifar",
        "arch=resnet",
        "attack=membershp",
        "attack.membership.epochs=0",
        "train.epoch=3",
        "defense=dp_sgd defense.delta=2",
        "data.reserve=1.5",
    ],
)
def test_every_bad_value_is_one_line_exit_2_and_no_folder(run_cli, tmp_path, override):
    res = tmp_path / "res"
    proc = run_cli(*override.split(), "attack=membership", f"results_dir={res}", "device=cpu", timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mldoctor-bench: error: "), lines
    assert "Traceback" not in proc.stderr
    key = override.split()[-1].split("=")[0]
    assert key.split(".")[-1] in lines[0]  # names the setting
    assert not res.exists()  # not even Hydra's run folder is left


def test_group_typos_get_a_did_you_mean(run_cli, tmp_path):
    proc = run_cli("dataset=cifar", f"results_dir={tmp_path / 'res'}", timeout=60)
    assert "did you mean dataset=cifar10?" in proc.stderr and proc.returncode == 2


@pytest.mark.parametrize("override, nearest", [("+seedd=3", "seed"), ("train.epoch=3", "train.epochs")])
def test_unknown_settings_are_refused_with_the_nearest_one_even_when_added_with_a_plus(
    run_cli, tmp_path, override, nearest
):
    """Hydra's own message suggests +key=..., which it then accepts and ignores."""
    proc = run_cli(override, "attack=membership", f"results_dir={tmp_path / 'res'}", timeout=60)
    assert proc.returncode == 2 and f"did you mean {nearest}=?" in proc.stderr, proc.stderr
    assert "+" not in proc.stderr.replace(override, "")


def test_version_and_help_say_what_the_tool_is(run_cli):
    from mldoctor_bench import __version__

    version = run_cli("--version", timeout=60)
    assert version.returncode == 0 and version.stdout.startswith(f"mldoctor-bench {__version__}")
    helped = run_cli("--help", timeout=60)
    assert helped.stdout.startswith("mldoctor-bench: how much does an image classifier leak?")
    assert "-m seed=0,1,2" in helped.stdout and "hydra/launcher=slurm" in helped.stdout
    assert "--hydra-help" in helped.stdout


def test_a_failed_attack_leaves_the_cell_not_done_exits_3_and_a_rerun_retries_only_it(tmp_path, monkeypatch):
    """In-process, so one attack can be made to fail: the cell keeps the other attack's rows, is
    not marked done, the command exits 3; the next run retries the failed attack alone."""
    import sys

    from mldoctor_bench import cli, entry
    from mldoctor_bench.attacks.membership import MembershipInference
    from mldoctor_bench.attacks.membership_metric import MetricMembershipInference

    calls = {"metric": 0}
    real_metric = MetricMembershipInference.run

    def counted_metric(self, ctx):
        calls["metric"] += 1
        return real_metric(self, ctx)

    def broken(self, ctx):
        raise RuntimeError("forced failure")

    monkeypatch.setattr(MetricMembershipInference, "run", counted_metric)
    monkeypatch.setattr(MembershipInference, "run", broken)
    args = [
        "mldoctor-bench",
        "attack=[membership,membership_metric]",
        "threat_model=blackbox_shadow",
        *[a for a in TINY if not a.startswith("attack=")],
        f"results_dir={tmp_path / 'res'}",
    ]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == entry.EXIT_ATTACK_FAILED
    cell = next((tmp_path / "res" / "cells").iterdir())
    assert not (cell / "done.json").exists()
    table = pd.read_parquet(cell / "results.parquet")
    assert set(table[table.attack == "membership"].status) == {"failed"}
    assert set(table[table.attack == "membership_metric"].status) == {"ok"}
    assert "forced failure" in (cell / "membership" / "blackbox_shadow" / "error.txt").read_text()

    monkeypatch.undo()
    monkeypatch.setattr(MetricMembershipInference, "run", counted_metric)
    monkeypatch.setattr(sys, "argv", args)
    cli.main()  # no exit: everything is done now
    assert (cell / "done.json").exists()
    table = pd.read_parquet(cell / "results.parquet")
    assert (table.status == "ok").all()
    assert calls["metric"] == 1  # the attack that had succeeded was not run again
    assert not table.duplicated(["attack", "threat_model", "variant", "metric"]).any()


def test_models_that_fail_to_train_ahead_are_trained_by_their_attacks(tmp_path, monkeypatch):
    """The surrogates (and the no-query baseline) of two stealing threat models are trained before the
    attacks run; when that fails, each attack trains its own and the cell completes with the same
    kind of rows."""
    import sys

    from mldoctor_bench import cli
    from mldoctor_bench.cell.models import ModelProvider

    real_prepare, calls = ModelProvider.prepare, []

    def fails_when_ahead(self, requests):
        calls.append([r.role for r in requests])
        if len(calls) == 1:  # train_ahead: the first to ask for the attackers' models
            raise RuntimeError("forced failure ahead")
        return real_prepare(self, requests)

    monkeypatch.setattr(ModelProvider, "prepare", fails_when_ahead)
    args = [
        "mldoctor-bench",
        "attack=stealing",
        "threat_model=[blackbox_shadow,blackbox_label_only]",
        *[a for a in TINY if not a.startswith("attack")],
        "attack.stealing.epochs=1",
        f"results_dir={tmp_path / 'res'}",
    ]
    monkeypatch.setattr(sys, "argv", args)
    cli.main()
    assert calls[0] == [
        "surrogate-posteriors-blackbox_shadow",
        "stealing-baseline",
        "surrogate-labels-blackbox_label_only",
        "stealing-baseline",
    ]
    assert sorted(map(tuple, calls[1:])) == [
        ("surrogate-labels-blackbox_label_only", "stealing-baseline"),
        ("surrogate-posteriors-blackbox_shadow", "stealing-baseline"),
    ]
    cell = next((tmp_path / "res" / "cells").iterdir())
    table = pd.read_parquet(cell / "results.parquet")
    assert (table.status == "ok").all() and (cell / "done.json").exists()
    assert set(table[table.attack == "stealing"].variant) == {"posteriors", "labels"}
