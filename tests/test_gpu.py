"""Checks that need a CUDA device (skipped without one; ``scripts/gpu_check.sh`` runs them)."""

import copy
import json
from dataclasses import replace

import pytest
import torch

from conftest import TINY
from mldoctor_bench.data import load_dataset
from mldoctor_bench.many_models import SEQUENTIAL, STACKED, TrainingRows, train_many
from mldoctor_bench.models import build_model
from mldoctor_bench.training import Recipe, accuracy, configure_backends, train_classifier

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ORDER = torch.randperm(5000, generator=torch.Generator().manual_seed(0))  # the digits are sorted by class


def digits(n_train):
    data = load_dataset("mnist5k", None)
    cuda = torch.device("cuda")
    train, test = ORDER[:n_train], ORDER[4000:]
    return (
        data.images[train].to(cuda),
        data.labels[train].to(cuda),
        data.images[test].to(cuda),
        data.labels[test].to(cuda),
    )


def test_bf16_and_fp32_reach_the_same_accuracy():
    x, y, tx, ty = digits(1000)
    recipe = Recipe(epochs=15, batch_size=64, lr=0.03, lr_milestones=(0.75,))
    accs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model("simple_cnn", 1, 10, 28)
        train_classifier(model, x, y, replace(recipe, precision=precision), seed=0)
        accs[precision] = accuracy(model, tx, ty)
    assert accs["fp32"] > 0.85 and abs(accs["fp32"] - accs["bf16"]) <= 0.03, accs


def test_stacked_equals_one_by_one_on_cuda():
    x, y, _, _ = digits(1024)
    rows = [TrainingRows(x[i * 256 : (i + 1) * 256], y[i * 256 : (i + 1) * 256], seed=i) for i in range(4)]
    recipe = Recipe(epochs=1, batch_size=64, precision="fp32", deterministic=True)
    configure_backends(recipe, torch.device("cuda"))  # fp32 without TF32, deterministic kernels
    torch.manual_seed(0)
    initial = [build_model("simple_cnn", 1, 10, 28) for _ in range(4)]
    out = {}
    for mode in (SEQUENTIAL, STACKED):
        models = copy.deepcopy(initial)
        train_many(models, rows, recipe, mode=mode)
        out[mode] = models
    diff = max(
        (a - b).abs().max().item()
        for ma, mb in zip(out[SEQUENTIAL], out[STACKED])
        for a, b in zip(ma.state_dict().values(), mb.state_dict().values())
        if a.is_floating_point()
    )
    assert diff <= 1e-4


@pytest.mark.slow
def test_a_default_cell_completes_on_cuda(run_cli, tmp_path):
    out = tmp_path / "res"
    proc = run_cli("threat_model=blackbox_shadow", "device=cuda", f"results_dir={out}", *TINY)
    assert proc.returncode == 0, proc.stderr
    cell = next((out / "cells").iterdir())
    timings = json.loads((cell / "timings.json").read_text())
    modes = {p["info"].get("batch_models") for p in timings["phases"] if p["name"] == "train target+shadow"}
    assert modes == {STACKED}  # auto stacks on CUDA
