#!/usr/bin/env python3
"""PyTorch's eager training step on any net mnistkit trains, as a peer to time it against.

The same loop as `../shared/bench/torch_reference.py` (the net, its optimizer, batches sliced
from a fixed permutation, `--warmup` steps, then the median of `--steps` timed steps), for
nets that script cannot describe, such as the `fast` preset's stride-2 first layer. The net
is given as mnistkit's architecture dict (JSON). Run it with an interpreter that has torch and
numpy; mnistkit never imports torch, and this script never imports mnistkit.

    python scripts/torch_peer.py --architecture '{"model": "cnn", "channels": [24, 32], ...}' \\
        --batch 256 --optimizer adam --lr 0.01 --betas 0.7,0.9 --threads 2 --mnist data/raw

Prints one line of JSON: the net, the batch size, threads, median ms per step and the implied
epoch seconds (60,000 images, last partial batch dropped).
"""

import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional


def mnist_train_images(directory: str | None) -> np.ndarray:
    path = directory and os.path.join(directory, "train-images-idx3-ubyte.gz")
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            return np.frombuffer(gzip.decompress(f.read()), np.uint8, offset=16).reshape(-1, 28, 28)
    return np.random.default_rng(0).integers(0, 256, (60000, 28, 28), dtype=np.uint8)


def build_net(architecture: dict) -> nn.Module:
    """mnistkit's cnn (valid convs, each followed by a 2x2 max pool where `pools` says, by
    default after each conv of stride 1; bias or batch norm; its activation), or its dense
    stack (logreg, mlp)."""
    if architecture.get("linear_last_hidden"):
        raise SystemExit("torch_peer.py: a linear last hidden layer is not built here")
    activation = {"relu": nn.ReLU, "tanh": nn.Tanh}[architecture.get("activation", "relu")]
    layers: list[nn.Module] = []
    channels, side = 1, 28
    if architecture["model"] == "cnn":
        sizes = architecture.get(
            "kernel_sizes", [architecture.get("kernel_size")] * len(architecture["channels"])
        )
        strides = architecture.get("strides", [1] * len(architecture["channels"]))
        pools = architecture.get("pools", [stride == 1 for stride in strides])
        for out, size, stride, pool in zip(architecture["channels"], sizes, strides, pools, strict=True):
            layers.append(
                nn.Conv2d(channels, out, size, stride=stride, bias=not architecture.get("batch_norm"))
            )
            side = (side - size) // stride + 1
            if pool:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            if architecture.get("batch_norm"):
                layers.append(nn.BatchNorm2d(out))
            layers.append(activation())
            channels = out
    layers.append(nn.Flatten())
    width = channels * side * side
    for hidden in architecture.get("hidden", []):
        layers += [nn.Linear(width, hidden), activation()]
        width = hidden
    layers.append(nn.Linear(width, architecture["num_classes"]))
    return nn.Sequential(*layers)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--architecture", required=True, help="mnistkit's architecture dict, as JSON")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--betas", default="0.9,0.999", help="Adam's betas")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--mnist", default=None, help="folder with the four MNIST .gz files")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    architecture = json.loads(args.architecture)
    images = torch.from_numpy(mnist_train_images(args.mnist).astype(np.float32) / 255.0)
    images = images.reshape(-1, 1, 28, 28)
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, 10, len(images)))
    net = build_net(architecture)
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(net.parameters(), lr=args.lr)
    else:
        beta1, beta2 = (float(beta) for beta in args.betas.split(","))
        optimizer = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(beta1, beta2))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))

    def step(i: int) -> None:
        batch = order[(i * args.batch) % (len(images) - args.batch) :][: args.batch]
        loss = functional.cross_entropy(net(images[batch]), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(args.warmup):
        step(i)
    times = []
    for i in range(args.warmup, args.warmup + args.steps):
        start = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - start)
    step_s = sorted(times)[len(times) // 2]
    print(
        json.dumps(
            {
                "net": architecture,
                "optimizer": args.optimizer,
                "batch": args.batch,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "ms_per_step": round(step_s * 1e3, 3),
                "epoch_s": round(step_s * (60000 // args.batch), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
