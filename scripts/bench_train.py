"""Training speed and accuracy, measured in one run on the same data (`make bench`).

Prints, as tables on stdout:
  - the float32 matmul throughput of this machine, and the seed configuration against the
    tutorial's own loop, against its floor, and against its five matmuls alone;
  - ms per training step of mnistkit against PyTorch's eager loop on the same nets, batch
    sizes, optimizers and thread count, side by side: the seed MLP, the `cnn` and the `fast`
    presets' nets, `cnn` with its on-device distortions and without them, as PyTorch's loop
    trains (PyTorch's side needs `--torch-python PATH`, an interpreter with torch; without it
    that column says so);
  - ms per step of the conv nets with each formulation of the convolution (patches and one
    matmul, or XLA's own) on this backend, and which one the model code takes here;
  - the `fast` preset on several seeds: the training seconds (compile included) until the test
    accuracy first reaches 99.0% and 99.2%;
  - every preset with its defaults: seconds per epoch, training time, test accuracy, the
    accuracy on people-style images of the same test digits and the gap, and what saving the
    resumable state after each epoch costs against an epoch; `cnn-best`'s seconds to 99.6%;
  - on a CPU, the seed configuration on 1 device and on N forced CPU devices.

Usage: python scripts/bench_train.py [data/mnist.npz] [--raw data/raw] [--torch-python PATH]
       [--quick] [--seeds 0,1,2] [--skip-best] [--presets fast,cnn-best]
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from mnistkit import compile_cache, models, run_state, training
from mnistkit.architectures import (
    build_architecture,
    cnn_feature_size,
    cnn_kernel_sizes,
    cnn_layers,
    member_architecture,
)
from mnistkit.arrays import load_arrays
from mnistkit.config import PRESETS, TrainConfig, config_from_options
from mnistkit.errors import MnistkitError
from mnistkit.steps import make_optimizer
from mnistkit.terms import command_line_terms
from mnistkit.train_state import EpochInputs, initial_state, stacked_tensors
from mnistkit.training import train

# Every figure below but the rerun's is a first run's, compiling everything: no cache, not
# even one the environment names for jax.
os.environ[compile_cache.CACHE_ENV] = "off"
jax.config.update("jax_compilation_cache_dir", None)
WITHOUT_JAX_CACHE = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
REPO = Path(__file__).resolve().parent.parent
TORCH_REFERENCE = REPO.parent / "shared" / "bench" / "torch_reference.py"
TORCH_PEER = REPO / "scripts" / "torch_peer.py"
sys.path.insert(0, str(REPO / "scripts"))


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

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    params = {
        "W1": jax.random.normal(k1, (784, 128)) * jnp.sqrt(2.0 / 784),
        "b1": jnp.zeros((128,)),
        "W2": jax.random.normal(k2, (128, 10)) * jnp.sqrt(2.0 / 128),
        "b2": jnp.zeros((10,)),
    }
    sgd_step.lower(params, train_x[:128], train_y[:128], 0.1).compile()
    key, seconds = jax.random.PRNGKey(0), []
    for _ in range(epochs):
        started = time.perf_counter()
        key, epoch_key = jax.random.split(key)
        order = jax.random.permutation(epoch_key, train_x.shape[0])
        for start in range(0, train_x.shape[0], 128):
            batch = order[start : start + 128]
            params = sgd_step(params, train_x[batch], train_y[batch], 0.1)
        jax.block_until_ready(params)
        seconds.append(time.perf_counter() - started)
    return {"epoch_s": steady(seconds)}


def seed_matmuls_alone(arrays: dict[str, np.ndarray], epochs: int) -> float:
    """Steady s/epoch of only the seed configuration's five matmuls per step (x@W1, h@W2, dW2,
    dh, dW1) in one `lax.scan` over gathered batches, nothing else: what XLA's matmuls reach
    at these shapes, below any real trainer."""
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

    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        jax.block_until_ready(epoch(w1, w2, train_x, batches))
        seconds.append(time.perf_counter() - started)
    return steady(seconds)


def steady(seconds: list[float]) -> float:
    """Median of the epochs after the first (which pays for compiling)."""
    return statistics.median(seconds[1:] or seconds)


def matmul_flops_per_epoch(architecture: dict, examples: int) -> float:
    """Forward, weight-gradient and input-gradient matmuls; the first layer needs no input gradient."""
    layers = []  # (rows per example, inner size, output size) of each layer's matmul
    if architecture["model"] == "cnn":
        side, channels = 28, 1
        for out, (size, stride, pool) in zip(architecture["channels"], cnn_layers(architecture), strict=True):
            out_side = (side - size) // stride + 1
            layers.append((out_side * out_side, size * size * channels, out))
            side, channels = (out_side // 2 if pool else out_side), out
        widths = [cnn_feature_size(architecture), *architecture["hidden"], architecture["num_classes"]]
    else:
        widths = [784, *architecture.get("hidden", []), architecture["num_classes"]]
    layers += [(1, fan_in, fan_out) for fan_in, fan_out in itertools.pairwise(widths)]
    macs = [rows * inner * out for rows, inner, out in layers]
    return 2 * examples * (2 * sum(macs) + sum(macs[1:]))


# Per-step speed against PyTorch ----------------------------------------------------------


def mnistkit_ms_per_step(
    arrays: dict[str, np.ndarray], config: TrainConfig, rounds: int = 5, steps: int | None = None
) -> float:
    """Median ms per step of mnistkit's compiled chunk on real shuffled batches, as it trains
    (a chunk of the first `steps` batches where given)."""
    setup = training._set_up(arrays, config, "data", "", None, lambda message: None)
    placement = setup.placement
    architecture = member_architecture(setup.architecture)
    state = placement.put_replicated(initial_state(setup.config, architecture, setup.optimizer))
    inputs = EpochInputs(setup.config, setup.data.train.size)
    indices, weights, keys = inputs.next_epoch(more_to_come=False)
    inputs.close()
    indices, weights = indices[:, :, :steps], weights[:, :, :steps]
    keys, batches = placement.put(keys, placement.replicated), placement.split(3, 2)
    rates = np.full(indices.shape[-2], setup.config.lr, np.float32)
    times = []
    for chunk in [0, *range(min(rounds, indices.shape[0]))]:  # the first call compiles
        started = time.perf_counter()
        state, totals = setup.train_chunk(
            state,
            setup.data.train.images,
            setup.data.train.labels,
            placement.put(indices[chunk], batches),
            placement.put(weights[chunk], batches),
            placement.put(rates, placement.replicated),
            keys,
            placement.put(np.int32(0), placement.replicated),
        )
        np.asarray(totals)
        times.append((time.perf_counter() - started) / indices.shape[-2] * 1e3)
    return statistics.median(times[1:])


def torch_ms_per_step(torch_python: str | None, config: TrainConfig, raw: Path | None) -> str:
    """PyTorch's median ms per step on the same net: torch_reference.py where it can describe
    the net, otherwise scripts/torch_peer.py, the same loop for any mnistkit net."""
    if torch_python is None:
        return "skipped: no --torch-python"
    architecture = build_architecture(config, 10)
    threads = ["--threads", str(len(os.sched_getaffinity(0)))]
    data = ["--mnist", str(raw)] if raw else []
    optimizer = ["--optimizer", "sgd" if config.optimizer == "sgd" else "adam", "--lr", str(config.lr)]
    if architecture["model"] == "mlp" and TORCH_REFERENCE.exists():
        command = [str(TORCH_REFERENCE), "--mlp", ",".join(map(str, architecture["hidden"]))]
    elif architecture["model"] == "cnn" and "strides" not in architecture and TORCH_REFERENCE.exists():
        convs = ",".join(
            f"{c}:{k}" for c, k in zip(architecture["channels"], cnn_kernel_sizes(architecture), strict=True)
        )
        command = [
            str(TORCH_REFERENCE),
            "--conv",
            convs,
            "--hidden",
            ",".join(map(str, architecture["hidden"])),
        ]
    else:
        betas = ["--betas", ",".join(map(str, config.adam_betas))]
        command = [str(TORCH_PEER), "--architecture", json.dumps(architecture), *betas]
    command = [torch_python, *command, "--batch", str(config.batch_size), *optimizer, *threads, *data]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        return f"failed: {result.stderr.strip().splitlines()[-1]}"
    return f"{json.loads(result.stdout)['ms_per_step']:.2f}"


def per_step_rows(arrays, torch_python: str | None, raw: Path | None) -> list[list[str]]:
    """Each net timed twice in turn, mnistkit then PyTorch, the better of each kept. A preset
    that distorts its digits on the device is timed without them too: PyTorch's loop does not
    augment, so that row is the same work on both sides."""
    rows = []
    for name in ("seed", "cnn", "fast"):
        configs = [config_from_options(name, {})]
        if configs[0].augment != "none":
            configs.append(config_from_options(name, {"augment": "none"}))
        ours: list[list[float]] = [[] for _ in configs]
        theirs = []
        for _ in range(2):
            for times, config in zip(ours, configs, strict=True):
                times.append(mnistkit_ms_per_step(arrays, config))
            theirs.append(torch_ms_per_step(torch_python, configs[0], raw))
        torch_values = [float(value) for value in theirs if value.replace(".", "", 1).isdigit()]
        torch_cell = f"{min(torch_values):.2f}" if torch_values else theirs[0]
        for times, config in zip(ours, configs, strict=True):
            mnistkit_ms = min(times)
            ratio = f"{mnistkit_ms / min(torch_values):.2f}" if torch_values else "-"
            label = name if config is configs[0] else f"{name} (as PyTorch's: no {configs[0].augment})"
            mnistkit_cell = f"{mnistkit_ms:.2f}"
            rows.append([label, describe(config), str(config.batch_size), mnistkit_cell, torch_cell, ratio])
        print(f"  per step {name}: mnistkit {ours}, torch {theirs}", file=sys.stderr, flush=True)
    return rows


def formulation_rows(arrays) -> list[list[str]]:
    """Each conv net's step with either convolution, on this backend: the model code takes
    `models.backend_convolution()`, and this shows that it is the faster one here."""
    chosen = models.backend_convolution()
    rows = []
    for name in ("cnn", "fast", "cnn-best"):
        config = config_from_options(name, {})
        times = {}
        for convolution in (models.conv2d_valid_chwn, models.conv2d_xla_chwn):
            with mock.patch.object(models, "backend_convolution", lambda c=convolution: c):
                times[convolution] = mnistkit_ms_per_step(arrays, config, rounds=3, steps=16)
        patches, xla = times[models.conv2d_valid_chwn], times[models.conv2d_xla_chwn]
        label = "patches" if chosen is models.conv2d_valid_chwn else "XLA's conv"
        rows.append([name, describe(config), f"{patches:.2f}", f"{xla:.2f}", label])
        print(f"  formulations {name}: patches {patches:.2f}, xla {xla:.2f} ms", file=sys.stderr, flush=True)
    return rows


# Presets ------------------------------------------------------------------------------------


def train_preset(arrays, name: str, workdir: Path, **options) -> dict:
    config = config_from_options(name, {"eval_test_each_epoch": True, **options})
    path = workdir / f"{name}-{options.get('seed', 0)}.safetensors"
    result = train(arrays, config, path, save_every=0, log=lambda message: None)
    seconds = [record["seconds"] for record in result.history]
    return {
        "config": config,
        "path": path,
        "epoch_s": steady(seconds),
        "train_s": sum(seconds),
        "accuracy": result.checkpoint.metadata["metrics"]["test_accuracy"],
        "curve": [(record["seconds"], record["test_accuracy"]) for record in result.history],
        "examples": int(np.isin(arrays["train_labels"], result.checkpoint.classes).sum()),
        "architecture": result.checkpoint.architecture,
        "state_save_s": state_save_seconds(config, workdir),
    }


def state_save_seconds(config: TrainConfig, workdir: Path) -> float:
    """What writing the resumable state after an epoch costs (median of 3 writes)."""
    architecture = member_architecture(build_architecture(config, len(config.classes) or 10))
    state = initial_state(config, architecture, make_optimizer(config))
    params, optimizer_state = stacked_tensors(state)
    history = [{"epoch": epoch, "train_loss": 0.1} for epoch in range(config.epochs)]
    fingerprint = run_state.fingerprint(config, "0" * 64, 1, "mnist")
    times = []
    for _ in range(3):
        started = time.perf_counter()
        saved = run_state.RunState(1, params, optimizer_state, history)
        run_state.save_state(workdir / "bench.resume", saved, fingerprint)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def seconds_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """Training seconds (compile included) until the test accuracy first reaches `target`."""
    elapsed = 0.0
    for seconds, accuracy in curve:
        elapsed += seconds
        if accuracy >= target:
            return elapsed
    return None


def curve_row(name: str, curve: list[tuple[float, float]], targets: tuple[float, ...]) -> list[str]:
    """A run's seconds to each target accuracy, then each epoch's accuracy and seconds."""
    reached = [seconds_to(curve, target) for target in targets]
    return [
        name,
        *("not reached" if seconds is None else f"{seconds:.1f}" for seconds in reached),
        " / ".join(f"{100 * accuracy:.2f}% ({seconds:.2f} s)" for seconds, accuracy in curve),
    ]


def people_gaps(paths: dict[str, Path], raw: Path | None, workdir: Path) -> dict[str, str]:
    """Each checkpoint's accuracy on people-style images of 3000 test digits (made once by
    scripts/people_style.py), and the gap to the same digits as MNIST gives them."""
    if raw is None:
        return dict.fromkeys(paths, "skipped: no --raw folder")
    from people_style import choose_digits, gap_row, write_people_style

    from mnistkit.idx import read_mnist_dir

    arrays = read_mnist_dir(raw)
    chosen = choose_digits(len(arrays["test_images"]), 0, 3000)
    images, labels = arrays["test_images"][chosen], arrays["test_labels"][chosen]
    people_paths, _ = write_people_style(
        arrays["test_images"], arrays["test_labels"], workdir / "people", 0, 3000
    )
    gaps = {}
    for name, path in paths.items():
        _, _, people, gap, *_ = gap_row(path, images, labels, people_paths)
        gaps[name] = f"{people} ({gap})"
    return gaps


def describe(config: TrainConfig) -> str:
    if config.model == "logreg":
        model = "logreg"
    elif config.model == "cnn":
        pools = config.pools or tuple(stride == 1 for stride in config.strides)
        convs = "-".join(  # 24:5/2 a conv of 24 5x5 kernels at stride 2, then p a 2x2 max pool
            f"{c}:{k}" + ("/2" if s == 2 else "") + ("p" if pool else "")
            for c, k, s, pool in zip(config.channels, config.kernel_sizes, config.strides, pools, strict=True)
        )
        model = f"cnn {convs} + {','.join(map(str, config.hidden))}" + (" bn" if config.batch_norm else "")
    else:
        model = "mlp " + "-".join(map(str, config.hidden))
    extra = f" {config.augment}" if config.augment != "none" else ""
    return f"{model}, {config.optimizer} {config.lr:g} {config.schedule}{extra}"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        " | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


# Scale ----------------------------------------------------------------------------------------


def fresh_runs_with_cache(data: str, workdir: Path) -> list[list[tuple[float, float]]]:
    """`mnistkit train --preset fast` in a fresh process twice over one new compile cache, as a
    user reruns it: each run's (seconds, test accuracy) per epoch."""
    environment = {**WITHOUT_JAX_CACHE, compile_cache.CACHE_ENV: str(workdir / "xla")}
    curves = []
    for run in ("first", "rerun"):
        history = workdir / f"fast-{run}.jsonl"
        command = [
            sys.executable,
            "-m",
            "mnistkit",
            "train",
            data,
            "-o",
            str(workdir / f"fast-{run}.safetensors"),
        ]
        command += ["--preset", "fast", "--seed", "0", "--eval-test-each-epoch", "--history", str(history)]
        subprocess.run(command, env=environment, check=True, stderr=subprocess.DEVNULL)
        records = [json.loads(line) for line in history.read_text().splitlines()]
        curves.append([(record["seconds"], record["test_accuracy"]) for record in records])
    return curves


def devices_run(data: str, devices: int, epochs: int, workdir: Path) -> dict:
    """`mnistkit train --preset seed` on `devices` forced CPU devices in a fresh process."""
    output = workdir / f"devices-{devices}.safetensors"
    history = output.with_suffix(".jsonl")
    environment = dict(WITHOUT_JAX_CACHE)
    if devices > 1 and jax.local_device_count() < devices:
        environment["XLA_FLAGS"] = (
            f"{environment.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
        )
    command = [sys.executable, "-m", "mnistkit", "train", data, "-o", str(output), "--history", str(history)]
    command += ["--preset", "seed", "--epochs", str(epochs), "--devices", str(devices), "--save-every", "0"]
    subprocess.run(command, env=environment, check=True, stderr=subprocess.DEVNULL)
    records = [json.loads(line) for line in history.read_text().splitlines()]
    return {"epoch_s": steady([r["seconds"] for r in records]), "losses": [r["train_loss"] for r in records]}


def _seeds(text: str) -> list[int]:
    parts = text.split(",")
    if not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}")
    return [int(part) for part in parts]


def _presets(text: str) -> list[str]:
    unknown = [name for name in text.split(",") if name not in PRESETS]
    if unknown:
        raise argparse.ArgumentTypeError(f"{unknown[0]!r} is not one of {', '.join(PRESETS)}")
    return text.split(",")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default="data/mnist.npz", help="the .npz from parse-to-npz")
    parser.add_argument(
        "--raw", type=Path, default=Path("data/raw"), help="the four .gz files (people-style images)"
    )
    parser.add_argument("--torch-python", help="an interpreter with torch, for PyTorch's side")
    parser.add_argument("--seeds", type=_seeds, default="0,1,2", help="seeds of the fast preset's runs")
    parser.add_argument("--quick", action="store_true", help="one fast seed; no mlp-best, cnn-best, scale")
    parser.add_argument("--skip-best", action="store_true", help="leave out cnn-best (15 minutes)")
    parser.add_argument(
        "--presets",
        type=_presets,
        default=",".join(PRESETS),
        help="the presets to train with their defaults (all)",
    )
    args = parser.parse_args()
    try:
        with command_line_terms():  # a shell's hints: `mnistkit parse-to-npz`, not load_mnist()
            arrays = load_arrays(args.data)
    except MnistkitError as error:
        raise SystemExit(f"Error: {error}") from None
    raw = args.raw if (args.raw / "t10k-images-idx3-ubyte.gz").exists() else None
    workdir = Path(tempfile.mkdtemp(prefix="mnistkit-bench-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    device = jax.devices()[0]
    print(
        f"# mnistkit training benchmark: jax {jax.__version__}, {device.platform} ({device.device_kind}), "
        f"{len(os.sched_getaffinity(0))} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    gflops = matmul_gflops()
    print(f"float32 matmul throughput: {gflops:.0f} GFLOP/s\n", flush=True)

    reference = seed_loop(arrays, 3)
    seed = train_preset(arrays, "seed", workdir)
    alone = seed_matmuls_alone(arrays, 4)
    floor = matmul_flops_per_epoch(seed["architecture"], seed["examples"]) / (gflops * 1e9)
    print("## The seed configuration (784-128-10, SGD 0.1, batch 128): seconds per epoch")
    print(
        table(
            ["what", "s/epoch", "mnistkit is"],
            [
                [
                    "the tutorial's loop, one jitted step per batch",
                    f"{reference['epoch_s']:.3f}",
                    f"{reference['epoch_s'] / seed['epoch_s']:.2f}x faster",
                ],
                [
                    "its five matmuls alone in a lax.scan",
                    f"{alone:.3f}",
                    f"{seed['epoch_s'] / alone:.2f}x their time",
                ],
                [
                    f"floor: its matmul FLOPs at {gflops:.0f} GFLOP/s",
                    f"{floor:.3f}",
                    f"{seed['epoch_s'] / floor:.2f}x",
                ],
                ["mnistkit (compiled epoch)", f"{seed['epoch_s']:.3f}", ""],
            ],
        )
        + "\n",
        flush=True,
    )

    print(
        "## ms per training step, mnistkit against PyTorch's eager loop, "
        f"{len(os.sched_getaffinity(0))} threads each"
    )
    print(
        table(
            ["preset", "net", "batch", "mnistkit ms", "PyTorch ms", "ratio"],
            per_step_rows(arrays, args.torch_python, raw),
        )
        + "\n",
        flush=True,
    )

    print(f"## ms per training step with each convolution on {device.platform} (a chunk of 16 steps)")
    print(
        table(["preset", "net", "patches ms", "XLA's conv ms", "the model takes"], formulation_rows(arrays))
        + "\n",
        flush=True,
    )

    seeds = [0] if args.quick else args.seeds
    targets = (0.99, 0.992)
    curves = [train_preset(arrays, "fast", workdir, seed=seed)["curve"] for seed in seeds]
    fast_rows = [curve_row(str(seed), curve, targets) for seed, curve in zip(seeds, curves, strict=True)]
    reached = [[seconds_to(curve, target) for curve in curves] for target in targets]
    means = [statistics.mean(v) if None not in v else None for v in reached]
    fast_rows.append(["mean", *("-" if m is None else f"{m:.1f}" for m in means), ""])
    for run, curve in zip(
        ("a fresh process", "its rerun"), fresh_runs_with_cache(args.data, workdir), strict=True
    ):
        fast_rows.append(curve_row(run, curve, targets))
    print(
        "## The fast preset: training seconds (compile included) until the test accuracy reaches; "
        "seed 0 again as `mnistkit train` in a fresh process, then rerun with its compiled programs kept"
    )
    print(
        table(["seed", "99.0%", "99.2%", "test accuracy after each epoch (its seconds)"], fast_rows) + "\n",
        flush=True,
    )

    names = [
        n
        for n in args.presets
        if not (args.quick and n in ("mlp-best", "cnn-best")) and not (args.skip_best and n == "cnn-best")
    ]
    results = {"seed": seed}
    for name in names:
        if name != "seed":
            results[name] = train_preset(arrays, name, workdir)
        print(f"  trained {name}: {100 * results[name]['accuracy']:.2f}%", file=sys.stderr, flush=True)
    gaps = people_gaps({name: results[name]["path"] for name in names if name != "3v8"}, raw, workdir)
    rows = []
    for name in names:
        result = results[name]
        rows.append(
            [
                name,
                describe(result["config"]),
                str(result["config"].epochs),
                f"{result['epoch_s']:.2f}",
                f"{result['train_s']:.1f}",
                f"{100 * result['accuracy']:.2f}%",
                gaps.get(name, "-"),
                f"{1e3 * result['state_save_s']:.0f} ms "
                f"({100 * result['state_save_s'] / result['epoch_s']:.1f}%)",
            ]
        )
    print("## Presets with their defaults (seed 0)")
    print(
        table(
            [
                "preset",
                "model",
                "epochs",
                "s/epoch",
                "train s",
                "test acc",
                "people-style (gap)",
                "state save",
            ],
            rows,
        )
        + "\n",
        flush=True,
    )

    if "cnn-best" in results:
        seconds = seconds_to(results["cnn-best"]["curve"], 0.996)
        reached_at = "not reached" if seconds is None else f"reached after {seconds:.1f} s of training"
        print(f"cnn-best, 99.6% test accuracy: {reached_at} (compile included)\n", flush=True)

    if device.platform != "cpu":
        print(f"## Data parallel: skipped, it forces CPU devices and this run is on {device.platform}")
    elif not args.quick:
        single, parallel = devices_run(args.data, 1, 3, workdir), devices_run(args.data, 4, 3, workdir)
        difference = max(abs(a - b) for a, b in zip(single["losses"], parallel["losses"], strict=True))
        print("## Data parallel: the seed configuration, 1 against 4 forced CPU devices (3 epochs)")
        print(
            f"s/epoch {single['epoch_s']:.3f} against {parallel['epoch_s']:.3f}; "
            f"largest train loss difference {difference:.1e}\n"
        )


if __name__ == "__main__":
    main()
