"""The report: numbers (t-intervals, Pearson, low-FPR flags) by hand, and files from synthetic and real cells."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mldoctor_bench.report import build_report, collect_table, comparison_figures, figures, stats
from mldoctor_bench.report.tables import format_summary
from mldoctor_bench.results import FAILED, SKIPPED, Cell, Provenance, metric_rows, to_frame, write_table

DATASETS, ARCHS, SEEDS = ("mnist", "fmnist"), ("simplecnn", "vgg19"), (0, 1)


def cell_rows(cell: Cell, rng: np.random.Generator) -> list[dict]:
    """Plausible numbers whose attacks move with the train-test gap, plus skipped/failed rows."""
    gap = (
        0.05
        + 0.1 * DATASETS.index(cell.dataset)
        + 0.05 * ARCHS.index(cell.arch)
        - (0.04 if cell.defense == "dp" else 0)
    )
    gap += rng.normal(0, 0.01)
    test = 0.9 - gap / 2
    rows = metric_rows(cell, "target", "none", "", {"train_accuracy": test + gap, "test_accuracy": test})
    for tm in ("blackbox_shadow", "blackbox_partial"):
        mia = 0.5 + gap + rng.normal(0, 0.01)
        rows += metric_rows(
            cell,
            "membership",
            tm,
            "",
            {
                "accuracy": mia,
                "auc": mia + 0.02,
                "tpr_at_fpr_0.001": 0.01,
                "tpr_at_fpr_0.01": 0.05,
                "n_members": 100.0,
                "n_nonmembers": 100.0,
            },
        )
        rows += metric_rows(cell, "stealing", tm, "", {"agreement": 0.95 - gap + rng.normal(0, 0.01)})
    rows += metric_rows(
        cell,
        "attribute_inference",
        "whitebox_shadow",
        "",
        {"accuracy": 0.6 + gap / 2 + rng.normal(0, 0.01), "baseline_accuracy": 0.55},
    )
    rows += metric_rows(cell, "model_inversion", "whitebox_none", "", {"mse": 0.1 + gap})
    rows += metric_rows(
        cell,
        "membership",
        "whitebox_none",
        "",
        {},
        SKIPPED,
        "membership does not support whitebox_none; supported: blackbox_shadow, blackbox_partial",
    )
    rows += metric_rows(
        cell,
        "membership",
        "whitebox_partial",
        "",
        {},
        SKIPPED,
        "membership does not support whitebox_partial; supported: blackbox_shadow, blackbox_partial",
    )
    rows += metric_rows(cell, "stealing", "whitebox_shadow", "", {}, FAILED, "RuntimeError: boom")
    return rows


def write_exposed(attack_dir: Path, variant: str, rng: np.random.Generator, count: int = 32) -> pd.DataFrame:
    """A plausible ``exposed.parquet``: random grey 8x8 members, scores highest first."""
    pngs = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    frame = pd.DataFrame(
        {
            "variant": variant,
            "member_position": rng.permutation(100)[:count],
            "label": rng.integers(0, 10, count),
            "score": np.sort(rng.normal(2, 1, count))[::-1],
            "image": pngs,
        }
    )
    attack_dir.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(attack_dir / "exposed.parquet", index=False)
    return frame


def write_cell(results: Path, cell: Cell, rng: np.random.Generator) -> Path:
    name = f"{cell.dataset}_{cell.arch}_{cell.defense}_seed{cell.seed}_{cell.defense}hash"
    cell_dir = results / "cells" / name
    prov = Provenance(f"run-{name}", f"{cell.defense}hash", "test", f"2026-01-01T00:00:0{cell.seed}")
    write_table(to_frame(cell_rows(cell, rng), prov, 1.0), cell_dir)
    labels = np.r_[np.ones(100), np.zeros(100)].astype(int)
    scores = rng.normal(labels * 0.8, 1.0)
    for tm in ("blackbox_shadow", "blackbox_partial"):
        (cell_dir / "membership" / tm).mkdir(parents=True)
        pd.DataFrame({"score": scores, "label": labels, "variant": ""}).to_parquet(
            cell_dir / "membership" / tm / "scores.parquet", index=False
        )
        write_exposed(cell_dir / "membership" / tm, "", rng)
    (cell_dir / "done.json").write_text(json.dumps({"config_hash": f"{cell.defense}hash"}))
    return cell_dir


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    for d in DATASETS:
        for a in ARCHS:
            for s in SEEDS:
                write_cell(results, Cell(d, a, "none", s), rng)
    write_cell(results, Cell("mnist", "simplecnn", "dp", 0), rng)
    unfinished = write_cell(results, Cell("fmnist", "vgg19", "none", 7), rng)
    (unfinished / "done.json").unlink()
    return results


@pytest.fixture(scope="module")
def report(synthetic) -> Path:
    return build_report(synthetic)


def test_t_interval_matches_hand_computation():
    s = stats.t_summary([1.0, 2.0, 3.0])
    assert (s.mean, s.sd, s.n) == (2.0, 1.0, 3)
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, df=2) = 4.303
    assert s.ci_low == pytest.approx(2 - half) and s.ci_high == pytest.approx(2 + half)


def test_one_seed_has_no_interval():
    s = stats.t_summary([0.7])
    assert s.n == 1 and math.isnan(s.sd) and math.isnan(s.ci_low)
    assert format_summary(s) == "0.700 (n=1)"
    assert "CI" not in format_summary(s)


def test_pearson_matrix_equals_numpy_corrcoef():
    m = pd.DataFrame(
        {
            "a": [0.6, 0.7, 0.9, 0.65],
            "b": [0.9, 0.85, 0.5, 0.88],
            "c": [1.0, 3.0, 2.0, 5.0],
            "const": [1.0, 1.0, 1.0, 1.0],
        }
    )
    corr, dropped = stats.pearson_matrix(m)
    assert dropped == ["const"]
    np.testing.assert_allclose(corr.to_numpy(), np.corrcoef(m[["a", "b", "c"]].to_numpy().T))


def test_too_few_negatives_flags_low_fpr_only_below_one_over_x():
    rows = []
    for n in (50.0, 5000.0):
        cell = Cell("d", "a", "none", int(n))
        rows += metric_rows(
            cell,
            "membership",
            "blackbox_shadow",
            "",
            {"tpr_at_fpr_0.001": 0.0, "tpr_at_fpr_0.01": 0.1, "auc": 0.6, "n_nonmembers": n},
        )
    frame = to_frame(rows, Provenance("r", "h", "c", "t"), 0.0)
    flags = stats.low_fpr_rows(frame).set_index(["seed", "metric"])["too_few"]
    assert flags[(50, "tpr_at_fpr_0.001")] and flags[(50, "tpr_at_fpr_0.01")]
    assert not flags[(5000, "tpr_at_fpr_0.001")] and not flags[(5000, "tpr_at_fpr_0.01")]


def test_collect_takes_finished_cells_only(synthetic):
    frame = collect_table(synthetic)
    assert set(frame["seed"]) == set(SEEDS)  # seed 7 has no done.json
    assert len(frame[["dataset", "arch", "defense", "seed"]].drop_duplicates()) == 9


def test_collect_accepts_a_single_table(synthetic, tmp_path):
    write_table(collect_table(synthetic), tmp_path)
    out = build_report(tmp_path / "results.parquet")
    assert out == tmp_path / "report" / "report.md"
    assert "## Target utility" in out.read_text()


def test_sweep_folder_finds_its_cells_scores(synthetic, tmp_path):
    cell = sorted((synthetic / "cells").glob("mnist_simplecnn_none_seed0_*"))[0]
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "cell.json").write_text(
        json.dumps({"cell_dir": str(cell), "table": str(cell / "results.parquet")})
    )
    write_table(collect_table(cell.parent.parent), tmp_path)
    text = build_report(tmp_path).read_text()
    assert "figures/roc_membership_blackbox_shadow.png" in text
    assert (tmp_path / "report" / "figures" / "roc_membership_blackbox_shadow.png").exists()


def test_report_mentions_every_table_and_problem(report):
    text = report.read_text()
    for heading in (
        "## Target utility",
        "### membership: auc",
        "### membership: accuracy",
        "### stealing: agreement",
        "### attribute: accuracy",
        "### inversion: mse",
        "### membership: TPR at low FPR",
        "## Skipped and failed",
    ):
        assert heading in text
    # unsupported pairs: one line per attack, not one row per pair and cell
    assert (
        "- membership: not run under whitebox_none (W,N), whitebox_partial (W,P) "
        "(it supports blackbox_shadow, blackbox_partial)"
    ) in text
    assert "does not support whitebox" not in text and text.count("- membership: not run under") == 1
    assert "RuntimeError: boom" in text
    # two seeds per dataset/arch: an interval; the single dp seed: n=1
    assert "n=2" in text and "(n=1)" in text
    # 100 non-members cannot support TPR at 0.1% or 1% FPR
    assert " *" in text and "fewer than 1/x non-members" in text


def test_report_figures_are_real_pictures(report):
    import matplotlib.image

    text = report.read_text()
    pngs = sorted((report.parent / "figures").glob("*.png"))
    names = {p.name for p in pngs}
    assert {
        "gap.png",
        "defenses.png",
        "correlation.png",
        "bars_membership_auc.png",
        "roc_membership_blackbox_shadow.png",
        "exposed_mnist_simplecnn_dp_seed0_dphash.png",
    } <= names
    assert len([n for n in names if n.startswith("exposed_")]) == 9  # one per finished cell
    for png in pngs:
        assert f"figures/{png.name}" in text
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 200 and image.shape[1] > 200
        assert image[..., :3].std() > 0.05, f"{png.name} is (nearly) one colour"
    # every figure is drawn but Figure 8, which needs a swept setting (none varies here), and the
    # exposure plots, whose tables these hand-written cells lack; each says so once
    assert text.count("not drawn") == 2
    assert "- 9 cell(s) not drawn: no exposure.parquet with cross-attack rows (written by runs" in text
    assert "- attacks against a swept setting (Figure 8): not drawn: no setting but the seed varies" in text


def test_correlation_of_gap_driven_attacks(synthetic):
    corr, _ = stats.pearson_matrix(stats.cell_matrix(collect_table(synthetic)))
    # both follow the gap in the synthetic table, in opposite directions
    assert corr.loc["membership (B,S) auc", "stealing (B,S) agreement"] < -0.9


def test_missing_data_is_explained_not_fatal(tmp_path):
    cell = Cell("d", "a", "none", 0)
    rows = metric_rows(cell, "target", "none", "", {"train_accuracy": 1.0, "test_accuracy": 0.8})
    rows += metric_rows(cell, "membership", "whitebox_none", "", {}, SKIPPED, "not supported")
    write_table(to_frame(rows, Provenance("r", "h", "c", "t"), 0.0), tmp_path / "cells" / "one")
    (tmp_path / "cells" / "one" / "done.json").write_text("{}")
    text = build_report(tmp_path).read_text()
    assert "No attack produced an ok metric." in text
    assert "needs at least 3 dataset/arch/defense cells; found 0" in text
    assert "no saved membership scores" in text and "not supported" in text


def test_cli_without_results_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mldoctor_bench.report", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "holds neither" in proc.stderr


@pytest.mark.slow
def test_report_from_a_real_tiny_run(run_cli, tmp_path):
    from conftest import TINY

    results = tmp_path / "res"
    proc = run_cli(*TINY, "threat_model=blackbox_shadow", f"results_dir={results}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    exe = Path(sys.executable).parent / "mldoctor-report"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mldoctor_bench.report"]
    done = subprocess.run([*cmd, str(results)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    text = (results / "report" / "report.md").read_text()
    assert "### membership: auc" in text
    assert (results / "report" / "figures" / "roc_membership_blackbox_shadow.png").stat().st_size > 5000
    assert "needs at least 3 dataset/arch/defense cells; found 1" in text


def test_dp_audit_table_sets_the_accountant_beside_the_bound(tmp_path):
    """Per audited cell: accountant epsilon, audited bound, guesses; a bound above the accountant's
    epsilon is called out, and a cell without DP has nothing to compare with."""
    rows = []
    for defense, eps, bound, fdp in (
        ("dp_sgd", 8.0, 0.4, 0.9),
        ("none", None, 2.5, 3.1),
        ("broken_dp", 1.0, 1.7, 2.0),
        ("broken_fdp", 1.0, 0.5, 1.2),  # Steinke's bound holds, the f-DP one does not: unsound
    ):
        cell = Cell("mnist5k", "simple_cnn", defense, 0)
        rows += metric_rows(cell, "target", "none", "", {"train_accuracy": 0.9, "test_accuracy": 0.8})
        metrics = {
            "epsilon_lower_bound": bound,
            "correct_guesses": 90.0,
            "guesses": 100.0,
            "fdp_epsilon_lower_bound": fdp,
            "fdp_correct_guesses": 80.0,
            "fdp_guesses": 85.0,
            "canaries": 1000.0,
            "delta": 1e-5,
            **({"epsilon": eps} if eps is not None else {}),
        }
        rows += metric_rows(cell, "privacy_audit", "auditor", "confidence", metrics)
    frame = to_frame(rows, Provenance("run", "hash", "test", "2026-01-01T00:00:00"), 1.0)
    # a second configuration of the same cell (other canaries) is its own line, never averaged in
    other = metric_rows(
        Cell("mnist5k", "simple_cnn", "none", 0),
        "privacy_audit",
        "auditor",
        "confidence",
        {"epsilon_lower_bound": 0.5, "correct_guesses": 56.0, "guesses": 60.0, "canaries": 1000.0},
    )
    frame = pd.concat([frame, to_frame(other, Provenance("run2", "otherhash", "test", "2026-01-01T00:00:01"), 1.0)])
    assert sorted(stats.audit_rows(frame).query("defense == 'none'")["epsilon_lower_bound"]) == [0.5, 2.5]
    frame = frame[frame["config_hash"] == "hash"]
    audit = stats.audit_rows(frame).set_index("defense")
    assert audit.loc["dp_sgd", "sound"] == 1.0 and audit.loc["broken_dp", "sound"] == 0.0
    assert audit.loc["broken_fdp", "sound"] == 0.0
    assert math.isnan(audit.loc["none", "sound"]) and math.isnan(audit.loc["none", "epsilon"])
    write_table(frame, tmp_path / "cells" / "c")
    (tmp_path / "cells" / "c" / "done.json").write_text("{}")
    text = build_report(tmp_path).read_text()
    assert "## DP audit: accountant epsilon vs audited lower bounds" in text
    assert (
        "| mnist5k / simple_cnn / dp_sgd | confidence, seed 0, config hash | 8.000 | 0.400 (90 / 100) "
        "| 0.900 (80 / 85) | 1000 | 0.00001 | yes |"
    ) in text
    assert "NO: a bound above the accountant" in text


def test_membership_ranking_by_tpr_at_one_percent_then_auc():
    cell = Cell("d", "a", "none", 0)
    rows = metric_rows(cell, "membership", "blackbox_shadow", "", {"tpr_at_fpr_0.01": 0.05, "auc": 0.70})
    rows += metric_rows(cell, "membership_metric", "blackbox_shadow", "entropy", {"tpr_at_fpr_0.01": 0.05, "auc": 0.72})
    rows += metric_rows(
        cell, "membership_metric", "blackbox_shadow", "confidence", {"tpr_at_fpr_0.01": 0.02, "auc": 0.9}
    )
    rows += metric_rows(cell, "membership_label_only", "blackbox_label_only", "boundary", {"auc": 0.99})
    rows += metric_rows(cell, "privacy_audit", "auditor", "confidence", {"tpr_at_fpr_0.01": 0.9, "auc": 0.99})
    rows += metric_rows(cell, "membership", "whitebox_shadow", "", {}, FAILED, "boom")
    rows += metric_rows(cell, "stealing", "blackbox_shadow", "", {"auc": 1.0})
    ranking = stats.membership_ranking(to_frame(rows, Provenance("r", "h", "c", "t"), 0.0))
    assert [(r.attack, r.variant) for r in ranking.itertuples()] == [
        ("membership_metric", "entropy"),
        ("membership", ""),
        ("membership_metric", "confidence"),
        ("membership_label_only", "boundary"),
    ]  # no TPR at 1% FPR: last


def exposed_cell(results: Path, name: str, series: dict, saved: list[tuple[str, str, str]]) -> Path:
    """A finished cell with membership ``series`` {(attack, tm, variant): (tpr, auc)} and exposed
    files for the ``saved`` series."""
    cell = Cell("mnist", name, "none", 0)
    rows = metric_rows(cell, "target", "none", "", {"train_accuracy": 1.0, "test_accuracy": 0.8})
    for (attack, tm, variant), (tpr, auc) in series.items():
        rows += metric_rows(cell, attack, tm, variant, {"tpr_at_fpr_0.01": tpr, "auc": auc})
    cell_dir = results / "cells" / name
    write_table(to_frame(rows, Provenance("r", "h", "c", "t"), 0.0), cell_dir)
    rng = np.random.default_rng(1)
    for attack, tm, variant in saved:
        write_exposed(cell_dir / attack / tm, variant, rng, count=12)
    (cell_dir / "done.json").write_text("{}")
    return cell_dir


def test_exposed_grid_of_the_strongest_attack_that_saved_them(tmp_path):
    import matplotlib.image

    series = {
        ("membership", "blackbox_shadow", ""): (0.02, 0.7),
        ("membership_metric", "blackbox_shadow", "entropy"): (0.05, 0.68),
        ("membership_label_only", "blackbox_label_only", "boundary"): (0.09, 0.6),
    }
    # "a": the label-only attack is strongest but saved nothing, metric entropy is next
    exposed_cell(
        tmp_path,
        "a",
        series,
        [
            ("membership", "blackbox_shadow", ""),
            ("membership_metric", "blackbox_shadow", "confidence"),
            ("membership_metric", "blackbox_shadow", "entropy"),
        ],
    )
    exposed_cell(tmp_path, "b", series, [])  # saved by none
    text = build_report(tmp_path).read_text()
    assert "## Most exposed training examples" in text
    section = text.split("## Most exposed training examples")[1].split("\n## ")[0]
    assert (
        "![most exposed members, mnist/a/none seed0: membership_metric (B,S) entropy](figures/exposed_a.png)" in section
    )
    assert "Stronger but without saved examples: membership_label_only (B-label,S) boundary." in section
    assert (
        "- most exposed members, mnist/b/none seed0: not drawn: no membership attack of this cell saved "
        "exposed.parquet." in section
    )
    grid = matplotlib.image.imread(tmp_path / "report" / "figures" / "exposed_a.png")
    assert grid.shape[0] > 200 and grid.shape[1] > 600 and grid[..., :3].std() > 0.05
    assert not (tmp_path / "report" / "figures" / "exposed_b.png").exists()


# --- settings that vary across runs, intervals inside the metric's range, readable charts ---

EPOCHS = (10, 50, 100)


def overfitting_cell(results: Path, epochs: int, seed: int, rng: np.random.Generator) -> Path:
    """A cell of an ``overfitting``-like sweep: same dataset/arch/defense, ``train.epochs`` and seed
    vary; more epochs, a wider gap and a stronger membership attack, whose saved scores give the AUC."""
    cell = Cell("mnist5k", "simple_cnn", "none", seed)
    config_hash = f"e{epochs}s{seed}"
    gap = 0.1 * EPOCHS.index(epochs) + 0.02 * seed
    labels = np.r_[np.ones(200), np.zeros(200)].astype(int)
    scores = rng.normal(labels * (0.2 + 2 * gap), 1.0)
    from sklearn.metrics import roc_auc_score

    rows = metric_rows(cell, "target", "none", "", {"train_accuracy": 0.7 + gap, "test_accuracy": 0.7 - gap / 2})
    rows += metric_rows(
        cell,
        "membership",
        "blackbox_shadow",
        "",
        {"auc": roc_auc_score(labels, scores), "accuracy": 0.5 + gap / 2, "n_members": 200.0, "n_nonmembers": 200.0},
    )
    rows += metric_rows(cell, "model_inversion", "whitebox_shadow", "", {"eval_accuracy": 0.3, "reconstructions": 40.0})
    cell_dir = results / "cells" / f"mnist5k_simple_cnn_none_seed{seed}_{config_hash}"
    write_table(
        to_frame(rows, Provenance(f"run{config_hash}", config_hash, "c", f"2026-01-01T00:0{seed}"), 1.0), cell_dir
    )
    (cell_dir / "membership" / "blackbox_shadow").mkdir(parents=True)
    pd.DataFrame({"score": scores, "label": labels}).to_parquet(
        cell_dir / "membership" / "blackbox_shadow" / "scores.parquet"
    )
    (cell_dir / "config.yaml").write_text(
        f"seed: {seed}\nresults_dir: {results}\ndevice: auto\ndata:\n  root: data\n  quarter_size: 500\n"
        f"dataset:\n  name: mnist5k\narch:\n  name: simple_cnn\ndefense:\n  name: none\n"
        f"train:\n  epochs: {epochs}\n  lr: 0.01\n  lr_milestones: [0.5, 0.75]\n"
    )
    (cell_dir / "target.json").write_text(json.dumps({"dataset": "mnist5k", "num_classes": 10}))
    (cell_dir / "done.json").write_text("{}")
    return cell_dir


@pytest.fixture(scope="module")
def overfitting(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("overfitting")
    rng = np.random.default_rng(3)
    for epochs in EPOCHS:
        for seed in (0, 1):
            overfitting_cell(results, epochs, seed, rng)
    return results


def section(text: str, heading: str) -> str:
    return text.split(heading)[1].split("\n#")[0]


def test_varying_settings_compare_within_one_defense():
    from mldoctor_bench.report.settings import flatten, varying_settings

    def config(name, seed, defense=None, **extra):
        return flatten(
            {
                "seed": seed,
                "results_dir": f"/r{seed}",
                "dataset": {"name": "d"},
                "arch": {"name": "a"},
                "defense": {"name": name, **(defense or {})},
                **extra,
            }
        )

    configs = pd.DataFrame.from_dict(
        {
            "h1": config("none", 0, data={"quarter_size": None}),
            "h2": config("none", 1, data={"quarter_size": 500}),
            "h3": config("relaxloss", 0, defense={"alpha": 0.5}),
            "h4": config("distillation", 0, defense={"alpha": 0.7}),  # another defense's alpha: not a sweep
            "h5": config("dp_sgd", 0, defense={"max_grad_norm": 1.0}, attack={"membership": {"epochs": 3}}),
            "h6": config("dp_sgd", 1, defense={"max_grad_norm": 2.0}),  # did not select membership
        },
        orient="index",
    )
    assert varying_settings(configs) == ["data.quarter_size", "defense.max_grad_norm"]


def test_swept_setting_is_a_group_not_extra_seeds(overfitting):
    from mldoctor_bench.report.collect import cell_configs
    from mldoctor_bench.report.settings import varying_settings

    assert varying_settings(cell_configs(sorted((overfitting / "cells").glob("*")))) == ["train.epochs"]
    text = build_report(overfitting).read_text()
    assert "Runs differ in `train.epochs`" in text and "pooled as if they were extra seeds" not in text
    utility = section(text, "## Target utility")
    auc = section(text, "### membership: auc")
    for part in (utility, auc):  # one row per epochs value, in numeric order, each over its 2 seeds
        rows = [line for line in part.splitlines() if line.startswith("| mnist5k")]
        assert [r.split(" | ")[0].rsplit(" / ", 1)[1] for r in rows] == [f"train.epochs={e}" for e in EPOCHS]
        assert all(r.count("n=2") == r.count("CI") for r in rows) and "n=4" not in part


def test_figure8_plots_attacks_against_training_epochs(overfitting):
    from mldoctor_bench.report.collect import cell_configs
    from mldoctor_bench.report.settings import with_settings

    text = build_report(overfitting).read_text()
    assert "![attacks against training epochs (Figure 8)](figures/setting_train.epochs.png)" in text
    assert "![attack metrics vs train-test gap](figures/gap.png)" in text
    frame, varying = with_settings(collect_table(overfitting), cell_configs(sorted((overfitting / "cells").glob("*"))))
    fig = comparison_figures.draw_setting(frame, "train.epochs")
    utility, *attacks = fig.axes[:3]
    assert utility.get_xlabel() == "training epochs" and attacks[0].get_xlabel() == "training epochs"
    auc_axis = next(ax for ax in fig.axes if ax.get_title() == "membership: auc")
    container = next(c for c in auc_axis.containers if c.get_label().endswith("membership (B,S)"))
    line = container.lines[0]
    assert list(line.get_xdata()) == list(EPOCHS)
    assert np.all(np.diff(line.get_ydata()) > 0)  # the trend the synthetic sweep planted
    assert any(ln.get_label().startswith("chance") and set(ln.get_ydata()) == {0.5} for ln in auc_axis.get_lines())


CI = r"CI \[(-?[0-9.]+), (-?[0-9.]+)\]"


def test_intervals_stay_inside_the_metric_range(tmp_path):
    import re

    # the new user's case: AUC 0.58 +- a wide spread at n=2 gave CI [0.143, 1.020]
    s = stats.t_summary([0.98, 0.18], metric="auc")
    assert 0.0 <= s.ci_low < s.mean < s.ci_high <= 1.0 and s.ci_high == 1.0 and s.ci_low == 0.0
    assert stats.t_summary([-0.5, 0.9], metric="gap").ci_low == -1.0
    assert stats.t_summary([0.98, 0.18]).ci_high > 1.0  # no metric named: a plain t-interval
    rows = []
    for seed, (auc, acc) in enumerate([(0.99, 0.97), (0.52, 0.51)]):
        cell = Cell("d", "a", "none", seed)
        rows += metric_rows(cell, "target", "none", "", {"train_accuracy": 1.0, "test_accuracy": 0.6 + 0.39 * seed})
        rows += metric_rows(
            cell, "membership", "blackbox_shadow", "", {"auc": auc, "accuracy": acc, "advantage": auc - 0.5}
        )
        rows += metric_rows(cell, "stealing", "blackbox_shadow", "", {"agreement": 0.995 - 0.5 * seed})
    write_table(to_frame(rows, Provenance("r", "h", "c", "t"), 0.0), tmp_path / "cells" / "c")
    (tmp_path / "cells" / "c" / "done.json").write_text("{}")
    text = build_report(tmp_path).read_text()
    found = re.findall(CI, text)
    assert len(found) >= 6
    for low, high in found:
        assert -1.0 <= float(low) <= float(high) <= 1.0
    for low, high in re.findall(CI, section(text, "## Attack tables")):
        assert 0.0 <= float(low) <= float(high) <= 1.0


def test_wilson_interval_by_hand():
    from mldoctor_bench.report.intervals import wilson_interval

    low, high = wilson_interval(0.3, 40)  # z = 1.96: centre 0.3175, half 0.1368
    assert low == pytest.approx(0.1807, abs=1e-4) and high == pytest.approx(0.4543, abs=1e-4)
    assert wilson_interval(1.0, 10)[1] == pytest.approx(1.0) and wilson_interval(0.0, 10)[0] == pytest.approx(0.0)
    assert 0.69 < wilson_interval(1.0, 10)[0] < 0.73  # 10 of 10 still leaves room below


def test_bootstrap_is_reproducible_and_brackets_the_sklearn_numbers():
    from sklearn.metrics import roc_auc_score

    from mldoctor_bench.metrics import membership_metrics
    from mldoctor_bench.report.intervals import bootstrap_membership

    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(300), np.zeros(300)].astype(int)
    scores = np.round(rng.normal(labels * 0.5, 1.0), 1)  # ties on purpose
    first, again = bootstrap_membership(labels, scores), bootstrap_membership(labels, scores)
    assert first == again
    exact = membership_metrics(labels, scores, scores > 0)
    assert first["auc"][0] == pytest.approx(roc_auc_score(labels, scores))
    for metric, (estimate, low, high) in first.items():
        assert estimate == pytest.approx(exact[metric])
        assert 0.0 <= low <= high <= 1.0
    estimate, low, high = first["auc"]
    assert low < estimate < high and 0.03 < high - low < 0.15  # about +- 2 * 0.023 for 300 + 300


def test_one_run_gets_a_bootstrap_or_wilson_interval(overfitting, tmp_path):
    import shutil

    cell = sorted((overfitting / "cells").glob("*e100s0"))[0]
    shutil.copytree(cell, tmp_path / "cells" / cell.name)
    text = build_report(tmp_path).read_text()
    assert re.search(
        r"\| 0\.\d{3}, 95% bootstrap CI \[0\.\d{3}, 0\.\d{3}\] \(n=1\) \|", section(text, "### membership: auc")
    )
    # 0.6 of 400: centre 0.5991, half 0.0478; 0.3 of 40 as in test_wilson_interval_by_hand
    assert "0.600, 95% Wilson CI [0.551, 0.647] (n=1)" in section(text, "### membership: accuracy")
    assert "0.300, 95% Wilson CI [0.181, 0.454] (n=1)" in section(text, "### inversion: eval_accuracy")
    # a table value the saved scores do not reproduce gets no bootstrap interval around it, but
    # Hanley and McNeil's from its counts
    table = pd.read_parquet(tmp_path / "cells" / cell.name / "results.parquet")
    table.loc[table["metric"] == "auc", "value"] = 0.9
    write_table(table, tmp_path / "cells" / cell.name)
    auc = section(build_report(tmp_path).read_text(), "### membership: auc")
    assert "| 0.900, 95% Hanley-McNeil CI [" in auc and "bootstrap" not in auc


def test_bar_chart_colours_legend_and_chance():
    from matplotlib.lines import Line2D

    assert (
        len(set(comparison_figures.series_colours(25))) == 25 and len(set(comparison_figures.series_colours(13))) == 13
    )
    series = [f"membership_metric (B,S) v{i}" for i in range(13)]
    summary = pd.DataFrame(
        [
            {"cell": c, "dataset": d, "series": s, "mean": 0.6, "ci_low": 0.55, "ci_high": 0.65}
            for c, d in (("mnist5k/simple_cnn", "mnist5k"), ("cifar10/alexnet", "cifar10"))
            for s in series
        ]
    )
    fig = comparison_figures.draw_bars(summary, "membership", "auc", {})
    ax = fig.axes[0]
    colours = {tuple(p.get_facecolor()) for p in ax.patches}
    assert len(colours) == 13  # every series its own colour, none repeated after 10
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # beside the bars, not over them
    assert any(
        isinstance(ln, Line2D) and ln.get_label() == "chance (0.5)" and set(ln.get_ydata()) == {0.5}
        for ln in ax.get_lines()
    )
    one = summary.drop_duplicates("cell").assign(series="model_inversion (W,S)")
    fig = comparison_figures.draw_bars(one, "inversion", "eval_accuracy", {"mnist5k": 10, "cifar10": 10})
    assert any(ln.get_label() == "chance (0.1)" for ln in fig.axes[0].get_lines())
    # attribute inference: no constant chance; each bar is crossed at its own stronger baseline
    attribute = one.assign(series="attribute (W,S)")
    fig = comparison_figures.draw_bars(
        attribute,
        "attribute",
        "accuracy",
        {},
        attribute.assign(mean=[0.55, 0.62]),
        "the strongest baseline (no target)",
    )
    marks = [c for c in fig.axes[0].collections if c.get_linewidth()[0] == 2]  # whiskers are 1.5 wide
    assert [c.get_label() for c in marks][0] == "compared with: the strongest baseline (no target)"
    assert len(marks) == 2
    assert not any(ln.get_label().startswith("chance (") for ln in fig.axes[0].get_lines())
    segments = [seg for c in marks for seg in c.get_segments()]
    assert sorted(round(seg[0][1], 2) for seg in segments) == [0.55, 0.62]


def test_wide_tables_are_split():
    from mldoctor_bench.report.tables import MAX_COLUMNS

    cell = Cell("d", "a", "none", 0)
    rows = []
    for i in range(17):
        rows += metric_rows(cell, "membership_metric", "blackbox_shadow", f"v{i:02d}", {"auc": 0.5 + i / 100})
    frame = to_frame(rows, Provenance("r", "h", "c", "t"), 0.0)
    text = tables_summary(frame)
    blocks = [b for b in text.split("\n\n") if b.startswith("|")]
    assert len(blocks) == 3
    for block in blocks:
        header = block.splitlines()[0]
        assert header.count("|") - 1 <= MAX_COLUMNS and header.startswith("| dataset / arch |")
    assert sum(b.splitlines()[0].count("v") for b in blocks) >= 17


def tables_summary(frame: pd.DataFrame) -> str:
    from mldoctor_bench.report import tables

    return tables.summary_table(stats.attack_rows(frame))


def test_repeated_measurements_of_the_same_settings_are_not_extra_seeds(overfitting, tmp_path):
    """A second run of the same settings and seed that only selected other attacks repeats the
    target rows: they are shown once, not counted as another seed."""
    import shutil

    cell = sorted((overfitting / "cells").glob("*e10s0"))[0]
    for name in ("a", "b"):
        shutil.copytree(cell, tmp_path / "cells" / name)
    table = pd.read_parquet(tmp_path / "cells" / "b" / "results.parquet")
    table = table[table["attack"] == "target"].assign(config_hash="other", started_at="2026-02-01")
    write_table(table, tmp_path / "cells" / "b")
    config = (tmp_path / "cells" / "b" / "config.yaml").read_text()
    (tmp_path / "cells" / "b" / "config.yaml").write_text(
        config + "attack:\n  membership_metric:\n    classwise: true\n"
    )
    text = build_report(tmp_path).read_text()
    assert "Runs differ" not in text and "row(s) repeat a measurement" in text
    assert "| mnist5k / simple_cnn / none | 0.700 (n=1) | 0.700 (n=1) |" in text


def test_bootstrap_only_for_runs_shown_alone(overfitting):
    from mldoctor_bench.report.collect import cell_configs, score_files, score_intervals
    from mldoctor_bench.report.settings import with_settings

    cells = sorted((overfitting / "cells").glob("*"))
    frame, _ = with_settings(collect_table(overfitting), cell_configs(cells))
    assert stats.single_runs(frame) == set()  # two seeds everywhere: nothing to bootstrap
    assert score_intervals(score_files(cells), set()).empty
    one = frame[~((frame["config_hash"] == "e50s1") & (frame["attack"] == "membership"))]
    assert stats.single_runs(one) == {("e50s0", "membership", "blackbox_shadow")}
    assert set(score_intervals(score_files(cells), stats.single_runs(one))["config_hash"]) == {"e50s0"}


def test_one_run_proportions_get_wilson_intervals_over_their_counts():
    from mldoctor_bench.report import tables
    from mldoctor_bench.report.intervals import wilson_interval

    cell = Cell("mnist5k", "simple_cnn", "none", 0)
    rows = metric_rows(
        cell, "target", "none", "", {"train_accuracy": 1.0, "test_accuracy": 0.3, "n_train": 500.0, "n_test": 40.0}
    )
    rows += metric_rows(
        cell,
        "stealing",
        "blackbox_shadow",
        "posteriors",
        {
            "agreement": 0.6,
            "accuracy": 0.5,
            "baseline_agreement": 0.55,
            "agreement_over_baseline": 0.05,
            "n_test": 400.0,
        },
    )
    rows += metric_rows(
        cell,
        "attribute",
        "whitebox_shadow",
        "",
        {"accuracy": 0.3, "best_baseline_accuracy": 0.2, "advantage_over_baseline": 0.1, "n_test": 40.0},
    )
    frame = to_frame(rows, Provenance("r", "h", "v", "t"), 1.0)
    frame[stats.SETTINGS] = ""
    found = stats.single_run_intervals(frame).set_index(["attack", "metric"])
    for attack, metric, p, n in (
        ("stealing", "agreement", 0.6, 400),
        ("stealing", "baseline_agreement", 0.55, 400),
        ("stealing", "accuracy", 0.5, 400),
        ("attribute", "accuracy", 0.3, 40),
        ("attribute", "best_baseline_accuracy", 0.2, 40),
    ):
        row = found.loc[(attack, metric)]
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(wilson_interval(p, n)) and row["method"] == "wilson"
    # a difference is not a proportion of a count: no interval
    assert ("stealing", "agreement_over_baseline") not in found.index
    assert ("attribute", "advantage_over_baseline") not in found.index
    # the target's utility: test accuracy 0.3 of 40 as in test_wilson_interval_by_hand
    utility = tables.utility_table(stats.target_gap(frame))
    assert (
        "0.300, 95% Wilson CI [0.181, 0.454] (n=1)" in utility
        and "1.000, 95% Wilson CI [0.992, 1.000] (n=1)" in utility
    )


def test_tied_scores_draw_a_straight_roc_segment():
    # all four scores tie: the only honest curve is the diagonal, not a step that puts the tie's
    # non-members first
    fpr, tpr = figures.roc_points(np.array([1, 0, 1, 0]), np.array([1.0, 1.0, 1.0, 1.0]))
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.allclose(fpr, tpr) and len(fpr) > 10  # points along the segment: straight on log axes too
    # untied scores keep their corners
    fpr, tpr = figures.roc_points(np.array([1, 0, 1, 0]), np.array([4.0, 3.0, 2.0, 1.0]))
    assert list(zip(fpr, tpr)) == [(0, 0), (0, 0.5), (0.5, 0.5), (0.5, 1), (1, 1)]


def test_an_interval_over_two_seeds_combines_their_own_errors_with_their_spread():
    from mldoctor_bench.report.stats import combined_summary, t_summary

    # two runs of AUC 0.59 and 0.60, each with a standard error of 0.017 (500 + 500 examples): the
    # t-interval on two values spans [0.531, 0.659]; combined, the runs' own errors dominate
    combined = combined_summary([0.59, 0.60], [0.017, 0.017], metric="auc")
    assert combined.method == "seeds+within"
    assert combined.ci_high - combined.mean == pytest.approx(1.959964 * 0.017 / np.sqrt(2), rel=1e-4)
    assert t_summary([0.59, 0.60], metric="auc").half_width > 2.5 * combined.half_width
    # seeds far apart: their spread dominates
    wide = combined_summary([0.5, 0.7], [0.01, 0.01], metric="auc")
    assert wide.ci_high - wide.mean == pytest.approx(1.959964 * np.std([0.5, 0.7], ddof=1) / np.sqrt(2), rel=1e-4)


def test_the_gap_figure_is_not_drawn_for_a_single_run(tmp_path):
    rows = metric_rows(Cell("d", "a", "none", 0), "target", "none", "", {"train_accuracy": 1.0, "test_accuracy": 0.9})
    rows += metric_rows(Cell("d", "a", "none", 0), "membership", "blackbox_shadow", "", {"auc": 0.6})
    frame = to_frame(rows, Provenance("r", "h", "c", "t"), 0.0)
    drawn = comparison_figures.gap_figure(frame, tmp_path)
    assert drawn.path is None and "at least two runs" in drawn.note
