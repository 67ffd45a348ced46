"""Model inversion (ML-Doctor's ModInv, Liu et al. 2022): images of each class from the target's weights.

``per_class`` reconstructions per class, each from its own start:

- (W,N) MIFace (Fredrikson et al., CCS'15): gradient descent on the input, from the zero image of
  the classifier's normalised input space (mid grey, 127.5 of 255; further starts add uniform noise),
  on the cost ``1 - p_c`` or ``-log p_c`` of the target's *softmax* (the original descended raw
  logits). It stops after ``steps``, when the cost drops below ``threshold``, or when the best cost
  has not improved for ``window`` steps, and keeps the best-cost iterate. Pixels stay in range.
- (W,S) GMI / Secret Revealer (Zhang et al., CVPR'20): a DCGAN learnt on the attacker's shadow
  images is the image prior; for each reconstruction, latents (several restarts, kept in ``[-1, 1]``)
  minimise ``-D(G(z)) + lambda * CE(target(G(z)), c)`` by SGD with momentum; the best restart by
  that loss is the reconstruction.

Both are scored the same way, on data the attacker never sees: ``eval_accuracy`` (with its
binomial standard error ``eval_accuracy_se``), the fraction of reconstructions that an evaluation
classifier assigns to the intended class. The evaluator is a separate model of *another*
architecture than the target's (one of the same architecture accepts adversarial-looking
reconstructions the target accepts), trained on part of the partition's heldout pool; its own
``evaluator_accuracy`` is measured on the rest of that pool. ``mse`` is the mean over classes of the
pixel MSE in ``[0, 1]`` to the class's mean target-training image, and ``mse_start`` the same for
the start images, so a reader sees what the search recovered; ``target_confidence`` is the target's
mean probability of the intended class.

What needs no target: MIFace's attacker holds no data, so its baseline is chance (1/classes). GMI's
attacker holds a GAN and a shadow classifier of its own, which already draw class-typical images:
the same search from the same latents, guided by the shadow classifier instead of the target, gives
``no_target_eval_accuracy`` under the same evaluator, and ``only_attack_right`` /
``only_baseline_right`` count the reconstructions that only the target-guided, or only the
shadow-guided, search gets recognised (a paired test; ``inversion_gmi_no_target.png`` shows them).
``eval_accuracy_over_baseline`` is the accuracy above the stronger of chance and that search.

Beside that utility measure, a privacy one (:mod:`.privacy_distance`): ``distance_gap``, how much
nearer (in the evaluator's feature space) the reconstructions are to the nearest training image of
their class than to the nearest unseen one, per class (``distance_gap_class_<c>``), and the same for
the search without the target (``no_target_distance_gap``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, CachedRequest, ModelRequest, VariantMetrics
from mldoctor_bench.attacks.dcgan import DCGAN, GanRecipe, seeded_dcgan, train_gan
from mldoctor_bench.attacks.inversion_search import Inversion, gmi, miface, miface_starts
from mldoctor_bench.attacks.privacy_distance import distance_gaps
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.many_models import run_in_threads
from mldoctor_bench.metrics import intraclass_correlation
from mldoctor_bench.settings import setting
from mldoctor_bench.training import accuracy

MIN_TILE = 56  # grid tiles are upscaled (nearest) to at least this many pixels a side


def class_means(data: Labeled, num_classes: int) -> torch.Tensor:
    """Mean image of each class in ``[0, 1]``; NaN for a class absent from ``data``."""
    images = data.images.float() / 255.0
    return torch.stack(
        [
            images[data.labels == c].mean(0) if (data.labels == c).any() else torch.full(images.shape[1:], math.nan)
            for c in range(num_classes)
        ]
    )


def mse_to_class_means(images: torch.Tensor, classes: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Per-row pixel MSE in ``[0, 1]`` of ``images`` (in ``[-1, 1]``) to the mean image of its class."""
    return ((images.cpu() + 1) / 2 - means[classes.cpu()]).pow(2).flatten(1).mean(1)


def class_average(values: torch.Tensor, classes: torch.Tensor) -> float:
    """Mean over classes of each class's mean value (NaN values, i.e. absent classes, left out)."""
    per_class = [values[classes == c].nanmean() for c in classes.unique()]
    return float(torch.stack(per_class).nanmean())


def class_hits(
    classes: torch.Tensor, target_right: torch.Tensor, control_right: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """Per class ``c``, how many of its reconstructions the evaluator recognised with the target
    (``target_hits_class_<c>``) and with the control model (``control_hits_class_<c>``), and the
    intra-class correlation of the target's hits (``icc``): how far one class's reconstructions
    succeed or fail together, which is why a class, not a reconstruction, is the unit of the test."""
    out, groups = {}, []
    for c in range(num_classes):
        rows = classes == c
        out[f"target_hits_class_{c}"] = float(target_right[rows].sum())
        out[f"control_hits_class_{c}"] = float(control_right[rows].sum())
        groups.append(target_right[rows].double().tolist())
    icc = intraclass_correlation(groups) if len({len(g) for g in groups}) == 1 else math.nan
    return out if math.isnan(icc) else {**out, "icc": icc}  # undefined where every hit is alike


@torch.no_grad()
def score(
    inversion: Inversion,
    classes: torch.Tensor,
    target: torch.nn.Module,
    evaluator: torch.nn.Module,
    means: torch.Tensor,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Metrics of reconstructions (row ``i`` meant to show ``classes[i]``, in ``[-1, 1]``).

    ``eval_accuracy`` is a proportion over all reconstructions, with its binomial standard error;
    ``mse`` and ``mse_start`` (of the images the search started from) average over classes."""
    recon = inversion.images
    wanted = classes.to(recon.device)
    logits = target.eval()(recon).double()
    probability = F.softmax(logits, 1).gather(1, wanted.view(-1, 1)).squeeze(1)
    predicted = evaluator.eval()(recon.to(next(evaluator.parameters()).device)).argmax(1).cpu()
    hits = (predicted == classes.cpu()).double()
    p, n = float(hits.mean()), len(hits)
    errors = mse_to_class_means(recon, classes, means)
    start_errors = mse_to_class_means(inversion.starts, classes, means)
    metrics = {
        "mse": class_average(errors, classes.cpu()),
        "mse_start": class_average(start_errors, classes.cpu()),
        "eval_accuracy": p,
        "eval_accuracy_se": math.sqrt(p * (1 - p) / n),
        "chance_accuracy": 1.0 / logits.shape[1],  # an evaluator guessing the class uniformly
        "reconstructions": float(n),
        "target_confidence": float(probability.mean()),
        "target_accuracy": float((logits.argmax(1) == wanted).double().mean()),
    }
    return metrics, {
        "classes": classes.cpu(),
        "target_probability": probability.float().cpu(),
        "evaluator_prediction": predicted,
        "mse_per_image": errors.float(),
        "mse_start_per_image": start_errors.float(),
    }


def save_grid(rows: list[torch.Tensor], path: Path) -> None:
    """A PNG with one row per method and one column per class (images in ``[-1, 1]``)."""
    from torchvision.utils import save_image

    images = torch.cat(rows).cpu()
    scale = max(1, math.ceil(MIN_TILE / images.shape[-1]))
    images = F.interpolate((images + 1) / 2, scale_factor=scale, mode="nearest")
    save_image(images, str(path), nrow=len(rows[0]), padding=2, pad_value=1.0)


@dataclass(frozen=True, kw_only=True)
class MIFaceSettings:
    steps: int = setting(min=1, example=400)
    lr: float = setting(min=0, min_exclusive=True, example=0.1)
    window: int = setting(100, min=1)
    threshold: float = setting(1e-3, min=0)
    loss: str = setting("nll", choices=("nll", "one_minus_p"))


@dataclass(frozen=True, kw_only=True)
class GMISettings:
    steps: int = setting(min=1, example=250)
    lr: float = setting(min=0, min_exclusive=True, example=1e-2)
    momentum: float = setting(0.9, min=0, max=1)
    restarts: int = setting(min=1, example=3)
    weight: float = setting(100.0, min=0)


@dataclass(frozen=True, kw_only=True)
class InversionSettings:
    miface: MIFaceSettings
    gan: GanRecipe
    gmi: GMISettings
    # The evaluator's architecture: the first of these that differs from the target's.
    evaluator_archs: list[str] = setting(["resnet18", "vgg19"], example="[resnet18,vgg19]")
    # Evaluator epochs; null: the target's recipe.
    evaluator_epochs: Optional[int] = setting(None, min=1, example=10)
    # Share of the heldout pool kept back to measure the evaluator's own accuracy.
    evaluator_test_share: float = setting(0.2, min=0, max=1, min_exclusive=True)
    # Reconstructions per class (different starts), so eval_accuracy has a standard error.
    per_class: int = setting(4, min=1)


@ATTACKS.register("inversion")
class ModelInversion(Attack):
    """MIFace under (W,N) and GMI under (W,S); variants ``miface`` and ``gmi``."""

    family = "inversion"
    threat_models = ("whitebox_none", "whitebox_shadow")
    Settings = InversionSettings
    uses_heldout = True
    uses_control = True  # the control search, under (W,N) as well as (W,S)

    def check_settings(self, s: InversionSettings) -> None:
        from mldoctor_bench.models import ARCHS

        unknown = [a for a in s.evaluator_archs if a not in ARCHS]
        if unknown or len(set(s.evaluator_archs)) < 2:
            raise ValueError(
                f"evaluator_archs={s.evaluator_archs} must name two or more different "
                f"architectures ({', '.join(ARCHS.names())}), e.g. [resnet18,vgg19]"
            )

    def run(self, ctx: AttackContext) -> VariantMetrics:
        target, s = ctx.target.model, ctx.settings
        if ctx.control is None:
            raise ValueError("model inversion needs the control model (the cell's shadow model) for its baseline")
        variant = "miface" if ctx.threat_model.knowledge == "none" else "gmi"
        (inversion, classes), (control, _) = self.both_searches(ctx, variant)
        evaluator, evaluator_metrics = self.evaluator(ctx)
        means = class_means(ctx.evaluation.members, ctx.num_classes)
        metrics, per_image = score(inversion, classes, target, evaluator, means)
        metrics.update(evaluator_metrics)
        metrics.update(self.no_target(ctx, control, variant, classes, evaluator, per_image["evaluator_prediction"]))
        metrics["eval_accuracy_over_baseline"] = metrics["eval_accuracy"] - metrics["no_target_eval_accuracy"]
        # privacy beside utility (:mod:`.privacy_distance`); a stand-in evaluator without an embedding: none
        if hasattr(evaluator, "embed"):
            found = {"": inversion.images, "no_target_": control.images}
            ev = ctx.evaluation
            metrics.update(
                distance_gaps(evaluator, found, classes, ev.members, ev.target_test, ctx.num_classes, ctx.cell_seed)
            )
        if "steps" in inversion.extra:
            metrics["mean_steps"] = float(inversion.extra["steps"].float().mean())
        first = inversion.images.view(ctx.num_classes, s.per_class, *inversion.images.shape[1:])
        save_grid([first[:, r] for r in range(s.per_class)], ctx.out_dir / f"inversion_{variant}.png")
        tensors = {
            "images": ((inversion.images.cpu() + 1) / 2),
            "starts": ((inversion.starts.cpu() + 1) / 2),
            **per_image,
            **inversion.extra,
        }
        save_file(
            {k: v.contiguous() for k, v in tensors.items()}, str(ctx.out_dir / f"inversion_{variant}.safetensors")
        )
        return {variant: metrics}

    @staticmethod
    def both_searches(ctx: AttackContext, variant: str) -> list[tuple[Inversion, torch.Tensor]]:
        """The search guided by the target and the same search from the same starts guided by the
        control model, side by side on a CPU (one core each, as models train: the searches' small
        batches leave a second core idle otherwise), one after the other elsewhere."""
        name = "MIFace" if variant == "miface" else "GMI"
        if variant == "miface":
            search = ModelInversion.miface
        else:
            gan = ModelInversion.train_or_load_gan(ctx).to(ctx.device)  # once, before the searches share it
            search = partial(ModelInversion.gmi, gan=gan)
        tasks = [
            partial(search, ctx, ctx.target.model, f"{name} ({ctx.threat_model.short})"),
            partial(search, ctx, ctx.control.model, f"{name} without the target ({ctx.threat_model.short})"),
        ]
        return run_in_threads(tasks) if torch.device(ctx.device).type == "cpu" else [t() for t in tasks]

    def models_wanted(self, ctx: AttackContext) -> list:
        wanted = [self.evaluator_split(ctx)[0]]
        if ctx.threat_model.knowledge != "none":
            wanted.append(self.gan_request(ctx))
        return wanted

    @staticmethod
    def evaluator_split(ctx: AttackContext) -> tuple[ModelRequest, torch.Tensor]:
        """The evaluator to train and the heldout rows it is tested on (see :meth:`evaluator`)."""
        s = ctx.settings
        if ctx.heldout is None or ctx.models is None or len(ctx.heldout) < 2:
            raise ValueError("model inversion needs the partition's heldout pool and the cell's model service")
        arch = next(a for a in s.evaluator_archs if a != ctx.target_arch)
        n = len(ctx.heldout)
        n_test = min(n - 1, max(1, round(n * s.evaluator_test_share)))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(ctx.cell_seed))
        fit, held = order[n_test:], order[:n_test]
        request = ModelRequest(
            "evaluator", ctx.heldout.images[fit], ctx.heldout.labels[fit], epochs=s.evaluator_epochs, arch=arch
        )
        return request, held

    @staticmethod
    def evaluator(ctx: AttackContext) -> tuple[torch.nn.Module, dict[str, float]]:
        """The separate evaluation classifier: an architecture other than the target's, trained on
        part of the partition's heldout pool (rows no other model sees) and tested on the rest. One
        evaluator per cell: every threat model's reconstructions are judged by the same one."""
        request, held = ModelInversion.evaluator_split(ctx)
        model = ctx.models.classifier(
            request.role, request.images, request.targets, epochs=request.epochs, arch=request.arch
        )
        fit, arch = request.images, request.arch
        acc = accuracy(model, ctx.heldout.images[held].to(ctx.device), ctx.heldout.labels[held])
        info = {
            "evaluator_arch": arch,
            "evaluator_train_size": len(fit),
            "evaluator_test_size": len(held),
            "evaluator_accuracy": acc,
        }
        (ctx.out_dir / "evaluator.json").write_text(json.dumps(info, indent=2))
        return model, {
            "evaluator_accuracy": acc,
            "evaluator_train_size": float(len(fit)),
            "evaluator_test_size": float(len(held)),
        }

    @staticmethod
    def miface(ctx: AttackContext, target: torch.nn.Module, label: str) -> tuple[Inversion, torch.Tensor]:
        """MIFace with the run's settings; the attacker holds no data, only the input's shape."""
        s = ctx.settings.miface
        shape = tuple(ctx.evaluation.members.images.shape[1:])  # only the shape, which the weights imply
        starts, classes = miface_starts(ctx.num_classes, ctx.settings.per_class, shape, ctx.seed)
        inversion = miface(
            target, starts, classes, s.steps, s.lr, s.window, s.threshold, s.loss, ctx.progress(label, s.steps)
        )
        return inversion, classes

    @staticmethod
    def no_target(
        ctx: AttackContext,
        inversion: Inversion,
        variant: str,
        classes: torch.Tensor,
        evaluator: torch.nn.Module,
        with_target: torch.Tensor,
    ) -> dict[str, float]:
        """The ``inversion`` of the same search from the same starts, guided by the control model (the
        target's architecture and recipe, trained on data disjoint from the target's: the cell's
        shadow model) instead of the target, judged by the same evaluator: what a model that never saw
        the training data gives. Per class, the hits of both searches (the class is the unit of the
        verdict's test) and the intra-class correlation of the target-guided hits."""
        s = ctx.settings
        images = inversion.images.view(ctx.num_classes, s.per_class, *inversion.images.shape[1:])
        save_grid([images[:, r] for r in range(s.per_class)], ctx.out_dir / f"inversion_{variant}_no_target.png")
        with torch.no_grad():
            predicted = evaluator.eval()(inversion.images.to(next(evaluator.parameters()).device)).argmax(1).cpu()
        wanted = classes.cpu()
        return {
            "no_target_eval_accuracy": float((predicted == wanted).double().mean()),
            **class_hits(wanted, with_target == wanted, predicted == wanted, ctx.num_classes),
        }

    @staticmethod
    def gmi(ctx: AttackContext, target: torch.nn.Module, label: str, gan: DCGAN) -> tuple[Inversion, torch.Tensor]:
        """GMI with the run's settings, on ``gan``, the prior learnt from the shadow images."""
        s = ctx.settings.gmi
        classes = torch.arange(ctx.num_classes).repeat_interleave(ctx.settings.per_class)
        inversion = gmi(
            gan.to(ctx.device),
            target,
            classes,
            s.steps,
            s.lr,
            s.momentum,
            s.restarts,
            s.weight,
            ctx.seed,
            ctx.progress(label, s.steps),
        )
        return inversion, classes

    @staticmethod
    def train_or_load_gan(ctx: AttackContext) -> DCGAN:
        """The attacker's DCGAN on its shadow images, through the model cache."""
        r = ModelInversion.gan_request(ctx)
        return ctx.models.cached(r.role, r.payload, r.build, r.train).model

    @staticmethod
    def gan_request(ctx: AttackContext) -> CachedRequest:
        """The attacker's DCGAN on its shadow images (initialised from ``ctx.seed`` when built)."""
        data = ctx.knowledge.data
        if data is None:
            raise ValueError("GMI needs the attacker's shadow images")
        recipe = ctx.settings.gan
        channels, size = int(data.images.shape[1]), int(data.images.shape[-1])
        payload = {
            "recipe": vars(recipe),
            "channels": channels,
            "size": size,
            "seed": ctx.seed,
            "images": len(data),
            "threat_model": ctx.threat_model.name,
        }
        images = data.images.to(ctx.device)

        def train(gan: DCGAN) -> dict:
            advance = ctx.progress("train GAN (GMI prior)", recipe.epochs)
            return train_gan(gan, images, recipe, ctx.seed, on_epoch=lambda *_: advance(1))

        return CachedRequest(
            "gan",
            payload,
            lambda: seeded_dcgan(recipe, channels, size, ctx.seed),
            train,
            thread_safe=True,
            images_seen=len(images) * recipe.epochs,
        )
