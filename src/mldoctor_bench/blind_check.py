"""A blind check of a given split: can members and non-members be told apart without the model?

Membership inference tests the null that the evaluation members and non-members are exchangeable.
When an owner lists a training set collected at another time, from another source or with another
class balance than the images offered as non-members, the attacks detect that shift and report
leakage from a model that leaks nothing; Das, Zhang and Tramèr ("Blind baselines beat membership
inference attacks for foundation models", 2024) found many published evaluations flawed this way.

So where the members are given (an owner's members file) rather than drawn at random by the
benchmark, a classifier that never queries the model learns from the images alone (and their
labels, whose balance may differ) to tell the listed members from the non-members. It is
cross-fitted: each image is scored by a model fitted on the other folds. Its AUC is tested against
0.5 by permutation (one-sided, 5%); where it rejects, the split itself separates the two sets and
membership is not judged. The features are what a collection shift changes: the label, each
channel's mean and spread, an intensity histogram and the image shrunk to 8 x 8; the classifier is a
ridge-regularised linear discriminant on standardised features (a closed form, deterministic).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FOLDS = 5
BINS = 16
SIDE = 8
RIDGE = 1.0  # the discriminant's penalty, per row, on standardised features
PERMUTATIONS = 499


def image_features(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """Per image: its label one-hot, each channel's mean and standard deviation, an intensity histogram
    (``BINS`` bins) and the image shrunk to ``SIDE`` x ``SIDE``, from ``uint8`` ``(N, C, H, W)``."""
    x = images.float() / 255.0
    flat = x.flatten(2)
    histogram = torch.stack([torch.histc(v, bins=BINS, min=0.0, max=1.0) for v in x.flatten(1)]) / flat[0].numel()
    small = F.adaptive_avg_pool2d(x, SIDE).flatten(1)
    one_hot = F.one_hot(labels.long(), num_classes).float()
    return torch.cat([one_hot, flat.mean(2), flat.std(2), histogram, small], 1).numpy().astype(np.float64)


def cross_fitted_scores(features: np.ndarray, labellings: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each row's member score, ``(rows, labellings)``, for every labelling (a column of 0/1 members):
    from a ridge-regularised linear discriminant fitted, on standardised features, on the rows of the
    other folds. The fit is linear in the labels, so each fold's projection is computed once and
    serves every labelling (the permutations cost a matrix product)."""
    scores = np.zeros(labellings.shape, dtype=float)
    for k in np.unique(folds):
        fit, held = folds != k, folds == k
        centre, spread = features[fit].mean(0), features[fit].std(0) + 1e-6
        z, z_held = (features[fit] - centre) / spread, (features[held] - centre) / spread
        ridge = z.T @ z + RIDGE * len(z) * np.eye(z.shape[1])
        projection = z_held @ np.linalg.solve(ridge, z.T)  # (held rows, fit rows)
        y = labellings[fit]
        scores[held] = projection @ (y - y.mean(0))
    return scores


def aucs_of(scores: np.ndarray, labellings: np.ndarray) -> np.ndarray:
    """The AUC of each column of ``scores`` for its labelling's members (ties count one half)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=0)
    m = labellings.sum(0)
    n = len(labellings) - m
    return ((ranks * labellings).sum(0) - m * (m + 1) / 2) / (m * n)


def blind_check(
    members: torch.Tensor,
    member_labels: torch.Tensor,
    nonmembers: torch.Tensor,
    nonmember_labels: torch.Tensor,
    num_classes: int,
    seed: int,
) -> dict[str, float]:
    """The blind distinguisher's cross-fitted AUC, its approximate 95% interval (Hanley and McNeil) and
    its one-sided permutation p-value against 0.5: the same cross-fitting, folds included, refitted on
    :data:`PERMUTATIONS` random relabellings of who is a member (exact under the null that the two
    sets are exchangeable; the pooled AUC of cross-fitted scores has more spread than Mann-Whitney's
    law allows, which a normal test would mistake for a shift)."""
    from mldoctor_bench.report.significance import auc_interval

    features = image_features(
        torch.cat([members, nonmembers]), torch.cat([member_labels, nonmember_labels]), num_classes
    )
    is_member = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    rng = np.random.default_rng(seed)
    folds = rng.permutation(np.arange(len(is_member)) % FOLDS)
    labellings = np.column_stack([is_member] + [rng.permutation(is_member) for _ in range(PERMUTATIONS)])
    aucs = aucs_of(cross_fitted_scores(features, labellings, folds), labellings)
    auc = float(aucs[0])
    low, high = auc_interval(auc, len(members), len(nonmembers))
    return {
        "blind_auc": auc,
        "blind_auc_low": low,
        "blind_auc_high": high,
        "blind_p_value": float((aucs >= auc).sum() / (1 + PERMUTATIONS)),  # the observed labelling counts
        "blind_members": float(len(members)),
        "blind_nonmembers": float(len(nonmembers)),
    }
