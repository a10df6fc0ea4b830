"""Training speed and accuracy, measured in one run on the same data (`make bench`).

Prints, as tables on stdout:
  - the float32 matmul throughput of this machine, which sets the floor;
  - the seed trainer's loop (one jitted step per batch, dispatched from Python; reproduced
    here as the reference) against mnistkit's compiled epochs on the same configuration:
    steady seconds per epoch, compile time, and their ratio;
  - each model's floor (matmul FLOPs of one epoch / throughput) and mnistkit's ratio to it;
    for the seed configuration also its matmuls alone in a scan, what XLA reaches at its shapes;
  - the CNN step with XLA's own convolutions against mnistkit's patches-and-matmul;
  - every preset trained with its defaults: seconds per epoch, training time, test accuracy;
  - the seed configuration on 1 device and data parallel on N devices (forced CPU devices
    when the machine has one: `mnistkit train` in a subprocess with XLA_FLAGS), with the
    largest per-epoch loss difference between them;
  - ensemble throughput: K models trained at once under `jax.vmap` against one, in
    models x epochs per second (CNNs; MLPs with --quick);
  - with --ensemble-accuracy, the test accuracy of an ensemble of 5 CNNs with the preset's
    defaults against each of its members (each one CNN as `--seed i` trains it; ~15 min here).

Usage: python scripts/bench_train.py [data/mnist.npz] [--quick] [--devices N] [--ensemble-accuracy]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnistkit import models
from mnistkit.architectures import build_architecture, cnn_feature_size
from mnistkit.arrays import load_arrays
from mnistkit.config import PRESETS, config_from_options
from mnistkit.steps import TrainState
from mnistkit.training import train


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Sustained float32 matmul throughput, the ceiling for everything below."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, b).block_until_ready()
    started = time.perf_counter()
    for _ in range(repeats):
        matmul(a, b).block_until_ready()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def seed_loop(arrays: dict[str, np.ndarray], epochs: int) -> dict[str, float]:
    """The seed trainer as it was written: one jitted SGD step per batch, driven from Python."""
    train_x = jnp.asarray(arrays["train_images"].reshape(-1, 784).astype(np.float32) / 255.0)
    train_y = jnp.asarray(arrays["train_labels"].astype(np.int32))
    test_x = jnp.asarray(arrays["test_images"].reshape(-1, 784).astype(np.float32) / 255.0)
    test_y = jnp.asarray(arrays["test_labels"].astype(np.int32))

    def forward(params, x):
        hidden = jax.nn.relu(x @ params["W1"] + params["b1"])
        return hidden @ params["W2"] + params["b2"]

    def loss(params, x, y):
        log_probs = jax.nn.log_softmax(forward(params, x))
        return -jnp.mean(jnp.sum(jax.nn.one_hot(y, 10) * log_probs, axis=-1))

    @jax.jit
    def sgd_step(params, x, y, lr):
        grads = jax.grad(loss)(params, x, y)
        return {k: params[k] - lr * grads[k] for k in params}

    key = jax.random.PRNGKey(0)
    k1, k2 = jax.random.split(key)
    params = {
        "W1": jax.random.normal(k1, (784, 128)) * jnp.sqrt(2.0 / 784),
        "b1": jnp.zeros((128,)),
        "W2": jax.random.normal(k2, (128, 10)) * jnp.sqrt(2.0 / 128),
        "b2": jnp.zeros((10,)),
    }
    compile_started = time.perf_counter()
    sgd_step.lower(params, train_x[:128], train_y[:128], 0.1).compile()
    compile_s = time.perf_counter() - compile_started
    n = train_x.shape[0]
    epoch_seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        key, epoch_key = jax.random.split(key)
        order = jax.random.permutation(epoch_key, n)
        for start in range(0, n, 128):
            batch = order[start : start + 128]
            params = sgd_step(params, train_x[batch], train_y[batch], 0.1)
        jax.block_until_ready(params)
        epoch_seconds.append(time.perf_counter() - started)
    accuracy = float(jnp.mean(jnp.argmax(forward(params, test_x), axis=-1) == test_y))
    return {"epoch_s": _steady(epoch_seconds), "compile_s": compile_s, "accuracy": accuracy}


def seed_matmuls_alone(arrays: dict[str, np.ndarray], epochs: int) -> float:
    """Steady s/epoch of only the seed configuration's five matmuls per step (the floor's
    FLOPs: x@W1, h@W2, dW2, dh, dW1) in one `lax.scan` over gathered batches, nothing else:
    what XLA's matmuls reach at these shapes, below any real trainer."""
    train_x = jnp.asarray(arrays["train_images"].reshape(-1, 784).astype(np.float32) / 255.0)
    order = jax.random.permutation(jax.random.PRNGKey(0), train_x.shape[0])
    batches = order[: order.shape[0] // 128 * 128].reshape(-1, 128)
    w1 = jax.random.normal(jax.random.PRNGKey(1), (784, 128)) * 0.05
    w2 = jax.random.normal(jax.random.PRNGKey(2), (128, 10)) * 0.1

    @jax.jit
    def epoch(w1, w2, images, batches):
        def step(weights, indices):
            w1, w2 = weights
            x = images[indices]
            hidden = x @ w1
            logits = hidden @ w2
            d_hidden = logits @ w2.T
            return (w1 - 1e-6 * (x.T @ d_hidden), w2 - 1e-6 * (hidden.T @ logits)), None

        return jax.lax.scan(step, (w1, w2), batches)[0]

    epoch_seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        jax.block_until_ready(epoch(w1, w2, train_x, batches))
        epoch_seconds.append(time.perf_counter() - started)
    return _steady(epoch_seconds)


def _steady(epoch_seconds: list[float]) -> float:
    """Median of the epochs after the first (which pays for compiling)."""
    return statistics.median(epoch_seconds[1:] or epoch_seconds)


def matmul_flops_per_epoch(architecture: dict, examples: int) -> float:
    """Forward, weight-gradient and input-gradient matmuls; the first layer needs no input gradient."""
    layers = []  # (rows per example, inner size, output size) of each layer's matmul
    if architecture["model"] == "cnn":
        side, channels = 28, 1
        for out_channels in architecture["channels"]:
            out_side = side - architecture["kernel_size"] + 1
            layers.append((out_side * out_side, architecture["kernel_size"] ** 2 * channels, out_channels))
            side, channels = out_side // 2, out_channels
        widths = [cnn_feature_size(architecture), *architecture["hidden"], architecture["num_classes"]]
    else:
        hidden = architecture.get("hidden", []) if architecture["model"] == "mlp" else []
        widths = [784, *hidden, architecture["num_classes"]]
    layers += [(1, fan_in, fan_out) for fan_in, fan_out in itertools.pairwise(widths)]
    macs = [rows * inner * out for rows, inner, out in layers]
    return 2 * examples * (2 * sum(macs) + sum(macs[1:]))


def conv2d_valid_nhwc(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """mnistkit's former convolution: (N, H, W, C) * (k, k, C, F) as patches and one matmul."""
    size = kernel.shape[0]
    height, width = x.shape[1] - size + 1, x.shape[2] - size + 1
    patches = jnp.stack(
        [x[:, i : i + height, j : j + width, :] for i, j in itertools.product(range(size), range(size))],
        axis=3,
    )
    return patches.reshape(*patches.shape[:3], -1) @ kernel.reshape(-1, kernel.shape[-1])


def cnn_nhwc(params, architecture, x, conv2d):
    """The cnn preset's model in NHWC with a given convolution, for the comparison."""
    x = x.reshape(x.shape[0], 28, 28, 1)
    for index in range(len(architecture["channels"])):
        x = conv2d(x, params[f"conv_{index}.kernel"])
        n, h, w, c = x.shape
        x = x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
        x = jax.nn.relu(x + params[f"conv_{index}.bias"])
    return models.dense_stack(params, architecture, x.reshape(x.shape[0], cnn_feature_size(architecture)))


def cnn_step_seconds(conv2d, batch_size: int, steps: int) -> tuple[float, float]:
    """Seconds per training step of the CNN inside one `lax.scan`, and the compile time;
    `conv2d` None is mnistkit's own model."""
    architecture = build_architecture(config_from_options("cnn", {}), 10)
    params = models.init(jax.random.PRNGKey(0), architecture)
    optimizer = optax.adam(1e-3)
    images = jax.random.uniform(jax.random.PRNGKey(1), (steps, batch_size, 28, 28))
    labels = jax.random.randint(jax.random.PRNGKey(2), (steps, batch_size), 0, 10)
    weights = jnp.ones((steps, batch_size))

    def loss(p, x, y, w):
        logits = models.cnn(p, architecture, x) if conv2d is None else cnn_nhwc(p, architecture, x, conv2d)
        log_probs = jax.nn.log_softmax(logits)
        return -jnp.sum(jnp.take_along_axis(log_probs, y[:, None], axis=1)[:, 0] * w) / jnp.sum(w)

    @jax.jit
    def run(state, images, labels, weights):
        def step(state, batch):
            grads = jax.grad(loss)(state.params, *batch)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            return TrainState(optax.apply_updates(state.params, updates), opt_state), None

        return jax.lax.scan(step, state, (images, labels, weights))[0]

    state = TrainState(params, optimizer.init(params))
    started = time.perf_counter()
    compiled = run.lower(state, images, labels, weights).compile()
    compile_s = time.perf_counter() - started
    jax.block_until_ready(compiled(state, images, labels, weights))
    started = time.perf_counter()
    jax.block_until_ready(compiled(state, images, labels, weights))
    return (time.perf_counter() - started) / steps, compile_s


def xla_conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def train_preset(arrays, name: str, epochs: int | None, workdir: Path, test_each_epoch: bool = False) -> dict:
    options = {"epochs": epochs} if epochs else {}
    if test_each_epoch:
        options["eval_test_each_epoch"] = True
    config = config_from_options(name, options)
    started = time.perf_counter()
    result = train(arrays, config, workdir / f"{name}.safetensors", log=lambda message: None)
    seconds = [record["seconds"] for record in result.history]
    return {
        "config": config,
        "epoch_s": _steady(seconds),
        "first_epoch_s": seconds[0],
        "train_s": sum(seconds),
        "wall_s": time.perf_counter() - started,
        "accuracy": result.checkpoint.metadata["metrics"]["test_accuracy"],
        "architecture": result.checkpoint.metadata["architecture"],
        "examples": int(np.isin(arrays["train_labels"], result.checkpoint.classes).sum()),
        "test_curve": [(record["seconds"], record["test_accuracy"]) for record in result.history],
    }


def time_to_accuracy(result: dict, targets: tuple[float, ...] = (0.99, 0.992)) -> list[list[str]]:
    """Training seconds until the test accuracy first reaches each target, with and without compile."""
    compile_s = result["first_epoch_s"] - result["epoch_s"]
    rows = []
    for target in targets:
        elapsed, reached = 0.0, None
        for epoch, (seconds, accuracy) in enumerate(result["test_curve"], 1):
            elapsed += seconds
            if accuracy is not None and accuracy >= target:
                reached = epoch
                break
        if reached is None:
            rows.append([f"{100 * target:.1f}%", "not reached", "-", "-"])
        else:
            without_compile = elapsed - compile_s
            rows.append([f"{100 * target:.1f}%", str(reached), f"{elapsed:.1f}", f"{without_compile:.1f}"])
    return rows


def devices_run(data: str, devices: int, epochs: int, workdir: Path) -> dict:
    """`mnistkit train --preset seed` on `devices` devices in a fresh process: forced CPU devices
    when the machine has a single one (the flag must be set before jax starts)."""
    output = workdir / f"devices-{devices}.safetensors"
    history = output.with_suffix(".jsonl")
    environment = dict(os.environ)
    if devices > 1 and jax.local_device_count() < devices:
        environment["XLA_FLAGS"] = (
            f"{environment.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
        )
    command = [sys.executable, "-m", "mnistkit", "train", data, "-o", str(output), "--history", str(history)]
    command += ["--preset", "seed", "--epochs", str(epochs), "--devices", str(devices)]
    subprocess.run(command, env=environment, check=True, stderr=subprocess.DEVNULL)
    records = [json.loads(line) for line in history.read_text().splitlines()]
    seconds = [record["seconds"] for record in records]
    return {
        "epoch_s": _steady(seconds),
        "first_epoch_s": seconds[0],
        "losses": [record["train_loss"] for record in records],
        "accuracy": records[-1]["test_accuracy"],
    }


def ensemble_throughput(arrays, name: str, members: int, epochs: int, workdir: Path) -> list[list[str]]:
    """Steady epochs of one model and of `members` models at once, as table rows."""
    rows = []
    for count in (1, members):
        options = {"epochs": epochs, **({"ensemble": count} if count > 1 else {})}
        config = config_from_options(name, options)
        result = train(arrays, config, workdir / f"ensemble-{count}.safetensors", log=lambda m: None)
        seconds = [record["seconds"] for record in result.history]
        epoch_s = _steady(seconds)
        rows.append(
            [f"{count} x {name}", f"{epoch_s:.2f}", f"{seconds[0] - epoch_s:.1f}", f"{count / epoch_s:.2f}"]
        )
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        " | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default="data/mnist.npz", help="the .npz from parse-to-npz")
    parser.add_argument("--quick", action="store_true", help="2 epochs per preset, fewer CNN steps (~2 min)")
    parser.add_argument("--devices", type=int, default=4, help="N of the 1 vs N device comparison")
    parser.add_argument(
        "--ensemble-accuracy",
        action="store_true",
        help="also train 5 CNNs at once with the cnn preset (long)",
    )
    args = parser.parse_args()
    arrays = load_arrays(args.data)
    workdir = Path("build/bench")
    workdir.mkdir(parents=True, exist_ok=True)
    device = jax.devices()[0]
    print(f"# mnistkit training benchmark: jax {jax.__version__}, {device.platform} ({device.device_kind})")
    print(f"# data: {args.data}; {'quick run' if args.quick else 'full run'}\n")

    gflops = matmul_gflops()
    print(f"float32 matmul throughput: {gflops:.0f} GFLOP/s\n", flush=True)

    seed_epochs = 2 if args.quick else 5
    reference = seed_loop(arrays, seed_epochs)
    ours = train_preset(arrays, "seed", seed_epochs, workdir)
    print("## The seed trainer's configuration (784-128-10, SGD 0.1, batch 128)")
    print(
        table(
            ["trainer", "s/epoch", "compile s", "test acc"],
            [
                [
                    "seed loop (step per batch)",
                    f"{reference['epoch_s']:.3f}",
                    f"{reference['compile_s']:.2f}",
                    f"{100 * reference['accuracy']:.2f}%",
                ],
                [
                    "mnistkit (compiled epoch)",
                    f"{ours['epoch_s']:.3f}",
                    f"{ours['first_epoch_s'] - ours['epoch_s']:.2f}",
                    f"{100 * ours['accuracy']:.2f}%",
                ],
            ],
        )
    )
    print(
        f"speed-up over the seed loop: {reference['epoch_s'] / ours['epoch_s']:.2f}x "
        f"(compile for mnistkit: first epoch minus a steady one)\n",
        flush=True,
    )
    seed_flops = matmul_flops_per_epoch(ours["architecture"], ours["examples"])
    seed_floor = seed_flops / (gflops * 1e9)
    alone = seed_matmuls_alone(arrays, seed_epochs + 1)
    ours_s = ours["epoch_s"]
    print("## The seed configuration against its floor")
    print(
        table(
            ["what", "s/epoch", "vs floor"],
            [
                [f"floor: {seed_flops / 1e9:.1f} GFLOP at {gflops:.0f} GFLOP/s", f"{seed_floor:.3f}", "1.0x"],
                ["its matmuls alone in lax.scan", f"{alone:.3f}", f"{alone / seed_floor:.2f}x"],
                ["mnistkit (compiled epoch)", f"{ours_s:.3f}", f"{ours_s / seed_floor:.2f}x"],
            ],
        )
    )
    print(f"mnistkit / its matmuls alone: {ours_s / alone:.2f}x\n", flush=True)

    cnn_steps = 10 if args.quick else 40
    xla_step, xla_compile = cnn_step_seconds(xla_conv2d, 128, max(4, cnn_steps // 4))
    nhwc_step, nhwc_compile = cnn_step_seconds(conv2d_valid_nhwc, 128, cnn_steps)
    our_step, our_compile = cnn_step_seconds(None, 128, cnn_steps)
    print("## CNN training step (batch 128) inside lax.scan")
    print(
        table(
            ["convolution", "ms/step", "s/epoch (469 steps)", "compile s"],
            [
                [
                    "XLA conv_general_dilated",
                    f"{1000 * xla_step:.1f}",
                    f"{469 * xla_step:.1f}",
                    f"{xla_compile:.2f}",
                ],
                [
                    "patches + matmul, NHWC (before)",
                    f"{1000 * nhwc_step:.1f}",
                    f"{469 * nhwc_step:.1f}",
                    f"{nhwc_compile:.2f}",
                ],
                [
                    "mnistkit patches + matmul, (C, H, W, N)",
                    f"{1000 * our_step:.1f}",
                    f"{469 * our_step:.1f}",
                    f"{our_compile:.2f}",
                ],
            ],
        )
    )
    print(f"mnistkit is {xla_step / our_step:.1f}x faster than XLA's own convolution\n", flush=True)

    rows = []
    results = {"seed": ours}
    for name in PRESETS:
        if name != "seed":
            results[name] = train_preset(arrays, name, 2 if args.quick else None, workdir, name == "cnn")
        result = results[name]
        floor_s = matmul_flops_per_epoch(result["architecture"], result["examples"]) / (gflops * 1e9)
        config = result["config"]
        rows.append(
            [
                name,
                _describe(config),
                str(config.epochs),
                f"{result['epoch_s']:.2f}",
                f"{floor_s:.2f}",
                f"{result['epoch_s'] / floor_s:.1f}x",
                f"{result['train_s']:.1f}",
                f"{100 * result['accuracy']:.2f}%",
            ]
        )
        print(f"  trained {name}: {100 * result['accuracy']:.2f}%", file=sys.stderr, flush=True)
    print("## Presets with their defaults (seed 0); floor = matmul FLOPs of an epoch / measured throughput")
    print(table(["preset", "model", "epochs", "s/epoch", "floor s", "vs floor", "train s", "test acc"], rows))
    print("\n## CNN (cnn preset): training time until the test accuracy first reaches a target")
    print(table(["target", "epoch", "s with compile", "s without"], time_to_accuracy(results["cnn"])))

    device_epochs = 3
    single = devices_run(args.data, 1, device_epochs, workdir)
    parallel = devices_run(args.data, args.devices, device_epochs, workdir)
    difference = max(abs(a - b) for a, b in zip(single["losses"], parallel["losses"], strict=True))
    kind = "forced CPU devices" if device.platform == "cpu" else f"{device.platform} devices"
    print(f"\n## Data parallel: the seed configuration, {device_epochs} epochs, 1 vs {args.devices} {kind}")
    device_rows = [
        [
            str(count),
            f"{run['epoch_s']:.3f}",
            f"{run['first_epoch_s'] - run['epoch_s']:.2f}",
            f"{100 * run['accuracy']:.2f}%",
        ]
        for count, run in ((1, single), (args.devices, parallel))
    ]
    print(table(["devices", "s/epoch", "compile s", "test acc"], device_rows))
    print(f"largest per-epoch train loss difference: {difference:.2e}", flush=True)

    members, name = 5, "mlp" if args.quick else "cnn"
    print(f"\n## Ensembles: {members} models in one compiled program (jax.vmap) against one, 2 epochs")
    throughput = ensemble_throughput(arrays, name, members, 2, workdir)
    print(table(["models", "s/epoch", "compile s", "models x epochs / s"], throughput), flush=True)

    if args.ensemble_accuracy:
        config = config_from_options("cnn", {"ensemble": members})
        result = train(arrays, config, workdir / "cnn-ensemble.safetensors", log=lambda m: None)
        metrics = result.checkpoint.metadata["metrics"]
        print(f"\n## Test accuracy: an ensemble of {members} CNNs (cnn preset) against its members")
        rows = [[f"cnn --seed {m['seed']}", f"{100 * m['test_accuracy']:.2f}%"] for m in metrics["members"]]
        mean = statistics.mean(m["test_accuracy"] for m in metrics["members"])
        rows += [
            ["mean of one CNN", f"{100 * mean:.2f}%"],
            ["ensemble", f"{100 * metrics['test_accuracy']:.2f}%"],
        ]
        print(table(["model", "test acc"], rows))
        print(f"training: {sum(record['seconds'] for record in result.history):.0f} s for {members} CNNs")


def _describe(config) -> str:
    if config.model == "logreg":
        model = "logreg"
    elif config.model == "cnn":
        model = f"cnn 16-32 + {','.join(map(str, config.hidden))}"
    else:
        model = "mlp " + "-".join(map(str, config.hidden))
    digits = f" digits {','.join(config.classes)}" if config.classes else ""
    extra = " shift" if config.augment == "shift" else ""
    return f"{model}, {config.optimizer} {config.lr:g} {config.schedule}{extra}{digits}"


if __name__ == "__main__":
    main()
