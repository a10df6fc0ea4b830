"""The `mnistkit` command line: a thin click skin over the library's plain functions.

Every command parses its options, checks its output paths once (`_output`), and calls
the functions a Python user calls. Heavy modules are imported inside the commands that
need them, so `mnistkit --help` imports neither numpy nor jax, and fetch, parse-to-npz,
predict, eval, info and the pictures start without jax.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mnistkit import __version__, terms
from mnistkit.architectures import ACTIVATIONS, MODEL_KINDS, MODELS
from mnistkit.atomic import (
    STDOUT,
    WRITE_ERRNOS,
    check_writable_target,
    describe_write_error,
    is_stdout,
    same_path,
    taken_back_on_failure,
    written_in_place,
)
from mnistkit.config import INITS, NORMALIZATIONS, OPTIMIZERS, PRESETS, SCHEDULES, TrainConfig
from mnistkit.datasets import DATASET_NAMES, DEFAULT_DATASET, named_by_digits
from mnistkit.errors import EXIT_BELOW_MIN_ACCURACY, EXIT_BROKEN_PIPE, MnistkitError, PictureTooLarge
from mnistkit.mirrors import DEFAULT_CACHE_DIR, DEFAULT_MIN_RATE_BYTES_PER_S, DEFAULT_TIMEOUT_S, MIRROR_ENV
from mnistkit.terms import command_line_terms

if TYPE_CHECKING:
    from fractions import Fraction

    from mnistkit.checkpoint import Checkpoint


class PathType(click.Path):
    """A path that is not empty: `Path("")` is the current folder, so an unset shell variable
    (`mnistkit predict "$MODEL" x.png`) would otherwise name it and fail far from its cause.
    What the path names is left to the command, which reports a missing or unreadable file
    in its one line (and predicts the other images), not as a usage error."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value:
            self.fail("empty path (an unset shell variable?)", param, ctx)
        return self.coerce_path_result(value)


class MnistkitCommand(click.Command):
    """A command whose output paths are checked, before it runs, against its inputs and each
    other: `train data.npz -o data.npz` would replace the data with the model."""

    def invoke(self, ctx: click.Context):
        _check_outputs_apart(ctx)
        return super().invoke(ctx)


class MnistkitGroup(click.Group):
    """Turns MnistkitError into one line on stderr and exit status 1, never a traceback; so
    too a standard output that cannot be written (a full disk). A reader that stops early
    (`| head`) ends the command quietly with 141 (the `mnistkit` process then dies of SIGPIPE, as
    other tools do)."""

    command_class = MnistkitCommand

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _failures_as_lines():  # the group's own --help and --version write here
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        with _failures_as_lines(), command_line_terms():  # messages name options, not keywords
            return super().invoke(ctx)


@contextlib.contextmanager
def _failures_as_lines() -> Iterator[None]:
    """MnistkitError and a standard output that fails: one line and exit 1, or 141 for a
    reader that stopped."""
    try:
        yield
        if sys.stdout is not None:  # None when the command ran with stdout closed
            sys.stdout.flush()  # so that a failed write shows here, not as Python exits
    except MnistkitError as error:
        raise click.ClickException(str(error)) from None
    except BrokenPipeError:
        _stdout_to_devnull()
        raise SystemExit(EXIT_BROKEN_PIPE) from None
    except OSError as error:
        if error.filename is not None or error.errno not in WRITE_ERRNOS:
            raise
        _stdout_to_devnull()
        raise click.ClickException(str(describe_write_error(Path(STDOUT), error))) from None


def _stdout_to_devnull() -> None:
    """What Python has yet to flush to a closed or full standard output goes nowhere."""
    if sys.stdout is None:
        return
    try:
        descriptor = sys.stdout.fileno()
    except (OSError, ValueError):  # the stand-in for a closed standard output (__main__)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


@click.group(
    cls=MnistkitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="mnistkit")
def cli() -> None:
    """MNIST from download to a trained JAX model and predictions on your own digits.

    Each stage reads files and writes files; chain them with make or a shell. `-` is
    standard output wherever a file is written, and standard input for predict's list of
    image paths, eval's --labels, render-confusion's --metrics and render-curves' history.

    \b
      mnistkit fetch --out data/raw
      mnistkit parse-to-npz data/raw -o data/mnist.npz
      mnistkit train data/mnist.npz -o models/model.safetensors
      mnistkit eval models/model.safetensors data/mnist.npz
      mnistkit predict models/model.safetensors my-digit.png
      mnistkit render-samples data/mnist.npz -o reports/samples.png

    Offline: MNISTKIT_MIRROR=/path/to/folder/with/the/four/files mnistkit fetch
    """


def _output(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Every output path is checked here, once, before any work: its folder must exist and be
    writable (`-` is standard output)."""
    if value is not None:
        check_writable_target(value)
    return value


# Options that name a folder the command writes into.
OUTPUT_FOLDERS = ("export_dir", "save_preprocessed")


def _check_outputs_apart(ctx: click.Context) -> None:
    """No output may be one of the command's input files, nor another output's path; only
    `train --resume CKPT -o CKPT` continues a model in its own file."""
    outputs, inputs = [], []
    for param in ctx.command.params:
        value = ctx.params.get(param.name) if param.name else None
        if value is None:
            continue
        if param.callback in (_output, _picture_path) or param.name in OUTPUT_FOLDERS:
            outputs.append((param.opts[0], str(value)))
        elif isinstance(param.type, click.Path) or isinstance(param, click.Argument):
            values = value if isinstance(value, tuple | list) else [value]
            inputs.extend((param.name, str(item)) for item in values if isinstance(item, str | Path))
    if ctx.command.name == "train" and ctx.params.get("output") is not None:
        from mnistkit.run_state import state_path

        state = state_path(ctx.params["output"])  # written each epoch, deleted at the end
        if state is not None:
            outputs.append(("-o's run state", str(state)))
    for index, (option, path) in enumerate(outputs):
        for other_option, other_path in outputs[:index]:
            if same_path(path, other_path):
                raise MnistkitError(
                    f"{path}: {other_option} and {option} would both write to {_shown_output(path)}"
                )
        if written_in_place(path):
            continue
        for name, given in inputs:
            if same_path(path, given) and not (name == "resume" and option == "-o"):
                raise MnistkitError(f"{path}: {option} would overwrite an input of this command")


def _refuse_overwriting(output: str | None, option: str, given: str | Path) -> None:
    """`_check_outputs_apart` for an input the command line names only through another: a
    folder's files, a list's or stdin's paths."""
    if output is not None and not written_in_place(output) and same_path(output, str(given)):
        spelled = "" if str(given) == output else f", {given}"
        raise MnistkitError(f"{output}: {option} would overwrite an input of this command{spelled}")


def _not_overwritten(paths: Iterable, output: str | None, option: str) -> Iterator:
    for path in paths:
        if isinstance(path, str):  # not stdin's wait for more, nor its image
            _refuse_overwriting(output, option, path)
        yield path


def _shown_output(path: str) -> str:
    return "standard output" if is_stdout(path) else path


def _output_option(*names: str, help: str, required: bool = False):
    return click.option(
        *names, required=required, type=PathType(), callback=_output, metavar="FILE", help=help
    )


def _some_items(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A list given as '' (an unset shell variable) is refused, not read as no items: `--classes
    ""` trained on every class, `--seeds ""` one model, and neither said so."""
    if value is not None and not value.strip():
        raise click.BadParameter("empty (an unset shell variable?)", ctx, param)
    return value


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """NaN and infinity pass click's float ranges (every comparison with NaN is false)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number", ctx, param)
    return value


def _folder(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """`-` means stdin or stdout elsewhere; a folder named `-` made quietly was a surprise."""
    if value is not None and str(value) == "-":
        raise click.BadParameter("`-` is not a folder here (give ./- for a folder of that name)", ctx, param)
    return value


def _stderr_log(on_tty: bool):
    """Log lines for stderr; on a terminal each first clears the progress line."""
    from mnistkit.interrupts import on_the_terminal

    prefix = "\r\x1b[K" if on_tty else ""
    return lambda message: on_the_terminal(lambda: click.echo(prefix + message, err=True))


def _size_text(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.1f} MB" if size_bytes >= 1e6 else f"{size_bytes / 1e3:.0f} kB"


def _progress_line(name: str, received_bytes: int, announced_bytes: int | None) -> None:
    total = f" of {_size_text(announced_bytes)}" if announced_bytes else ""
    click.echo(f"\r\x1b[K{name}: {_size_text(received_bytes)}{total}", err=True, nl=False)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}{'es' if noun.endswith('s') else 's'}"


def _dataset_option(function):
    return click.option(
        "--dataset",
        type=click.Choice(DATASET_NAMES),
        default=DEFAULT_DATASET,
        show_default=True,
        help="Which dataset: MNIST or one of its siblings (`mnistkit datasets` lists them).",
    )(function)


def _dataset_folder(dataset: str) -> str:
    """Where make keeps a dataset's raw files: data/raw for MNIST, data/NAME/raw for the others."""
    return "data/raw" if dataset == DEFAULT_DATASET else f"data/{dataset}/raw"


@cli.command("datasets", short_help="List the datasets mnistkit fetches and trains on.")
@click.argument("name", required=False, type=click.Choice(DATASET_NAMES), metavar="[NAME]")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON: every fact mnistkit has of each (a list), or of NAME (one object).",
)
def datasets_command(name: str | None, as_json: bool) -> None:
    """List MNIST and its siblings: classes, images, download size, host. With NAME, that
    dataset's class names, files, mirrors and how its images were made.

    \b
      mnistkit datasets
      mnistkit datasets fashion-mnist
      mnistkit datasets --json
      mnistkit datasets fashion-mnist --json | jq -r '.class_names[]'
    """
    import json

    from mnistkit.catalog import dataset_details, dataset_facts, datasets_table
    from mnistkit.datasets import DATASETS

    if as_json:
        facts = dataset_facts(DATASETS[name]) if name else [dataset_facts(spec) for spec in DATASETS.values()]
        click.echo(json.dumps(facts, indent=2))
    else:
        click.echo(dataset_details(DATASETS[name]) if name else datasets_table(), nl=False)


@cli.command("fetch", short_help="Download a dataset's four files, verified and cached.")
@_dataset_option
@click.option(
    "--out",
    "out_dir",
    type=PathType(path_type=Path),
    callback=_folder,
    help="Folder for the four .gz files (created if missing) [default: data/raw for mnist, "
    "data/NAME/raw for another --dataset].",
)
@click.option(
    "--cache",
    "cache_dir",
    default=DEFAULT_CACHE_DIR,
    show_default=True,
    type=PathType(path_type=Path),
    callback=_folder,
    help="Folder that keeps an archive holding several datasets (EMNIST's 562 MB zip), so that "
    "each split is extracted from one download.",
)
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    metavar="URL",
    help="Mirror to try first: an http(s):// or file:// URL, or a directory, holding the dataset's "
    "files by their canonical names; {dataset} stands for the dataset's name. Repeatable.",
)
@click.option("--no-default-mirrors", is_flag=True, help="Try only --mirror and $MNISTKIT_MIRROR.")
@click.option("--force", is_flag=True, help="Download every file again, even a valid one.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    callback=_finite,
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="Seconds a connection or a read may stall before the mirror counts as failed; also the "
    "window over which --min-rate is measured.",
)
@click.option(
    "--min-rate",
    "min_bytes_per_s",
    type=click.FloatRange(min=0),
    callback=_finite,
    default=DEFAULT_MIN_RATE_BYTES_PER_S,
    show_default=True,
    metavar="BYTES/S",
    help="Abandon a download that averages fewer bytes per second over a --timeout window "
    "(a dripping mirror); 0 sets no minimum.",
)
def fetch_command(
    dataset: str,
    out_dir: Path | None,
    cache_dir: Path,
    mirrors: tuple[str, ...],
    no_default_mirrors: bool,
    force: bool,
    timeout_s: float,
    min_bytes_per_s: float,
) -> None:
    """Download a dataset's four .gz files and verify them: MNIST by default.

    Each file is verified by the SHA-256 of its decompressed content where that is known
    (MNIST, Fashion-MNIST: it holds whichever mirror recompressed it), else by the official
    host's checksum of the file itself (KMNIST, QMNIST, EMNIST's zip: only the official
    bytes pass). EMNIST's splits come in one 562 MB zip, kept in --cache and downloaded
    once; each split's four files are extracted from it.

    Mirrors are tried in order: each --mirror, then those in $MNISTKIT_MIRROR (several
    separated by spaces or commas), then the dataset's public mirrors (for MNIST: the
    ossci-datasets S3 bucket, Google's cvdf-datasets bucket, GitHub fgnt/mnist,
    yann.lecun.com). A mirror is a folder or URL holding the dataset's files under their
    canonical names; `{dataset}` in it stands for the dataset's name. A mirror that stalls
    for --timeout seconds, or brings less than --min-rate over that long, is abandoned; a
    quick failure (refused, HTTP 500) is retried once. A URL that failed, or a folder that
    is not there, is not tried for the other files. A file already present and valid is
    not downloaded again. The paths of the four files go to stdout; one line per file (and
    per failed mirror) to stderr.

    \b
      mnistkit fetch --out data/raw
      mnistkit fetch --dataset fashion-mnist
      mnistkit fetch --dataset emnist-letters --cache data/cache
      mnistkit fetch --mirror file:///srv/mnist --no-default-mirrors
      MNISTKIT_MIRROR=/path/to/folder/with/the/four/files mnistkit fetch
      MNISTKIT_MIRROR=/srv/datasets/{dataset} mnistkit fetch --dataset kmnist
      mnistkit fetch --timeout 10 --min-rate 50000
    """
    from mnistkit.fetch import fetch
    from mnistkit.mirrors import mirror_list

    mirror_urls = mirror_list(
        mirrors, os.environ.get(MIRROR_ENV), use_defaults=not no_default_mirrors, dataset=dataset
    )
    on_tty = sys.stderr.isatty()
    paths = fetch(
        out_dir or _dataset_folder(dataset),
        mirror_urls,
        force=force,
        timeout_s=timeout_s,
        log=_stderr_log(on_tty),
        progress=_progress_line if on_tty else None,
        min_bytes_per_s=min_bytes_per_s,
        dataset=dataset,
        cache_dir=cache_dir,
    )
    for path in paths:
        click.echo(path)


@cli.command("parse-to-npz", short_help="Parse the IDX files into one .npz of arrays.")
@click.argument("raw_dir", type=PathType(path_type=Path))
@_output_option("-o", "--output", required=True, help="The .npz to write ('-': stdout).")
@_dataset_option
@click.option(
    "--label-columns",
    is_flag=True,
    help="Keep QMNIST's whole label table (writer, NIST series, ...) as {split}_label_columns.",
)
def parse_to_npz_command(raw_dir: Path, output: str, dataset: str, label_columns: bool) -> None:
    """Parse a dataset's four IDX files in RAW_DIR into one uncompressed .npz.

    The .npz holds train_images uint8 (N, 28, 28), train_labels uint8 (N,), test_images
    and test_labels; pixels stay raw, a label is a class's number. For every dataset but
    MNIST it also records the dataset's name and its class names (plain unicode arrays).
    EMNIST's images are turned upright and its letters numbered from 0 ('a'); QMNIST's
    class is the first of its eight label columns. The IDX files may be gzip- or
    xz-compressed or not. Every fault (broken compression, wrong magic or dimensions,
    truncated or trailing data, labels outside the classes, counts that disagree) is one
    line naming the file, and no .npz is written.

    \b
      mnistkit parse-to-npz data/raw -o data/mnist.npz
      mnistkit parse-to-npz data/fashion-mnist/raw --dataset fashion-mnist \\
          -o data/fashion-mnist/fashion-mnist.npz
      mnistkit parse-to-npz data/qmnist/raw --dataset qmnist --label-columns -o data/qmnist/qmnist.npz
    """
    from mnistkit.arrays import save_arrays
    from mnistkit.idx import idx_files, read_mnist_dir

    for path in idx_files(raw_dir, dataset):
        _refuse_overwriting(output, "-o", path)
    arrays = read_mnist_dir(raw_dir, dataset, label_columns)
    save_arrays(output, arrays)
    counts = f"{len(arrays['train_images'])} training and {len(arrays['test_images'])} test images"
    click.echo(f"{output}: {counts}" + ("" if dataset == DEFAULT_DATASET else f" of {dataset}"), err=True)


def _preset_help() -> str:
    lines = [
        f"{name}: {preset.summary}"
        + "".join(
            f" (trained on {data}, with {_as_options(changes)})"
            for data, changes in preset.on_dataset.items()
        )
        + "."
        for name, preset in PRESETS.items()
    ]
    return (
        "Starting settings, overridden by the options given [default: the one named like --model]; "
        "a preset may differ on the data's dataset, as it says; its accuracy is MNIST's. " + " ".join(lines)
    )


def _as_options(settings: dict) -> str:
    """{"channels": (32, 64), "batch_norm": True, "shift_average": False} as
    `--channels 32,64 --batch-norm --no-shift-average`."""
    return " ".join(terms.option(name, value) for name, value in settings.items())


def _from_preset(name: str, help: str) -> str:
    """An option's help with its default: the preset's value, shown for the `mlp` preset."""
    return f"{help} [default: the preset's; mlp: {_shown(getattr(TrainConfig(), name))}]"


def _shown(value: object) -> str:
    """A setting as its option takes it: 32,64 for (32, 64)."""
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


@cli.command(short_help="Train a model: .npz in, safetensors checkpoint out.")
@click.argument("data", type=PathType())
@_output_option("-o", "--output", required=True, help="Checkpoint to write ('-': stdout).")
@click.option("--preset", type=click.Choice(list(PRESETS)), help=_preset_help())
@click.option(
    "--model",
    type=click.Choice(MODELS),
    help=_from_preset(
        "model",
        "Model family: " + "; ".join(f"{name}: {kind.summary}" for name, kind in MODEL_KINDS.items()) + ".",
    ),
)
@click.option(
    "--hidden",
    help=_from_preset("hidden", "Hidden layer widths, e.g. 128 or 1024,1024 (for cnn: its dense head)."),
)
@click.option(
    "--activation",
    type=click.Choice(ACTIVATIONS),
    help=_from_preset("activation", "The hidden layers' nonlinearity."),
)
@click.option(
    "--linear-last-hidden/--no-linear-last-hidden",
    default=None,
    help=_from_preset(
        "linear_last_hidden",
        "No activation after the last hidden layer (a linear bottleneck, as --preset embedding has).",
    ),
)
@click.option(
    "--channels",
    callback=_some_items,
    help=_from_preset("channels", "cnn: the channels of each conv layer, e.g. 24,32."),
)
@click.option(
    "--kernel-sizes",
    callback=_some_items,
    help=_from_preset("kernel_sizes", "cnn: the kernel side of each conv layer, e.g. 5,3."),
)
@click.option(
    "--strides",
    callback=_some_items,
    help=_from_preset("strides", "cnn: per conv layer, 1 (then a 2x2 max pool) or 2 (no pool), e.g. 2,1."),
)
@click.option(
    "--pools",
    metavar="0,1,...",
    callback=_some_items,
    help="cnn: per conv layer, 1 for a 2x2 max pool after it, 0 for none, e.g. 0,1,0,1 for two convs "
    "per pool [default: the preset's; otherwise a pool after each conv of stride 1].",
)
@click.option(
    "--batch-norm/--no-batch-norm",
    default=None,
    help=_from_preset("batch_norm", "cnn: batch normalization in each conv block (as cnn-best has)."),
)
@click.option(
    "--mirror-average/--no-mirror-average",
    default=None,
    help=_from_preset(
        "mirror_average",
        "Predict from the mean of each image's and its mirror image's probabilities (test-time "
        "augmentation: twice the work per image), for classes that look alike either way round.",
    ),
)
@click.option(
    "--shift-average/--no-shift-average",
    default=None,
    help=_from_preset(
        "shift_average",
        "Predict from the mean of the probabilities of each image and of it moved a pixel up, "
        "down, left and right (test-time augmentation: five times the work per image; with "
        "--mirror-average, both views are moved: ten times).",
    ),
)
@click.option("--epochs", type=int, help=_from_preset("epochs", "Passes over the training images."))
@click.option(
    "--batch-size",
    type=int,
    help=_from_preset("batch_size", "Images per step (capped at the data size)."),
)
@click.option(
    "--optimizer",
    type=click.Choice(OPTIMIZERS),
    help=_from_preset("optimizer", "momentum: SGD with momentum 0.9."),
)
@click.option("--lr", type=float, callback=_finite, help=_from_preset("lr", "Peak learning rate."))
@click.option(
    "--adam-betas",
    metavar="B1,B2",
    callback=_some_items,
    help=_from_preset("adam_betas", "Adam's and AdamW's moment decays."),
)
@click.option(
    "--weight-decay", type=float, callback=_finite, help=_from_preset("weight_decay", "L2 weight decay.")
)
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    help=_from_preset("schedule", "Learning rate over the run."),
)
@click.option(
    "--label-smoothing",
    type=float,
    callback=_finite,
    help=_from_preset("label_smoothing", "Train on targets with this share spread over all classes."),
)
@click.option(
    "--normalize",
    type=click.Choice(NORMALIZATIONS),
    help=_from_preset("normalize", "unit: pixels/255; standard: also (x-mean)/std of the training pixels."),
)
@click.option(
    "--val-size",
    type=int,
    help=_from_preset("val_size", "Hold out this many training images for validation."),
)
@click.option(
    "--classes",
    "--digits",
    "classes",
    callback=_some_items,
    help="Train on these classes only, by name or number: 3,8 (MNIST's digits), 'Shirt,T-shirt/top' "
    "or 0,6 (Fashion-MNIST) [default: all of the data's classes].",
)
@click.option(
    "--augment",
    metavar="KIND[+KIND...]",
    help=_from_preset(
        "augment",
        "none; shift: random shifts of up to 2 px; distort: rotation, scale, elastic and stroke "
        "changes (handwriting); mirror: half the images mirrored left to right (clothes); "
        "erase: a random rectangle blanked in half the images. Combine with +: mirror+shift.",
    ),
)
@click.option(
    "--eval-test-each-epoch/--no-eval-test-each-epoch",
    default=None,
    help=_from_preset("eval_test_each_epoch", "Report test accuracy every epoch (as --preset seed does)."),
)
@click.option(
    "--init",
    type=click.Choice(INITS),
    help=_from_preset("init", "he: He-normal kernels, zero biases; uniform: PyTorch's default."),
)
@click.option("--seed", type=int, help="Seed of the initial weights and the data order [default: 0].")
@click.option(
    "--seeds",
    callback=_some_items,
    help="Train an ensemble, one model per seed, in one compiled program, e.g. 0,1,2,3.",
)
@click.option("--ensemble", type=int, help="Train an ensemble of K models: seeds --seed to --seed + K - 1.")
@click.option(
    "--dataset",
    type=click.Choice(DATASET_NAMES),
    help="The dataset of an .npz that names none (not made by parse-to-npz), such as part of "
    "KMNIST saved with numpy [default: MNIST's digits; with --resume, the checkpoint's].",
)
@_output_option(
    "--history", help="Write one JSON line per epoch here ('-': stdout); replaces only an earlier history."
)
@click.option(
    "--resume",
    type=PathType(),
    metavar="CKPT",
    help="Continue training this checkpoint (--epochs: new total).",
)
@click.option(
    "--restart",
    is_flag=True,
    help="Start from scratch even if OUTPUT.resume holds the state of an interrupted run like this one.",
)
@click.option(
    "--save-every",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    metavar="N",
    help="Save the run's state to OUTPUT.resume every N epochs, to resume exactly after a crash "
    "(0: only when interrupted, Ctrl-C or SIGTERM).",
)
@click.option("--show-config", is_flag=True, help="Print the settings these options give, as JSON, and exit.")
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    help="Split each batch over N local devices (per process) [default: all that divide --batch-size].",
)
@click.option("--coordinator", metavar="HOST:PORT", help="Multi-process: the address of process 0.")
@click.option("--num-processes", type=click.IntRange(min=1), help="Multi-process: how many take part.")
@click.option("--process-id", type=click.IntRange(min=0), help="Multi-process: this one's index, from 0.")
@click.option(
    "--distributed",
    is_flag=True,
    help="Multi-process, settings left out taken from the cluster launcher (Slurm, Open MPI).",
)
@click.option(
    "--join-timeout",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    metavar="SECONDS",
    help="Multi-process: give up when the others have not all joined by then.",
)
def train(
    data: str,
    output: str,
    preset: str | None,
    dataset: str | None,
    history: str | None,
    resume: str | None,
    restart: bool,
    save_every: int,
    show_config: bool,
    devices: int | None,
    coordinator: str | None,
    num_processes: int | None,
    process_id: int | None,
    distributed: bool,
    join_timeout: int,
    **options,
) -> None:
    """Train a model on an .npz from parse-to-npz and write a safetensors checkpoint.

    Each option left out comes from the preset (by default the one named like --model).
    One line per epoch goes to stderr; Ctrl-C keeps the last complete epoch. After every
    epoch the run's state is saved to OUTPUT.resume: if the run dies (killed, out of
    memory, power), the same command continues from the last epoch and writes the checkpoint
    the uninterrupted run would have written, byte for byte (the history's seconds differ).

    Each batch is split over all local devices (--devices), with the same result as on
    one. Several processes (hosts) train together with --coordinator, --num-processes and
    --process-id, or --distributed under Slurm or Open MPI: each reads the same NPZ, and
    process 0 writes the checkpoint, history and logs. --seeds or --ensemble trains many
    models at once into one checkpoint that predicts with their averaged probabilities.

    Compiled programs are kept in ~/.cache/mnistkit/xla, so a rerun with the same settings
    skips compiling; MNISTKIT_COMPILE_CACHE names another folder, or 'off'.

    \b
      mnistkit train data/mnist.npz -o models/model.safetensors
      mnistkit train data/mnist.npz -o models/cnn.safetensors --preset cnn
      mnistkit train data/mnist.npz -o models/seed.safetensors --preset seed
      mnistkit train data/mnist.npz -o models/3v8.safetensors --preset 3v8
      mnistkit train data/mnist.npz -o models/2d.safetensors --preset embedding
      mnistkit train data/mnist.npz -o models/cnn.safetensors --resume models/cnn.safetensors --epochs 12
      mnistkit train data/mnist.npz -o models/cnn5.safetensors --preset cnn --ensemble 5
      mnistkit train kmnist-part.npz -o models/kmnist.safetensors --dataset kmnist
      mnistkit train data/mnist.npz -o x.safetensors --preset cnn --epochs 3 --show-config
      mnistkit train data/mnist.npz -o models/model.safetensors \\
          --coordinator host0:8476 --num-processes 2 --process-id 0
    """
    from mnistkit.arrays import class_labels, recorded_naming
    from mnistkit.config import check_resume_options, config_from_options
    from mnistkit.interrupts import STOPPING_NOTICE, deferred

    # The list options' text ("128,64") is read as the Python API's is, by config_from_options.
    given = {name: value for name, value in options.items() if value is not None}
    if resume is not None:
        check_resume_options({**given, **({"preset": preset} if preset else {})})
    recorded, names = recorded_naming(data, dataset)
    if dataset is not None and recorded not in (DEFAULT_DATASET, dataset):  # before --show-config
        raise MnistkitError(f"{data}: holds {recorded}, not --dataset {dataset}")
    config = config_from_options(preset, given, dataset or recorded) if resume is None else None
    if show_config and config is not None:
        if config.classes and names is not None:  # as training will
            class_labels(config.classes, names, recorded)
        _print_config(config)
        return
    checkpoint = None  # read while a signal still stops at once: a pipe no one writes to yet waits
    if resume is not None:
        from mnistkit.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(resume)
    # jax runs from here on: signals are taken between chunks of work (see interrupts.py).
    with deferred(notice=STOPPING_NOTICE):
        writer = True
        if distributed or coordinator or num_processes or process_id is not None:
            from mnistkit.parallel import join_cluster

            writer = join_cluster(coordinator, num_processes, process_id, join_timeout) == 0
        _train_files(
            data,
            output,
            config,
            given,
            (resume, checkpoint),
            show_config,
            writer,
            history=history,
            dataset=dataset,
            devices=devices,
            restart=restart,
            save_every=save_every,
        )


def _train_files(
    data: str,
    output: str,
    config,
    given: dict,
    resumed: tuple[str | None, Checkpoint | None],
    show_config: bool,
    writer: bool,
    **train_options,
) -> None:
    """The files around `training.train`: the arrays, the checkpoint to --resume (its path and
    itself), the progress."""
    from mnistkit.arrays import catalogued, dataset_name, file_sha256, load_arrays
    from mnistkit.config import resume_config
    from mnistkit.interrupts import raise_if_interrupted
    from mnistkit.parallel import cluster_run
    from mnistkit.training import train as run_training

    resume, checkpoint = resumed
    if checkpoint is not None:
        done = int(checkpoint.metadata.get("metrics", {}).get("epochs", 0))
        config = resume_config(checkpoint.metadata.get("config", {}), resume, given, done)
    if show_config:
        _print_config(config)
        return
    dataset = train_options.pop("dataset")
    if checkpoint is not None and dataset not in (None, checkpoint.dataset):
        raise MnistkitError(f"{resume}: trained on {checkpoint.dataset}, not --dataset {dataset}")
    arrays = load_arrays(data, dataset=dataset or (checkpoint and catalogued(checkpoint.dataset)))
    if dataset is not None and dataset_name(arrays) != dataset:
        raise MnistkitError(f"{data}: holds {dataset_name(arrays)}, not --dataset {dataset}")
    on_tty = sys.stderr.isatty() and writer
    with cluster_run():
        run_training(
            arrays,
            config,
            output,
            resume_from=checkpoint,
            data_sha256=file_sha256(data),
            data_name=data,
            tell_unnamed=dataset is None,
            log=_stderr_log(on_tty),
            progress=_training_progress(on_tty),
            history_path=train_options.pop("history"),
            **train_options,
        )
    # A signal held through the last evaluation: taken now, with what the run kept.
    raise_if_interrupted(
        f"training had ended; its checkpoint is written to {'stdout' if is_stdout(output) else output}"
    )


def _print_config(config) -> None:
    import json

    click.echo(json.dumps(config.to_dict(), indent=2))


def _arrays_for_model(checkpoint, data: Path, split: str) -> dict:
    """The split of DATA with the model's classes; an .npz that names no dataset and holds no
    published one's labels (a part of KMNIST saved with numpy) is taken as the model's."""
    from mnistkit.arrays import load_arrays
    from mnistkit.evaluation import check_same_classes

    dataset, names = checkpoint.naming()
    arrays = load_arrays(data, splits=(split,), dataset=dataset, names=names)
    check_same_classes(checkpoint, arrays, str(data))
    return arrays


def _training_progress(on_tty: bool):
    """After each chunk of batches: take a held Ctrl-C, and on a terminal show how far the epoch is."""
    from mnistkit.interrupts import on_the_terminal, raise_if_interrupted

    def progress(epoch: int, epochs: int, fraction: float) -> None:
        raise_if_interrupted()
        if on_tty:
            line = f"\r\x1b[Kepoch {epoch}/{epochs} {100 * fraction:3.0f}%"
            on_the_terminal(lambda: click.echo(line, err=True, nl=False))

    return progress


_no_preprocess_option = click.option(
    "--no-preprocess", is_flag=True, help="The images are MNIST-style 28x28 already: only grayscale."
)


@cli.command("predict", short_help="Predict the digit in each of your images.")
@click.argument("checkpoint_path", metavar="CKPT", type=PathType(path_type=Path))
@click.argument("images", metavar="IMAGE...", nargs=-1, required=True, type=PathType())
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["tsv", "csv", "jsonl"]),
    default="tsv",
    show_default=True,
    help="Row format; only csv has a header.",
)
@click.option(
    "--top-k",
    type=click.IntRange(1, 10),
    default=1,
    show_default=True,
    help="Also list the K likeliest digits.",
)
@_no_preprocess_option
@click.option(
    "--save-preprocessed",
    type=PathType(path_type=Path),
    callback=_folder,
    metavar="DIR",
    help="Write each 28x28 image the model saw into DIR as NNNNNN-STEM.png (NNNNNN: input position); "
    "files already there stay, so give an empty folder to hold this run's alone.",
)
@click.option(
    "-0",
    "--null",
    "null_separated",
    is_flag=True,
    help="`-` reads paths ended by NUL bytes, as find -print0 writes them (names may hold line breaks).",
)
@_output_option("-o", "--output", help="Write the rows to FILE (atomically) instead of stdout.")
def predict_command(
    checkpoint_path: Path,
    images: tuple[str, ...],
    output_format: str,
    top_k: int,
    no_preprocess: bool,
    save_preprocessed: Path | None,
    null_separated: bool,
    output: str | None,
) -> None:
    """Predict the digit (or class) in each IMAGE: one row per image, in input order.

    Any format Pillow reads. Each image is prepared as the model's dataset made its
    images (the checkpoint says which); for MNIST's digits: upright (EXIF), transparency
    composited, a light background inverted so ink is bright, background shading
    removed, cropped to the ink, the longer side scaled to 20 px and the centre of mass
    placed at the centre of 28x28 (Fashion-MNIST: the longer side to 28 px, centred,
    shades kept). `-` reads paths from stdin, one per line (--null: ended by NUL bytes;
    none: no rows, exit 0), and answers them as they come; where stdin holds an image's
    bytes, `-` is that image. Rows:
    path<TAB>digit<TAB>confidence (--format, --top-k); for classes with names, the
    column is `label` and holds the name. Each bad input (missing, a directory, not an
    image, truncated, over 40 megapixels, blank) is one `path: reason` line on stderr;
    the others are still predicted, and the exit status is 1.

    \b
      mnistkit predict models/model.safetensors my-digit.png
      mnistkit predict models/model.safetensors photos/*.jpg --format csv --top-k 3
      find photos -name '*.png' | mnistkit predict models/model.safetensors - -o predictions.tsv
      find photos -name '*.png' -print0 | mnistkit predict models/model.safetensors --null -
      curl -s https://example.org/digit.png | mnistkit predict models/model.safetensors -
    """
    if images.count("-") > 1:  # the second found stdin read to its end: its paths went missing
        raise click.BadParameter(
            "`-` given twice; standard input can be read only once", param_hint="IMAGE..."
        )
    _one_blas_thread()
    from mnistkit.atomic import atomic_write
    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.predict import write_predictions
    from mnistkit.stdin_inputs import expand_stdin

    checkpoint = load_checkpoint(checkpoint_path)
    _note_if_unfinished(checkpoint, checkpoint_path)
    paths = _not_overwritten(expand_stdin(images, sys.stdin, null_separated), output, "-o")
    with atomic_write(output or STDOUT, "w") as handle:
        failures = write_predictions(
            checkpoint,
            paths,
            handle,
            sys.stderr,
            output_format=output_format,
            top_k=top_k,
            preprocess=not no_preprocess,
            save_dir=save_preprocessed,
        )
        _keep_only_if_complete(output, failures, "; without -o the others' rows go to stdout")
    if failures:
        sys.exit(1)


def _note_if_unfinished(checkpoint, checkpoint_path: Path) -> None:
    from mnistkit.checkpoint import unfinished_note

    if note := unfinished_note(checkpoint, str(checkpoint_path)):
        click.echo(note, err=True)


def _one_blas_thread() -> None:
    """One BLAS thread unless OPENBLAS_NUM_THREADS says otherwise, set before numpy loads
    OpenBLAS, for the commands that read image files: their matrix products are small, and
    OpenBLAS's idle threads spin against the workers reading the pictures."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _keep_only_if_complete(output: str | None, failures: int, elsewhere: str = "") -> None:
    """An output FILE is written only when every image was read (its temp file is dropped
    otherwise), so that make never takes it as done; rows on stdout or into a pipe stream
    as they come. `elsewhere` tells where the rest can be had."""
    if failures and output is not None and not written_in_place(output):
        raise MnistkitError(
            f"{output}: not written, since {_count(failures, 'image')} could not be read{elsewhere}"
        )


@cli.command("eval", short_help="Measure a checkpoint on test data or labelled images.")
@click.argument("checkpoint_path", metavar="CKPT", type=PathType(path_type=Path))
@click.argument("data", metavar="[NPZ]", required=False, type=PathType(path_type=Path))
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@_output_option(
    "--json", "json_path", help="Write all metrics as JSON to FILE ('-': stdout; the table goes to stderr)."
)
@click.option(
    "--min-accuracy",
    type=float,
    callback=_finite,
    help="Exit 3 when accuracy is below X (a fraction such as 0.975, or a percentage such as 97.5); "
    "1 is kept for input that could not be read.",
)
@click.option(
    "--images",
    "images_dir",
    type=PathType(path_type=Path),
    help="Folder that --labels paths are relative to [default: the labels file's folder].",
)
@click.option(
    "--labels",
    type=PathType(path_type=Path),
    help="Evaluate on your own images: lines of path<TAB>label or path,label (a digit, or a class's "
    "name or number).",
)
@_no_preprocess_option
def eval_command(
    checkpoint_path: Path,
    data: Path | None,
    split: str,
    json_path: str | None,
    min_accuracy: float | None,
    images_dir: Path | None,
    labels: Path | None,
    no_preprocess: bool,
) -> None:
    """Evaluate CKPT on a split of NPZ, or on your own labelled images.

    Prints accuracy, mean loss, per-class precision, recall and F1, the confusion
    matrix and the most frequent confusions (80 columns). With --labels, the images
    listed there are preprocessed exactly as `predict` does; unreadable ones are
    reported on stderr, left out, and make the exit status 1.

    \b
      mnistkit eval models/model.safetensors data/mnist.npz --json reports/metrics.json
      mnistkit eval models/model.safetensors data/mnist.npz --min-accuracy 0.975
      mnistkit eval models/model.safetensors data/mnist.npz --json - \\
          | mnistkit render-confusion --metrics - -o confusion.png
      mnistkit eval models/model.safetensors --images my-digits --labels my-digits/labels.tsv
    """
    if labels is not None:  # an .npz's larger products keep OpenBLAS's threads
        _one_blas_thread()
    import json

    from mnistkit.atomic import write_text_atomic
    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.evaluation import (
        dataset_class_names,
        distinct_percent,
        evaluate_arrays,
        evaluate_images,
        format_table,
        percent_as_given,
        read_labels,
    )

    if (data is None) == (labels is None):
        raise click.UsageError("give either NPZ or --labels FILE (with --images DIR), not both or neither")
    if images_dir is not None and labels is None:
        raise click.UsageError("--images needs --labels FILE listing each image's digit")
    if labels is not None and split != "test":  # --split test, the default, is as good as none
        raise click.UsageError("--split picks a split of NPZ; --labels lists the images to evaluate")
    if no_preprocess and labels is None:
        raise click.UsageError("--no-preprocess is for the images of --labels; NPZ's are 28x28 already")
    threshold = _accuracy_fraction(min_accuracy)
    checkpoint = load_checkpoint(checkpoint_path)
    _note_if_unfinished(checkpoint, checkpoint_path)
    failures = []
    if labels is not None:
        split, source = "images", str(images_dir or labels)

        def report(error: str) -> None:
            failures.append(error)
            click.echo(error, err=True)

        labelled = read_labels(labels, images_dir, dataset_class_names(checkpoint))
        for path, _ in labelled:
            _refuse_overwriting(json_path, "--json", path)
        evaluation = evaluate_images(checkpoint, labelled, report, preprocess=not no_preprocess)
    else:
        source = str(data)
        arrays = _arrays_for_model(checkpoint, data, split)
        evaluation = evaluate_arrays(checkpoint, arrays[f"{split}_images"], arrays[f"{split}_labels"])
    if evaluation.skipped:
        click.echo(
            f"left out {_count(evaluation.skipped, 'image')} whose class is not among the model's classes",
            err=True,
        )
    if evaluation.count == 0:
        raise MnistkitError(f"{source}: no images to evaluate")
    table = format_table(evaluation, str(checkpoint_path), f"{source} ({split})")
    click.echo(table, nl=False, err=json_path is not None and is_stdout(json_path))
    if json_path is not None:
        _keep_only_if_complete(json_path, len(failures))
        report_json = {
            **evaluation.to_json(split, str(checkpoint_path), source),
            "finished": checkpoint.finished,
        }
        write_text_atomic(json_path, json.dumps(report_json, indent=2) + "\n")
    if threshold is not None and evaluation.correct < threshold * evaluation.count:  # exactly
        accuracy = distinct_percent(evaluation.accuracy, float(threshold))
        click.echo(
            f"Error: accuracy {accuracy} is below --min-accuracy {percent_as_given(threshold)}", err=True
        )
        sys.exit(1 if failures else EXIT_BELOW_MIN_ACCURACY)
    if failures:
        sys.exit(1)


def _accuracy_fraction(value: float | None) -> Fraction | None:
    """--min-accuracy as an exact fraction (0-1 is a fraction, above 1 up to 100 a percentage):
    99.04 / 100 in floats is above 619/625, an accuracy of exactly 99.04%."""
    if value is None:
        return None
    if not 0 <= value <= 100:
        raise click.BadParameter(
            f"{value} is neither a fraction 0-1 nor a percentage", param_hint="--min-accuracy"
        )
    from fractions import Fraction

    exact = Fraction(str(value))  # the decimal as given
    return exact / 100 if value > 1 else exact


@cli.command("info", short_help="Describe what a checkpoint holds.")
@click.argument("checkpoint_path", metavar="CKPT", type=PathType(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of aligned text.")
def info_command(checkpoint_path: Path, as_json: bool) -> None:
    """Describe a checkpoint: architecture, parameter count, normalization, classes,
    training configuration and the metrics stored at the end of training.

    \b
      mnistkit info models/model.safetensors
      mnistkit info models/model.safetensors --json
    """
    import json

    from mnistkit.info import checkpoint_info, format_info

    info = checkpoint_info(checkpoint_path)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info), nl=as_json)


def _picture_output(function):
    @functools.wraps(function)
    def naming_the_picture(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except PictureTooLarge as error:
            raise PictureTooLarge(f"{_shown_output(kwargs['output'])}: {error}") from None

    return click.option(
        "-o",
        "--output",
        required=True,
        type=PathType(),
        callback=_picture_path,
        metavar="FILE",
        help="The picture to write: .png or .jpg ('-': PNG on stdout).",
    )(naming_the_picture)


def _picture_path(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from mnistkit.render import picture_format

    picture_format(value)
    return _output(ctx, param, value)


def _picture_checkpoint(function):
    return click.argument("checkpoint_path", metavar="CKPT", type=PathType(path_type=Path))(function)


def _picture_data(function):
    return click.argument("data", metavar="NPZ", type=PathType(path_type=Path))(function)


def _wrote(output: str, what: str) -> None:
    click.echo(f"{output}: {what}", err=True)


@cli.command("render-samples", short_help="Draw a grid of digits, or a model's mistakes.")
@_picture_data
@_picture_output
@click.option(
    "--model",
    "checkpoint_path",
    metavar="CKPT",
    type=PathType(path_type=Path),
    help="Caption each digit with this model's prediction and confidence; wrong ones in red.",
)
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option(
    "--select",
    type=click.Choice(["first", "random", "mistakes", "confident-mistakes"]),
    default="first",
    show_default=True,
    help="first: in data order; random: a --seed sample; mistakes: the model's misclassified digits, "
    "most confident first; confident-mistakes: only those at or above --min-confidence.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Show at most this many digits.",
)
@click.option(
    "--classes",
    "--digits",
    "classes",
    metavar="LIST",
    callback=_some_items,
    help="Only images of these classes, by name or number, e.g. 3,8 or 'Shirt,T-shirt/top'.",
)
@click.option("--columns", type=click.IntRange(min=1), default=8, show_default=True, help="Digits per row.")
@click.option(
    "--scale", type=click.IntRange(min=1), default=3, show_default=True, help="Screen pixels per MNIST pixel."
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of --select random."
)
@click.option(
    "--min-confidence",
    type=click.FloatRange(0, 1),
    callback=_finite,
    default=0.9,
    show_default=True,
    help="Threshold of confident-mistakes.",
)
@click.option(
    "--export-dir",
    type=PathType(path_type=Path),
    callback=_folder,
    help="Also write each digit shown as a 28x28 PNG here, named {index:05d}-label{digit}.png "
    "(index within the split; {index:05d}-label{class}-{name}.png for named classes, as "
    "clothes'); their paths go to stdout. Files already there stay: give an empty folder to hold "
    "this run's alone.",
)
def render_samples_command(
    data: Path,
    output: str,
    checkpoint_path: Path | None,
    classes: str | None,
    export_dir: Path | None,
    **options,
) -> None:
    """Draw a grid of digits with their labels, and a model's predictions, as a picture.

    \b
      mnistkit render-samples data/mnist.npz -o reports/samples.png --model models/model.safetensors
      mnistkit render-samples data/mnist.npz -o reports/mistakes.png \\
          --model models/model.safetensors --select mistakes --count 32
      mnistkit render-samples data/mnist.npz -o threes-and-eights.png --classes 3,8 --select random
      mnistkit render-samples data/mnist.npz -o samples.png --export-dir samples \\
          | mnistkit predict models/model.safetensors -
    """
    from mnistkit.arrays import class_names, load_arrays
    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.render import SampleOptions, export_digits, samples_picture, save_picture

    if is_stdout(output) and export_dir is not None:
        raise click.UsageError(
            f"-o {output} writes the picture to stdout, where --export-dir lists its files; give -o FILE"
        )
    if export_dir is not None and Path(os.path.realpath(output)).is_relative_to(os.path.realpath(export_dir)):
        raise MnistkitError(f"{output}: -o is inside --export-dir {export_dir}, among the digits it lists")
    if options["select"].endswith("mistakes") and checkpoint_path is None:
        raise click.UsageError(f"--select {options['select']} needs a model: give a checkpoint as --model")
    sample_options = SampleOptions(classes=classes or None, **options)
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path else None
    dataset, names = checkpoint.naming() if checkpoint else (None, None)
    arrays = load_arrays(data, splits=(sample_options.split,), dataset=dataset, names=names)
    model_name = str(checkpoint_path) if checkpoint_path else ""  # as given, as eval names them
    grid, indices = samples_picture(arrays, sample_options, checkpoint, str(data), model_name)
    split = sample_options.split
    exported, written, folders = [], [], []
    with taken_back_on_failure(written, folders):  # a picture that cannot be written takes its digits along
        if export_dir is not None:
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            exported = export_digits(
                images, labels, indices, export_dir, class_names(arrays), written, folders
            )
        save_picture(grid.image, output)
    names = class_names(arrays)
    noun = "digit" if named_by_digits(range(len(names)), names) else "image"
    _wrote(output, f"{_count(len(indices), f'{split} {noun}')}")
    for path in exported:
        click.echo(path)


@cli.command("render-confusion", short_help="Draw the confusion matrix as a heat map.")
@_picture_output
@click.option(
    "--metrics",
    type=PathType(allow_dash=True),
    help="The JSON written by eval --json ('-' reads stdin).",
)
@click.option(
    "--model",
    "checkpoint_path",
    metavar="CKPT",
    type=PathType(path_type=Path),
    help="Compute the matrix from this model on --data instead.",
)
@click.option("--data", metavar="NPZ", type=PathType(path_type=Path), help="The .npz for --model.")
@click.option(
    "--split",
    type=click.Choice(["test", "train"]),
    help="The split of --data to evaluate [default: test].",
)
def render_confusion_command(
    output: str, metrics: str | None, checkpoint_path: Path | None, data: Path | None, split: str | None
) -> None:
    """Draw a confusion matrix as a heat map, the counts written in the cells.

    Rows are the true digits, columns the predicted ones; the colour follows log(1 + count)
    so the few mistakes show beside the large diagonal. From eval's JSON, or computed
    from a model and an .npz.

    \b
      mnistkit render-confusion --metrics reports/metrics.json -o reports/confusion.png
      mnistkit render-confusion --model models/model.safetensors --data data/mnist.npz -o confusion.png
      mnistkit eval models/model.safetensors data/mnist.npz --json - \\
          | mnistkit render-confusion --metrics - -o confusion.png
    """
    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.evaluation import read_confusion
    from mnistkit.inputs import read_text
    from mnistkit.plots import confusion_from_model, confusion_image
    from mnistkit.render import save_picture

    if not ((metrics and not checkpoint_path and not data) or (not metrics and checkpoint_path and data)):
        raise click.UsageError("give either --metrics FILE, or --model CKPT together with --data NPZ")
    if metrics and split:  # it was left unused: the picture named the split the file holds
        raise click.UsageError("--split picks a split of --data; --metrics holds the split eval measured")
    split = split or "test"
    if metrics:
        text, source = read_text(metrics, "a metrics file")
        confusion = read_confusion(text, source)
        source_name = Path(source).name
    else:
        checkpoint = load_checkpoint(checkpoint_path)
        arrays = _arrays_for_model(checkpoint, data, split)
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        confusion = confusion_from_model(checkpoint, images, labels, split, str(checkpoint_path), str(data))
        source_name = f"{checkpoint_path.name} on {data.name}"
    save_picture(confusion_image(confusion, source_name), output)
    noun = "digit" if named_by_digits(confusion.classes, confusion.names) else "image"
    _wrote(output, f"confusion matrix of {_count(int(confusion.matrix.sum()), noun)}")


@cli.command("render-curves", short_help="Draw loss and accuracy per epoch.")
@click.argument("history", type=PathType(allow_dash=True))
@_picture_output
def render_curves_command(history: str, output: str) -> None:
    """Draw loss and accuracy per epoch, train, validation and test, from train --history
    (or from the history a checkpoint keeps).

    Splits that were not measured (null in every line) are left out; train with
    --val-size N and --eval-test-each-epoch to get all three.

    \b
      mnistkit render-curves models/model.history.jsonl -o reports/curves.png
      mnistkit render-curves models/model.safetensors -o reports/curves.png
    """
    from mnistkit.history import history_records
    from mnistkit.plots import curves_image
    from mnistkit.render import save_picture

    records, source = history_records(history)
    save_picture(curves_image(records, Path(source).name), output)
    _wrote(output, f"curves of {_count(len(records), 'epoch')}")


@cli.command("render-embedding", short_help="Scatter digits in a model's 2-unit layer.")
@_picture_checkpoint
@_picture_data
@_picture_output
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--count", type=click.IntRange(min=1), default=2000, show_default=True, help="Digits to plot.")
@click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the digits' sample."
)
def render_embedding_command(
    checkpoint_path: Path, data: Path, output: str, split: str, count: int, seed: int
) -> None:
    """Scatter digits in a model's 2-unit layer over its decision regions.

    The model needs a hidden layer of two units (train --preset embedding: 784-100-100-2-10
    with a linear 2-unit layer). Each dot is a digit placed by that layer's two values
    (before its activation, if it has one), coloured by its true class; the shading is the
    digit the model predicts at each point of the plane.

    \b
      mnistkit train data/mnist.npz -o models/2d.safetensors --preset embedding
      mnistkit render-embedding models/2d.safetensors data/mnist.npz -o reports/embedding.png
    """
    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.plots import bottleneck_layer, embedding_image
    from mnistkit.render import model_digits_mask, save_picture

    checkpoint = load_checkpoint(checkpoint_path)
    bottleneck_layer(checkpoint, str(checkpoint_path))
    arrays = _arrays_for_model(checkpoint, data, split)
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    picture = embedding_image(checkpoint, images, labels, count, seed, split, str(checkpoint_path), str(data))
    save_picture(picture, output)
    plotted = min(count, int(model_digits_mask(checkpoint, labels, str(checkpoint_path), str(data)).sum()))
    noun = "digit" if checkpoint.digit_classes else "image"
    _wrote(output, f"{_count(plotted, f'{split} {noun}')} in the 2-unit layer of {checkpoint_path.name}")


@cli.command("render-weights", short_help="Draw a logreg model's weights as digit templates.")
@_picture_checkpoint
@_picture_output
@click.option("--scale", type=click.IntRange(min=1), default=4, show_default=True, help="Pixels per weight.")
def render_weights_command(checkpoint_path: Path, output: str, scale: int) -> None:
    """Draw a logreg model's weights as one 28x28 template per digit, red positive, blue negative.

    \b
      mnistkit train data/mnist.npz -o models/logreg.safetensors --preset logreg
      mnistkit render-weights models/logreg.safetensors -o reports/weights.png
    """
    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.plots import weights_image
    from mnistkit.render import save_picture

    checkpoint = load_checkpoint(checkpoint_path)
    save_picture(weights_image(checkpoint, str(checkpoint_path), scale), output)
    noun = "digit" if checkpoint.digit_classes else "class"
    _wrote(output, f"weight templates of {_count(len(checkpoint.classes), noun)}")


@cli.command("serve", short_help="Serve a page to draw digits and a JSON API.")
@click.argument("checkpoint_path", metavar="CKPT", type=PathType(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port."
)
@click.option(
    "--max-body-mb",
    type=click.FloatRange(min=0.001),
    callback=_finite,
    default=8.0,
    show_default=True,
    help="Refuse uploads larger than this many megabytes.",
)
@click.option(
    "--allow-origin",
    "allow_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Let web pages at ORIGIN (http://localhost:3000; * for any) call the API. Repeatable.",
)
def serve_command(
    checkpoint_path: Path, host: str, port: int, max_body_mb: float, allow_origins: tuple[str, ...]
) -> None:
    """Serve a page to draw a digit and watch CKPT read it, and a JSON API, until Ctrl-C.

    The page (mouse, touch or pen; or drop an image) shows the ten probabilities live
    and the 28x28 image the model saw. Images are prepared as `predict` prepares them.
    The URL is printed on stderr. API: POST /api/predict with an image's bytes returns
    {"digit", "label", "confidence", "classes", "class_names", "probabilities",
    "preprocessed_png"}; GET /api/model, GET /healthz. Listens on 127.0.0.1 only unless
    --host says otherwise; web pages elsewhere may call the API where --allow-origin names
    them.

    \b
      mnistkit serve models/model.safetensors
      mnistkit serve models/model.safetensors --port 8080
      mnistkit serve models/model.safetensors --host 0.0.0.0
      mnistkit serve models/model.safetensors --allow-origin http://localhost:3000
      curl --data-binary @my-digit.png http://127.0.0.1:8000/api/predict
    """
    from mnistkit.clients import check_origin
    from mnistkit.serve import Limits, serve

    for origin in allow_origins:  # before the model is read
        check_origin(origin)
    limits = Limits(max_body_bytes=round(max_body_mb * 1e6))
    serve(checkpoint_path, host, port, limits, allow_origins=allow_origins)
