"""Does a reconstruction resemble the target's training images more than unseen ones?

The inversion literature scores a reconstruction by its distance, in an evaluation model's feature
space, to the nearest private training image of its class (KNN distance: Zhang et al., CVPR 2020;
Nguyen et al., CVPR 2023). Alone that distance is a utility measure: a good class-typical image is
close to every image of its class. Compared with the distance to the nearest *unseen* image of the
class (target-test), it asks the privacy question: ``distance_gap`` = distance to the nearest unseen
image minus distance to the nearest training image, positive where the reconstructions sit closer to
what the target trained on. The two sets are cut to the same number of images per class (the nearest
of more candidates is nearer), and the gap is averaged per class first: a class, not a
reconstruction, is the unit (reconstructions of one class share their target's class region).

Features are the evaluator's penultimate embedding (:meth:`~mldoctor_bench.models.Classifier.embed`):
a model of another architecture, trained on heldout rows neither set contains.
"""

from __future__ import annotations

import torch

from mldoctor_bench.inference import iterate_batches, model_inputs
from mldoctor_bench.knowledge import Labeled


@torch.no_grad()
def features(model: torch.nn.Module, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The model's penultimate embedding of ``inputs`` (``uint8`` images, or float model inputs in
    ``[-1, 1]``), float64 on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for rows in iterate_batches(len(inputs), batch_size, None):
        batch = inputs[rows].to(device)
        batch = (
            model_inputs(batch) if batch.dtype == torch.uint8 else batch.contiguous(memory_format=torch.channels_last)
        )
        out.append(model.embed(batch).flatten(1).double().cpu())
    return torch.cat(out)


def balanced(a: Labeled, b: Labeled, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``a`` and of ``b`` with, per class, as many of each as the smaller of the two holds
    (drawn at random with ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    keep_a, keep_b = [], []
    for c in range(num_classes):
        rows_a, rows_b = (a.labels == c).nonzero().flatten(), (b.labels == c).nonzero().flatten()
        n = min(len(rows_a), len(rows_b))
        keep_a.append(rows_a[torch.randperm(len(rows_a), generator=generator)[:n]])
        keep_b.append(rows_b[torch.randperm(len(rows_b), generator=generator)[:n]])
    return torch.cat(keep_a), torch.cat(keep_b)


def nearest(queries: torch.Tensor, query_classes: torch.Tensor, pool: torch.Tensor, pool_classes: torch.Tensor):
    """Per query row, the Euclidean distance to the nearest ``pool`` row of its class (``inf`` where
    the pool holds none)."""
    out = torch.full((len(queries),), float("inf"), dtype=torch.float64)
    for c in query_classes.unique():
        rows, candidates = query_classes == c, pool[pool_classes == c]
        if len(candidates):
            out[rows] = torch.cdist(queries[rows], candidates).min(1).values.double()
    return out


def distance_gaps(
    evaluator: torch.nn.Module,
    reconstructions: dict[str, torch.Tensor],
    classes: torch.Tensor,
    training: Labeled,
    unseen: Labeled,
    num_classes: int,
    seed: int,
) -> dict[str, float]:
    """For each set of ``reconstructions`` (by metric prefix; model inputs in ``[-1, 1]``, row ``i``
    meant to show ``classes[i]``): ``<prefix>distance_to_train``, ``<prefix>distance_to_unseen`` and
    ``<prefix>distance_gap`` (means over classes of the per-class mean over reconstructions), and the
    gap per class (``<prefix>distance_gap_class_<c>``). The two sets' features are computed once."""
    keep_train, keep_unseen = balanced(training, unseen, num_classes, seed)
    pools = [
        (features(evaluator, data.images[keep]), data.labels[keep])
        for data, keep in ((training, keep_train), (unseen, keep_unseen))
    ]
    out = {}
    for prefix, images in reconstructions.items():
        recon = features(evaluator, images)
        to_train, to_unseen = (nearest(recon, classes.cpu(), *pool) for pool in pools)
        out.update(class_means(to_train, to_unseen, classes.cpu(), num_classes, prefix))
    return out


def class_means(
    to_train: torch.Tensor, to_unseen: torch.Tensor, classes: torch.Tensor, num_classes: int, prefix: str
) -> dict[str, float]:
    """The per-class means of both distances and their gap, averaged over classes, and each class's gap."""
    out, per_class = {}, {"train": [], "unseen": [], "gap": []}
    for c in range(num_classes):
        rows = (classes == c) & torch.isfinite(to_train) & torch.isfinite(to_unseen)
        if rows.any():
            per_class["train"].append(float(to_train[rows].mean()))
            per_class["unseen"].append(float(to_unseen[rows].mean()))
            per_class["gap"].append(per_class["unseen"][-1] - per_class["train"][-1])
            out[f"{prefix}distance_gap_class_{c}"] = per_class["gap"][-1]
    for name, key in (("distance_to_train", "train"), ("distance_to_unseen", "unseen"), ("distance_gap", "gap")):
        values = per_class[key]
        out[f"{prefix}{name}"] = sum(values) / len(values) if values else float("nan")
    return out
