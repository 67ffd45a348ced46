"""Training several models at once gives each model what training it alone gives."""

import copy

import pytest
import torch

from mldoctor_bench import many_models
from mldoctor_bench.data import load_dataset
from mldoctor_bench.many_models import SEQUENTIAL, STACKED, THREADS, TrainingRows, choose_mode, train_many
from mldoctor_bench.models import build_model
from mldoctor_bench.training import Recipe, accuracy

CPU = torch.device("cpu")


ORDER = torch.randperm(5000, generator=torch.Generator().manual_seed(0))  # the digits are sorted by class


def rows_of(data, k, n):
    """``k`` training sets of ``n`` different rows each, with different batch-order seeds."""
    return [
        TrainingRows(data.images[ORDER[i * n : (i + 1) * n]], data.labels[ORDER[i * n : (i + 1) * n]], seed=10 + i)
        for i in range(k)
    ]


def initial_models(arch, k):
    torch.manual_seed(0)
    return [build_model(arch, 1, 10, 28) for _ in range(k)]


def largest_difference(models_a, models_b):
    """The largest difference of any parameter or float buffer (BatchNorm statistics included)."""
    return max(
        (a - b).abs().max().item()
        for ma, mb in zip(models_a, models_b)
        for a, b in zip(ma.state_dict().values(), mb.state_dict().values())
        if a.is_floating_point()
    )


def trained(mode, initial, rows, recipe):
    models = copy.deepcopy(initial)
    assert train_many(models, rows, recipe, mode=mode) == mode
    return models


@pytest.mark.parametrize("arch", ["simple_cnn", "lenet"])  # lenet: per-model BatchNorm statistics
@pytest.mark.parametrize("mode", [STACKED, THREADS])
def test_together_equals_one_by_one_after_one_epoch_in_fp32(arch, mode):
    data = load_dataset("mnist5k", None)
    rows = rows_of(data, 3, 96)
    recipe = Recipe(epochs=1, batch_size=32, precision="fp32")
    initial = initial_models(arch, 3)
    alone = trained(SEQUENTIAL, initial, rows, recipe)
    together = trained(mode, initial, rows, recipe)
    assert largest_difference(alone, together) <= 1e-4
    # and the models really trained, each differently: not a comparison of untouched copies
    assert largest_difference(initial, alone) > 1e-3
    assert largest_difference(alone[:1], alone[1:2]) > 1e-3


def test_stacked_follows_the_step_schedule_momentum_and_weight_decay():
    data = load_dataset("mnist5k", None)
    rows = rows_of(data, 2, 64)
    recipe = Recipe(
        epochs=3,
        batch_size=32,
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-3,
        lr_milestones=(0.34,),
        lr_gamma=0.1,
        precision="fp32",
    )
    initial = initial_models("simple_cnn", 2)
    assert (
        largest_difference(trained(SEQUENTIAL, initial, rows, recipe), trained(STACKED, initial, rows, recipe)) <= 1e-4
    )


@pytest.mark.slow
def test_stacked_and_one_by_one_reach_the_same_accuracy_after_a_full_recipe():
    data = load_dataset("mnist5k", None)
    rows = rows_of(data, 2, 400)
    test_x, test_y = data.images[ORDER[4000:]], data.labels[ORDER[4000:]]
    recipe = Recipe(epochs=20, batch_size=32, lr=0.03, lr_milestones=(0.75,), precision="fp32")
    initial = initial_models("simple_cnn", 2)
    alone = [accuracy(m, test_x, test_y) for m in trained(SEQUENTIAL, initial, rows, recipe)]
    together = [accuracy(m, test_x, test_y) for m in trained(STACKED, initial, rows, recipe)]
    assert min(alone) > 0.8  # the recipe learns
    # 1,000 test images: one standard error of an accuracy near 0.9 is about 0.01
    assert all(abs(a - b) <= 0.02 for a, b in zip(alone, together)), (alone, together)


def test_the_auto_rule_and_what_cannot_be_trained_together(monkeypatch):
    plain = initial_models("simple_cnn", 2)
    monkeypatch.setattr(many_models, "cpu_cores", lambda: 2)
    assert choose_mode("auto", CPU, plain, same_size=True) == THREADS
    assert choose_mode("auto", torch.device("cuda"), plain, same_size=True) == STACKED
    assert choose_mode("off", CPU, plain, same_size=True) == SEQUENTIAL
    assert choose_mode("on", CPU, plain, same_size=False) == SEQUENTIAL  # stacking needs one size
    assert choose_mode("threads", CPU, plain, same_size=False) == THREADS
    assert choose_mode("on", CPU, plain[:1], same_size=True) == SEQUENTIAL  # one model
    with_dropout = [build_model("alexnet", 1, 10, 28) for _ in range(2)]
    assert choose_mode("auto", CPU, with_dropout, same_size=True) == SEQUENTIAL
    monkeypatch.setattr(many_models, "cpu_cores", lambda: 1)
    assert choose_mode("auto", CPU, plain, same_size=True) == SEQUENTIAL


def test_threads_restore_the_intra_op_thread_count():
    before = torch.get_num_threads()
    assert many_models.run_in_threads([lambda: torch.get_num_threads()] * 2) == [1, 1]
    assert torch.get_num_threads() == before


def test_threads_start_the_largest_task_first_and_return_results_in_order(monkeypatch):
    monkeypatch.setattr(many_models, "cpu_cores", lambda: 1)  # one worker: the start order is visible
    started = []
    tasks = [lambda i=i: started.append(i) or i * 10 for i in range(3)]
    assert many_models.run_in_threads(tasks, sizes=[1, 5, 3]) == [0, 10, 20]
    assert started == [1, 2, 0]
