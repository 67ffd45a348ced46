"""The training engine's benchmark: everything measured side by side in one run, printed as ratios.

1. Our trainer (uint8 data resident on the device, normalised there, channels-last) against an
   ML-Doctor-style loop on the same SimpleCNN, data, recipe and epochs (PIL images through
   torchvision transforms and a DataLoader with 2 workers, one model at a time): images/s, ratio.
2. Many models at once: 16 SimpleCNNs (64 with ``--full``), each on its own rows, trained stacked
   (vmap), one per core (threads, CPU only) and one by one; times, ratios, and the agreement check
   (stacked against one-by-one in fp32: the largest weight difference after one epoch).
3. The default assessment's ML-Doctor attacks in a fresh results folder: wall time and the phase
   breakdown from its ``timings.json`` (skip with ``--no-assessment``).
4. On CUDA (``--gpu``, or whenever CUDA is present): ResNet18 and VGG19 training images/s at 64x64
   in fp32 and bf16, and the achieved FLOP/s as a fraction of the device's dense bf16 peak
   (``--peak-tflops``, else the table below).

Usage: ``python scripts/bench.py [--quick | --full] [--gpu] [--device cpu|cuda] [--json FILE]``.
``--quick`` (what ``make bench`` runs) finishes within 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from mldoctor_bench.data import load_dataset
from mldoctor_bench.many_models import SEQUENTIAL, STACKED, THREADS, TrainingRows, cpu_cores, train_many
from mldoctor_bench.models import build_model
from mldoctor_bench.training import Recipe, autocast, train_classifier

# Dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets, without sparsity).
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}
ML_DOCTOR_ATTACKS = "attack=[membership,membership_metric,membership_label_only,inversion,attribute,stealing]"


def hardware(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": cpu_cores(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def embedded_data():
    return load_dataset(
        "mnist5k", OmegaConf.create({"root": "data", "image_size": None, "download": False, "cache_dir": None})
    )


# --- 1. our trainer against an ML-Doctor-style loop -------------------------------------------


def ml_doctor_loop(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: Recipe,
    device: torch.device,
    workers: int = 2,
) -> None:
    """The original code's way: PIL images through torchvision transforms in a DataLoader with
    worker processes, batches copied to the device, one fp32 model at a time."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    class PilImages(Dataset):
        def __init__(self) -> None:
            mode = "L" if images.shape[1] == 1 else "RGB"
            self.pil = [Image.fromarray(im.permute(1, 2, 0).squeeze(-1).numpy(), mode) for im in images]
            self.labels = labels.tolist()
            channels = images.shape[1]
            self.transform = transforms.Compose(
                [transforms.ToTensor(), transforms.Normalize([0.5] * channels, [0.5] * channels)]
            )

        def __len__(self) -> int:
            return len(self.pil)

        def __getitem__(self, i: int):
            return self.transform(self.pil[i]), self.labels[i]

    loader = DataLoader(
        PilImages(),
        batch_size=recipe.batch_size,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )
    model.to(device).train()
    optimiser = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    for _ in range(recipe.epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()


def trainer_vs_loop(device: torch.device, n: int, epochs: int) -> dict:
    data = embedded_data()
    images, labels = data.images[:n], data.labels[:n]
    recipe = Recipe(epochs=epochs, batch_size=64)
    loop_model = build_model("simple_cnn", 1, 10, 28)
    ours_model = build_model("simple_cnn", 1, 10, 28)
    t0 = time.perf_counter()
    ml_doctor_loop(loop_model, images, labels, recipe, device)
    sync(device)
    loop_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_classifier(ours_model, images.to(device), labels.to(device), recipe, seed=0)
    sync(device)
    ours_s = time.perf_counter() - t0
    seen = n * epochs
    return {
        "images": n,
        "epochs": epochs,
        "loop_images_per_s": seen / loop_s,
        "ours_images_per_s": seen / ours_s,
        "ratio": loop_s / ours_s,
    }


# --- 2. many models at once -------------------------------------------------------------------


def many_models(device: torch.device, k: int, n: int, epochs: int) -> dict:
    data = embedded_data()
    rows = [
        TrainingRows(data.images[(i * n) % 4000 :][:n].to(device), data.labels[(i * n) % 4000 :][:n].to(device), i)
        for i in range(k)
    ]
    recipe = Recipe(epochs=epochs, batch_size=64, precision="fp32")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        initial = [build_model("simple_cnn", 1, 10, 28) for _ in range(k)]
    modes = [SEQUENTIAL, STACKED] + ([THREADS] if device.type == "cpu" and cpu_cores() >= 2 else [])
    seconds, trained = {}, {}
    for mode in modes:
        models = [build_model("simple_cnn", 1, 10, 28) for _ in range(k)]
        for m, init in zip(models, initial):
            m.load_state_dict(init.state_dict())
        sync(device)
        t0 = time.perf_counter()
        train_many(models, rows, recipe, mode=mode)
        sync(device)
        seconds[mode] = time.perf_counter() - t0
        trained[mode] = models
    diff = max(
        (a - b).abs().max().item()
        for ms, mb in zip(trained[SEQUENTIAL], trained[STACKED])
        for a, b in zip(ms.state_dict().values(), mb.state_dict().values())
        if a.is_floating_point()
    )
    out = {
        "models": k,
        "images_each": n,
        "epochs": epochs,
        "seconds": {m: round(s, 2) for m, s in seconds.items()},
        "stacked_speedup": seconds[SEQUENTIAL] / seconds[STACKED],
        "max_weight_diff": diff,
    }
    if THREADS in seconds:
        out["threads_speedup"] = seconds[SEQUENTIAL] / seconds[THREADS]
    return out


# --- 3. the default assessment ----------------------------------------------------------------


def assessment(device: str) -> dict:
    exe = Path(sys.executable).parent / "mldoctor-bench"
    cmd = [str(exe) if exe.exists() else "mldoctor-bench", ML_DOCTOR_ATTACKS, f"device={device}"]
    with tempfile.TemporaryDirectory(prefix="mldoctor-bench-") as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([*cmd, f"results_dir={tmp}"], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"the assessment failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        timings = json.loads(next(Path(tmp).glob("cells/*/timings.json")).read_text())
    phases = sorted(timings["phases"], key=lambda p: p["self_s"], reverse=True)
    return {
        "command": " ".join(cmd),
        "wall_s": wall,
        "cell_s": timings["total_s"],
        "phases": [(p["name"], p["self_s"]) for p in phases[:8]],
    }


# --- 4. CUDA: throughput and fraction of peak ---------------------------------------------------


def peak_tflops(name: str) -> float | None:
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAK_BF16_TFLOPS[key]
    return None


def training_throughput(device: torch.device, arch: str, precision: str, batch: int = 256, steps: int = 30) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(arch, 3, 10, 64).to(device, memory_format=torch.channels_last).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with autocast(precision, device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(5):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    per_step = (time.perf_counter() - t0) / steps
    return {"arch": arch, "precision": precision, "images_per_s": batch / per_step, "tflops": flops / per_step / 1e12}


def gpu_section(device: torch.device, peak: float | None) -> dict:
    peak = peak or peak_tflops(torch.cuda.get_device_name(device))
    rows = [
        training_throughput(device, arch, precision) for arch in ("resnet18", "vgg19") for precision in ("fp32", "bf16")
    ]
    for r in rows:
        r["fraction_of_bf16_peak"] = r["tflops"] / peak if peak else None
    return {"peak_bf16_tflops": peak, "throughput": rows}


# --- report -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="within 5 minutes on 2 CPU cores (make bench)")
    size.add_argument("--full", action="store_true", help="64 models, more epochs")
    parser.add_argument("--gpu", action="store_true", help="CUDA figures (needs a CUDA device)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--no-assessment", action="store_true", help="skip the default assessment")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args(argv)
    if args.gpu and not torch.cuda.is_available():
        print("no CUDA device: bench.py --gpu needs one (run without --gpu for the CPU figures)")
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    full = args.full
    results: dict = {"hardware": hardware(device)}
    print("hardware: " + ", ".join(f"{k} {v}" for k, v in results["hardware"].items()), flush=True)

    n, epochs = (2500, 10) if full else (1000, 3)
    r = results["trainer_vs_loop"] = trainer_vs_loop(device, n, epochs)
    print(
        f"\n1. trainer vs ML-Doctor-style loop (simple_cnn, {r['images']} images x {r['epochs']} epochs, {device}):\n"
        f"   loop {r['loop_images_per_s']:,.0f} images/s, ours {r['ours_images_per_s']:,.0f} images/s: "
        f"ratio {r['ratio']:.2f}x",
        flush=True,
    )

    k = 64 if full else 16
    r = results["many_models"] = many_models(device, k, 250, 1)
    agree = "agree" if r["max_weight_diff"] <= 1e-4 else "DISAGREE"
    line = (
        f"\n2. {r['models']} simple_cnns x {r['images_each']} images x {r['epochs']} epoch ({device}): "
        + ", ".join(f"{m} {s:.1f} s" for m, s in r["seconds"].items())
        + f"\n   stacked vs one-by-one: {r['stacked_speedup']:.2f}x"
    )
    if "threads_speedup" in r:
        line += f"; threads vs one-by-one: {r['threads_speedup']:.2f}x"
    print(
        line + f"\n   agreement: largest weight difference stacked vs one-by-one {r['max_weight_diff']:.2e} "
        f"({agree}: fp32 tolerance 1e-4)",
        flush=True,
    )

    if not args.no_assessment:
        r = results["assessment"] = assessment(str(device))
        print(
            f"\n3. the default assessment's ML-Doctor attacks: {r['wall_s']:.0f} s wall, "
            f"{r['cell_s']:.0f} s in the cell\n"
            f"   ({r['command']})\n   largest phases: " + ", ".join(f"{name} {s:.1f} s" for name, s in r["phases"]),
            flush=True,
        )

    if device.type == "cuda":
        r = results["gpu"] = gpu_section(device, args.peak_tflops)
        print(
            f"\n4. CUDA training throughput at 64x64 (batch 256; bf16 peak "
            f"{r['peak_bf16_tflops'] or 'unknown'} TFLOP/s):"
        )
        for row in r["throughput"]:
            frac = row["fraction_of_bf16_peak"]
            print(
                f"   {row['arch']:9s} {row['precision']}: {row['images_per_s']:,.0f} images/s, "
                f"{row['tflops']:.1f} TFLOP/s" + (f" ({100 * frac:.1f}% of bf16 peak)" if frac else "")
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0 if results["many_models"]["max_weight_diff"] <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
