"""Training several models of one architecture and recipe at once, each on its own rows, with its
own seed and initialisation.

Three ways, chosen by ``train.batch_models`` (:func:`choose_mode`):

- ``on`` (stacked): the K models' parameters and buffers are stacked
  (:func:`torch.func.stack_module_state`) and one ``vmap`` over :func:`torch.func.functional_call`
  runs all of them per step. Every model keeps its own BatchNorm statistics; SGD's momentum,
  weight decay and step schedule act elementwise, so one optimiser over the stacked tensors is K
  optimisers. The loss is the sum of the per-model mean losses, whose gradient for model k is its
  own loss's gradient.
- ``threads``: one model per CPU core, each trained by :func:`train_classifier` in its own thread
  with one intra-op thread (small convolutions use one core better than two).
- ``off``: one after another, the reference the other two are tested against.

Measured on 2 CPU cores (``scripts/bench.py``, docs/performance.md): stacking 16 SimpleCNNs is
slower than one-by-one (0.48x), one model per core faster (1.37x). On CUDA, stacking is expected to
fill a GPU that one small model leaves idle (not measured yet: ``scripts/gpu_check.sh`` measures
it). Hence ``auto``: stacked on CUDA, threads on a multi-core CPU, one by one otherwise.
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from mldoctor_bench.inference import iterate_batches, model_inputs
from mldoctor_bench.training import ProgressHook, Recipe, autocast, sgd_with_schedule, train_classifier

STACKED, THREADS, SEQUENTIAL = "on", "threads", "off"


@dataclass
class TrainingRows:
    """One model's training data: ``uint8`` images and labels (class indices or probability rows)
    on the training device, and the seed of its batch order."""

    images: torch.Tensor
    labels: torch.Tensor
    seed: int


def cpu_cores() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def stochastic(model: nn.Module) -> bool:
    """Whether the model draws random numbers in training (dropout): its result would then depend
    on how the global generator is shared between models trained together."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


def device_rule(requested: str, device: torch.device) -> str:
    """``train.batch_models=requested`` made concrete for ``device``: ``auto`` is stacked on CUDA,
    threads on a CPU with two or more cores, one by one otherwise."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return STACKED
    return THREADS if cpu_cores() >= 2 else SEQUENTIAL


def choose_mode(requested: str, device: torch.device, models: Sequence[nn.Module], same_size: bool) -> str:
    """The way to train ``models`` together under ``train.batch_models=requested``.

    One model, or models that cannot be trained together (``same_size`` false: different
    architectures, recipes or data sizes, for stacking; dropout, whose random draws a shared
    generator would interleave), train one after another whatever is asked.
    """
    if len(models) < 2 or any(stochastic(m) for m in models):
        return SEQUENTIAL
    mode = device_rule(requested, device)
    if mode == STACKED and not same_size:
        return SEQUENTIAL
    if mode == THREADS and device.type != "cpu":
        return SEQUENTIAL
    return mode


def train_many(
    models: Sequence[nn.Module],
    rows: Sequence[TrainingRows],
    recipe: Recipe,
    mode: Optional[str] = None,
    on_epoch: Optional[ProgressHook] = None,
) -> str:
    """Train ``models[k]`` in place on ``rows[k]`` with one recipe; return the mode used.

    ``mode`` defaults to :func:`choose_mode` of ``recipe.batch_models``. Every mode gives each model
    what :func:`train_classifier` alone would (stacked: to float tolerance). ``on_epoch`` is called
    once per model and epoch."""
    if len(models) != len(rows):
        raise ValueError(f"{len(models)} models but {len(rows)} training sets")
    device = rows[0].images.device
    same_size = len({len(r.images) for r in rows}) == 1
    mode = mode or choose_mode(recipe.batch_models, device, models, same_size)
    if mode == STACKED:
        train_stacked(models, rows, recipe, on_epoch)
    elif mode == THREADS:
        run_in_threads(
            [
                (lambda m=m, r=r: train_classifier(m, r.images, r.labels, recipe, r.seed, on_epoch=on_epoch))
                for m, r in zip(models, rows)
            ],
            sizes=[len(r.images) for r in rows],
        )
    else:
        for m, r in zip(models, rows):
            train_classifier(m, r.images, r.labels, recipe, r.seed, on_epoch=on_epoch)
    return mode


def side_by_side(tasks: int) -> int:
    """How many of ``tasks`` :func:`run_in_threads` runs at once: one per core."""
    return min(tasks, cpu_cores())


def run_in_threads(tasks: Sequence[Callable[[], object]], sizes: Optional[Sequence[float]] = None) -> list:
    """Run ``tasks`` one per core, each with a single intra-op thread; their results in order.
    Given their ``sizes``, the largest start first, so that no core waits alone at the end. Models
    train this way on a CPU, and an attack's independent searches run so."""
    order = sorted(range(len(tasks)), key=lambda i: -sizes[i]) if sizes is not None else list(range(len(tasks)))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(max_workers=side_by_side(len(tasks)))
    try:
        done = dict(zip(order, pool.map(lambda i: tasks[i](), order)))
    except KeyboardInterrupt:  # leave the workers behind: the caller exits without waiting for them
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        torch.set_num_threads(previous)
    pool.shutdown()
    return [done[i] for i in range(len(tasks))]


def train_stacked(
    models: Sequence[nn.Module],
    rows: Sequence[TrainingRows],
    recipe: Recipe,
    on_epoch: Optional[ProgressHook] = None,
) -> None:
    """Train equally sized training sets' models as one vmapped model (see the module docstring)."""
    device = rows[0].images.device
    recipe = recipe.resolved(device)
    n = len(rows[0].images)
    if any(len(r.images) != n for r in rows):
        raise ValueError("stacked training needs training sets of one size; use batch_models=off")
    for m in models:
        m.to(device, memory_format=torch.channels_last).train()
    params, buffers = stack_module_state(list(models))
    skeleton = copy.deepcopy(models[0]).to("meta")

    def forward(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(skeleton, (p, b), (x,))

    batched = vmap(forward, randomness="different")
    holder = nn.Module()  # so the recipe's optimiser and schedule apply to the stacked tensors as-is
    for i, tensor in enumerate(params.values()):
        holder.register_parameter(f"p{i}", nn.Parameter(tensor))
    stacked = dict(zip(params, holder.parameters()))
    optimiser, schedule = sgd_with_schedule(holder, recipe)
    generators = [torch.Generator().manual_seed(r.seed) for r in rows]
    for epoch in range(recipe.epochs):
        orders = [list(iterate_batches(n, recipe.batch_size, g)) for g in generators]
        totals = torch.zeros(len(models), device=device)
        for step in range(len(orders[0])):
            batches = [order[step].to(device, non_blocking=True) for order in orders]
            x = torch.stack([model_inputs(r.images[b]) for r, b in zip(rows, batches)])
            y = torch.stack([r.labels[b] for r, b in zip(rows, batches)])
            with autocast(recipe.precision, device):
                logits = batched(stacked, buffers, x)
            losses = torch.stack([F.cross_entropy(logits[k].float(), y[k]) for k in range(len(models))])
            optimiser.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimiser.step()
            totals += losses.detach() * len(batches[0])
        schedule.step()
        if on_epoch is not None:
            for total in totals.tolist():
                on_epoch(epoch + 1, recipe.epochs, total / n)
    with torch.no_grad():
        for k, m in enumerate(models):
            for name, tensor in stacked.items():
                m.get_parameter(name).copy_(tensor[k])
            for name, tensor in buffers.items():
                m.get_buffer(name).copy_(tensor[k])
            m.eval()
