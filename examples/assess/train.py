"""An owner's training script, independent of mldoctor-bench: trains ``tiny_net.TinyNet`` on a random
subset of an image folder (torchvision's ImageFolder) with its own normalisation,
and saves the weights both ways and the list of training files.

    python examples/assess/train.py FOLDER OUT [--members 1000] [--epochs 30]

Writes OUT/net.safetensors, OUT/net.pt (a state dict) and OUT/members.txt (paths relative to FOLDER).
"""

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file
from tiny_net import make_net
from torch import nn
from torchvision import datasets, transforms

MEAN, STD = 0.1307, 0.3081  # this owner's normalisation (MNIST's usual one), not the benchmark's


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    tf = transforms.Compose([transforms.Grayscale(1), transforms.ToTensor(), transforms.Normalize([MEAN], [STD])])
    folder = datasets.ImageFolder(str(args.folder), transform=tf)
    chosen = torch.randperm(len(folder))[: args.members].tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(folder, chosen), batch_size=64, shuffle=True)
    model = make_net(width=16, num_classes=len(folder.classes))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        model.train()
        total = correct = 0
        for x, y in loader:
            optimiser.zero_grad()
            out = model(x)
            nn.functional.cross_entropy(out, y).backward()
            optimiser.step()
            total += len(y)
            correct += int((out.argmax(1) == y).sum())
        print(f"epoch {epoch + 1}/{args.epochs}: train accuracy {correct / total:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / "net.safetensors"))
    torch.save(model.state_dict(), args.out / "net.pt")
    root = args.folder.resolve()
    members = [Path(folder.samples[i][0]).resolve().relative_to(root).as_posix() for i in chosen]
    (args.out / "members.txt").write_text("\n".join(members) + "\n")
    print(
        f"saved {args.out / 'net.safetensors'}, {args.out / 'net.pt'} and {len(members)} members in "
        f"{args.out / 'members.txt'}"
    )


if __name__ == "__main__":
    main()
