"""Reference models for the likelihood-ratio membership attacks (LiRA, RMIA): which rows each one
trains on, the models themselves, and the per-example signals read from them.

Online references train on candidates (the examples the attacker is asked about: the evaluation
members and non-members, with no membership labels used). They come in pairs: one reference of a
pair trains on a random half of the candidates, the other on the complement, so every candidate is
IN for exactly half of the references. Each reference trains on as many rows as the target did: a
half of the candidates is as many as the evaluation members, which in a benchmark cell is the whole
training quarter; where the target trained on more (an owner's model, evaluated on a capped share of
its training set), every online reference also trains on the same ``fill`` rows of the attacker's
own data, which are then no population sample for RMIA. Offline references train on independent
random halves of the attacker's own shadow data only (as many rows as the target's training set in
an owner's partition, whose shadow pools are sized so), so every candidate is OUT for all of them
(and RMIA can hold one back as a stand-in target with known members).

Masks depend on the cell's seed, the kind and number of references and the pool only, so LiRA and
RMIA with the same ``num_references`` ask for the same references and the model store trains them
once. The references use the target's architecture and recipe, and are trained and queried as the
attacker's shadow model is (with the target's defense when the attacker knows it), through the
cell's model service, together where they can be.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import save_file

from mldoctor_bench.attacks.base import Attack, AttackContext, ModelRequest
from mldoctor_bench.attacks.scoring import Scores, save_exposed, save_scores
from mldoctor_bench.attacks.signals import loss_and_confidence
from mldoctor_bench.knowledge import Labeled, balanced
from mldoctor_bench.metrics import jaccard_chance, threshold_at_fpr
from mldoctor_bench.threat_models import BlackBoxAccess

ONLINE, OFFLINE = "online", "offline"


def paired_masks(n: int, k: int, seed: int) -> torch.Tensor:
    """``(k, n)`` booleans: row ``r`` marks the rows reference ``r`` trains on. References ``2i`` and
    ``2i+1`` take a random half of the ``n`` rows and its complement, so every row is IN for exactly
    ``k / 2`` references (``k`` even) and every reference has ``n // 2`` or ``n - n // 2`` rows."""
    if k < 2 or k % 2:
        raise ValueError(f"references come in pairs: num_references must be even and at least 2, got {k}")
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(k, n, dtype=torch.bool)
    for pair in range(k // 2):
        half = torch.randperm(n, generator=generator)[: n // 2]
        masks[2 * pair, half] = True
        masks[2 * pair + 1] = ~masks[2 * pair]
    return masks


def check_pairs(num_references: int, online: bool) -> None:
    """Raise the settings error of an odd ``num_references`` when online references are needed."""
    if online and num_references % 2:
        raise ValueError(
            f"num_references={num_references} must be even for the online variants: online references "
            f"come in pairs (a random half of the candidates and its complement), e.g. {num_references + 1}"
        )


def half_masks(n: int, k: int, seed: int) -> torch.Tensor:
    """``(k, n)`` booleans: each of ``k`` references on its own random half of the ``n`` rows."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(k, n, dtype=torch.bool)
    for r in range(k):
        masks[r, torch.randperm(n, generator=generator)[: n // 2]] = True
    return masks


def candidates(ctx: AttackContext) -> tuple[Labeled, torch.Tensor]:
    """The examples scored: the balanced evaluation members then non-members, and their labels
    (1 member, 0 non-member; never shown to the reference models). The members are the first
    ``is_member.sum()`` rows."""
    members, nonmembers = balanced(ctx.evaluation.members, ctx.evaluation.nonmembers)
    is_member = torch.cat([torch.ones(len(members)), torch.zeros(len(nonmembers))]).long()
    return Labeled.concat([members, nonmembers]), is_member


@dataclass(frozen=True)
class ReferenceSet:
    """The references of one kind: their training requests, masks over their pool of rows, and the
    rows of the attacker's data (``ctx.knowledge.data``) that every one of them also trains on."""

    kind: str
    pool: Labeled
    masks: torch.Tensor  # (k, len(pool)): True where the reference trains on the row
    requests: list[ModelRequest]
    fill: torch.Tensor = torch.empty(0, dtype=torch.long)  # rows of the attacker's data, IN for all


def fill_rows(ctx: AttackContext, half: int, seed: int) -> torch.Tensor:
    """Rows of the attacker's data that bring an online reference's ``half`` of the candidates up to
    the target's training size (none where the half is that size already)."""
    data = ctx.knowledge.data
    wanted = max(0, ctx.training_size - half) if ctx.training_size else 0
    if not wanted or data is None:
        return torch.empty(0, dtype=torch.long)
    return torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:wanted].sort().values


def reference_set(ctx: AttackContext, kind: str, k: int, repeat: int = 0) -> ReferenceSet:
    """The ``k`` references of ``kind`` (online: on candidates; offline: on the shadow data);
    ``repeat`` > 0: another independent set of them (other halves, other seeds)."""
    seed = ctx.cell_seed * 7919 + k + 104729 * repeat
    suffix = f"-r{repeat}" if repeat else ""
    fill = torch.empty(0, dtype=torch.long)
    if kind == ONLINE:
        pool, _ = candidates(ctx)
        masks = paired_masks(len(pool), k, seed)
        fill = fill_rows(ctx, len(pool) // 2, seed + 1)
    else:
        pool = ctx.knowledge.data
        if pool is None:
            raise ValueError("offline references need the attacker's shadow data")
        masks = half_masks(len(pool), k, seed)
    extra = ctx.knowledge.data.rows(fill) if len(fill) else None
    # the variants of this kind score with the first set; a repeat's set only says how repeatable they are
    series = () if repeat else tuple(v for v in ctx.settings.variants if v.startswith(kind))
    requests = [
        ModelRequest(
            f"reference-{kind}-{i}-of-{k}{suffix}",
            *(
                (pool.images[m], pool.labels[m])
                if extra is None
                else (torch.cat([pool.images[m], extra.images]), torch.cat([pool.labels[m], extra.labels]))
            ),
            defended=True,
            series=series,
        )
        for i, m in enumerate(masks)
    ]
    return ReferenceSet(kind, pool, masks, requests, fill)


@dataclass(frozen=True)
class Signals:
    """Per-example signals of the true class, ``(..., examples)``: ``log p_y`` (RMIA's ``Pr(x|theta)``
    in log space) and the logit-scaled confidence ``log p_y - log(1 - p_y)`` (LiRA's)."""

    log_p: torch.Tensor
    phi: torch.Tensor

    @staticmethod
    def stack(parts: list["Signals"]) -> "Signals":
        return Signals(torch.stack([p.log_p for p in parts]), torch.stack([p.phi for p in parts]))


def signals(access: BlackBoxAccess, images: torch.Tensor, labels: torch.Tensor) -> Signals:
    """The released float64 log-posteriors of ``images`` turned into :class:`Signals`."""
    loss, phi = loss_and_confidence(access.log_posteriors(images), labels.cpu())
    return Signals(-loss, phi)


def query_views(images: torch.Tensor, flip: bool, shift: int) -> list[torch.Tensor]:
    """The queries of each image: itself, its mirror image if ``flip``, and the four shifts by
    ``shift`` pixels (the vacated band zero-filled), all ``uint8``."""
    views = [images]
    if flip:
        views.append(images.flip(-1))
    if shift:
        for dim, step in ((-1, shift), (-1, -shift), (-2, shift), (-2, -shift)):
            moved = images.roll(step, dims=dim)
            band = slice(0, step) if step > 0 else slice(step, None)
            index = [slice(None)] * moved.dim()
            index[dim] = band
            moved[tuple(index)] = 0
            views.append(moved)
    return views


def reference_signals(
    ctx: AttackContext, refs: ReferenceSet, views: list[torch.Tensor], labels: torch.Tensor
) -> Signals:
    """The signals of every query view under every reference of ``refs``: ``(views, references,
    examples)``; the references are trained (or loaded) together first."""
    released = [ctx.models.released(m) for m in ctx.models.prepare(refs.requests)]
    return Signals.stack([Signals.stack([signals(r, v, labels) for r in released]) for v in views])


def save_masks(ctx: AttackContext, refs: list[ReferenceSet]) -> None:
    """``masks.safetensors``: per kind, ``(references, pool rows)`` with 1 where a reference trained,
    and ``<kind>_fill``, the rows of the attacker's data every reference of that kind trained on too."""
    tensors = {r.kind: r.masks.to(torch.uint8).contiguous() for r in refs}
    tensors.update({f"{r.kind}_fill": r.fill.contiguous() for r in refs if len(r.fill)})
    save_file(tensors, str(ctx.out_dir / "masks.safetensors"))


@dataclass(frozen=True)
class Scored:
    """One set of references' verdict on the candidates: metrics and scores per variant, the
    references used, and the signals the scores were computed from (saved, so the cell folder
    alone can re-score them)."""

    results: dict[str, dict[str, float]]
    saved: Scores
    refs: list[ReferenceSet]
    signals: dict[str, torch.Tensor]


class ReferenceModelAttack(Attack):
    """What the reference-model membership attacks (LiRA, RMIA) share: (B,S), variants named by the
    kind of references they use (``online*``, ``offline*``), references asked for ahead, pairs checked,
    repeats with independent references (``repeats``: is a flagged example flagged again by the same
    attack with other references?), and the same files saved: scores, most exposed members, which
    reference trained on which row, the signals behind the scores and, with repeats, every repeat's
    scores. Subclasses set ``variants``, a ``Settings`` with ``num_references``, ``variants``,
    ``exposed`` and ``repeats``, and implement :meth:`score`."""

    family = "membership"
    threat_models = ("blackbox_shadow",)
    variants: ClassVar[tuple[str, ...]]
    uses_shadow_model = False  # its references instead

    @staticmethod
    def kinds(s: Any) -> list[str]:
        """The kinds of references the selected variants need, online first."""
        return [kind for kind in (ONLINE, OFFLINE) if any(v.startswith(kind) for v in s.variants)]

    def check_settings(self, s: Any) -> None:
        if not s.variants:
            raise ValueError(f"choose at least one variant of {', '.join(self.variants)}")
        check_pairs(s.num_references, ONLINE in self.kinds(s))

    def models_wanted(self, ctx: AttackContext) -> list[ModelRequest]:
        s = ctx.settings
        return [
            r
            for repeat in range(s.repeats)
            for kind in self.kinds(s)
            for r in reference_set(ctx, kind, s.num_references, repeat).requests
        ]

    def score(self, ctx: AttackContext, pool: Labeled, is_member: torch.Tensor, repeat: int) -> Scored:
        raise NotImplementedError

    def run(self, ctx: AttackContext) -> dict[str, dict[str, float]]:
        s = ctx.settings
        pool, is_member = candidates(ctx)
        first = self.score(ctx, pool, is_member, 0)
        if s.repeats > 1:
            others = [self.score(ctx, pool, is_member, r) for r in range(1, s.repeats)]
            runs = [first, *others]
            for variant, metrics in first.results.items():
                metrics.update(repeat_agreement([run.saved[variant] for run in runs]))
            save_repeats(ctx.out_dir / "repeats.parquet", [run.saved for run in runs], pool)
        save_scores(ctx.out_dir / "scores.parquet", first.saved, pool)
        save_exposed(ctx.out_dir, first.saved, pool, s.exposed)
        save_masks(ctx, first.refs)
        save_file({k: v.contiguous() for k, v in first.signals.items()}, str(ctx.out_dir / "signals.safetensors"))
        return first.results


def repeat_agreement(runs: list[tuple[np.ndarray, np.ndarray]], fpr: float = 0.01) -> dict[str, float]:
    """Whether the members one set of references flags at ``fpr`` are flagged again by the others:
    ``repeat_jaccard``, the mean Jaccard index of the flagged members over pairs of repeats (and
    ``repeat_jaccard_chance``, its mean for independent sets of the same sizes), and
    ``repeat_stable_share``, the share of the first repeat's flagged members that every repeat flags."""
    flagged = []
    for labels, score in runs:
        threshold, _, _ = threshold_at_fpr(labels, score, fpr)
        flagged.append(set(np.flatnonzero((score >= threshold) & (labels == 1)).tolist()))
    pairs = [(a, b) for i, a in enumerate(flagged) for b in flagged[i + 1 :]]
    jaccard = [len(a & b) / len(a | b) if a | b else np.nan for a, b in pairs]
    members = float((runs[0][0] == 1).sum())
    chance = [jaccard_chance(len(a), len(b), members) for a, b in pairs]
    stable = set.intersection(*flagged)
    return {
        "repeats": float(len(runs)),
        "repeat_jaccard": float(np.nanmean(jaccard)) if not all(np.isnan(jaccard)) else float("nan"),
        "repeat_jaccard_chance": float(np.nanmean(chance)) if not all(np.isnan(chance)) else float("nan"),
        "repeat_stable_share": len(stable) / len(flagged[0]) if flagged[0] else float("nan"),
    }


def save_repeats(path, runs: list[Scores], pool: Labeled) -> None:
    """Every repeat's scores (``repeat`` column) beside the first's ``scores.parquet``."""
    import pandas as pd

    frames = [
        pd.DataFrame({"repeat": r, "variant": v, "index": pool.index.numpy(), "label": y, "score": score})
        for r, saved in enumerate(runs)
        for v, (y, score) in saved.items()
    ]
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
