"""A small DCGAN sized for the dataset's images: the image prior of GMI (ML-Doctor, Liu et al. 2022).

The generator maps a latent vector to an image in the classifiers' input space ``[-1, 1]`` (tanh);
the discriminator maps an image to one real-vs-fake logit. Both mirror each other: an image side
is halved by stride-2 convolutions down to a base side of 4 to 7 (28 -> 7, 32 -> 4, 64 -> 4), so
one network family serves 28x28 grey and 64x64 colour data. :class:`DCGAN` holds both networks,
so one state dict (one cached file) covers the pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from mldoctor_bench.data.base import normalise
from mldoctor_bench.inference import iterate_batches
from mldoctor_bench.settings import setting


def upsampling_plan(image_size: int) -> tuple[int, int]:
    """``(base side, number of stride-2 stages)`` with ``base * 2**stages == image_size``."""
    side, stages = image_size, 0
    while side % 2 == 0 and side // 2 >= 4:
        side //= 2
        stages += 1
    if stages == 0:
        raise ValueError(f"the DCGAN needs an image side of 8 or more divisible by 2, got {image_size}")
    return side, stages


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) weights, BatchNorm scales N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """Latent ``(N, latent_dim)`` -> images ``(N, channels, size, size)`` in ``[-1, 1]``."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int = 64) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        base, stages = upsampling_plan(image_size)
        widths = [width * 2 ** (stages - 1 - i) for i in range(stages)]  # e.g. 128, 64
        self.base, self.first = base, widths[0]
        self.project = nn.Sequential(
            nn.Linear(latent_dim, widths[0] * base * base, bias=False),
            nn.BatchNorm1d(widths[0] * base * base),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [
                nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(w_out),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.upsample = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(z).view(-1, self.first, self.base, self.base))


class Discriminator(nn.Module):
    """Images in ``[-1, 1]`` -> one logit each (higher: more like the training images)."""

    def __init__(self, channels: int, image_size: int, width: int = 64) -> None:
        super().__init__()
        base, stages = upsampling_plan(image_size)
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(stages):
            c_out = width * 2**i
            layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=i == 0))
            if i > 0:  # no normalisation on the input layer (DCGAN)
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.score = nn.Linear(c_in * base * base, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.body(x)).squeeze(1)


class DCGAN(nn.Module):
    """Generator and discriminator together, so a single state dict caches the pair."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int = 64) -> None:
        super().__init__()
        self.generator = Generator(latent_dim, channels, image_size, width)
        self.discriminator = Discriminator(channels, image_size, width)


@dataclass(frozen=True)
class GanRecipe:
    """How the GAN trains: Adam (lr, beta1 0.5) on the non-saturating BCE losses of DCGAN."""

    epochs: int = setting(min=1, example=20)
    lr: float = setting(2e-4, min=0, min_exclusive=True)
    batch_size: int = setting(64, min=1)
    latent_dim: int = setting(100, min=1)
    width: int = setting(64, min=1)


def seeded_dcgan(recipe: GanRecipe, channels: int, size: int, seed: int) -> DCGAN:
    """A DCGAN for the recipe with DCGAN's initialisation drawn from ``seed``."""
    gan = DCGAN(recipe.latent_dim, channels, size, recipe.width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gan.apply(init_weights)
    return gan


def train_gan(
    gan: DCGAN,
    images: torch.Tensor,
    recipe: GanRecipe,
    seed: int,
    on_epoch: Optional[Callable[[int, float, float], None]] = None,
) -> dict:
    """Train ``gan`` (initialised, e.g. by :func:`seeded_dcgan`) in place on ``uint8`` ``images`` (on
    the GAN's device); return final losses. Random draws come from a generator seeded by ``seed``.

    The generator is trained with latents from N(0, 1), as in GMI's code; the inversion later keeps
    its latents in ``[-1, 1]``.
    """
    device = images.device
    g, d = gan.generator, gan.discriminator
    gan.to(device).train()
    opt_g = torch.optim.Adam(g.parameters(), lr=recipe.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=recipe.lr, betas=(0.5, 0.999))
    generator = torch.Generator().manual_seed(seed)
    d_mean = g_mean = float("nan")
    for epoch in range(recipe.epochs):
        d_total = g_total = 0.0
        batches = 0
        for batch in iterate_batches(len(images), recipe.batch_size, generator):
            if len(batch) < 2:  # BatchNorm cannot normalise a batch of one
                continue
            real = normalise(images[batch.to(device)])
            z = torch.randn(len(batch), recipe.latent_dim, generator=generator).to(device)
            fake = g(z)
            ones, zeros = torch.ones(len(batch), device=device), torch.zeros(len(batch), device=device)
            d_loss = F.binary_cross_entropy_with_logits(d(real), ones) + F.binary_cross_entropy_with_logits(
                d(fake.detach()), zeros
            )
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = F.binary_cross_entropy_with_logits(d(fake), ones)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            d_total += float(d_loss.detach())
            g_total += float(g_loss.detach())
            batches += 1
        d_mean, g_mean = d_total / max(batches, 1), g_total / max(batches, 1)
        if on_epoch is not None:
            on_epoch(epoch + 1, d_mean, g_mean)
    gan.eval()
    return {"discriminator_loss": d_mean, "generator_loss": g_mean}
