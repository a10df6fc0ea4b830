"""The JAX models against their numpy twins, finite differences, and the seed trainer's init."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import loss_and_accuracy

from mnistkit import architectures, inference, models, steps
from mnistkit.architectures import member_tensor_name
from mnistkit.checkpoint import load_checkpoint, save_checkpoint
from mnistkit.errors import MnistkitError

ARCHITECTURES = {
    "logreg": {"model": "logreg", "num_classes": 10},
    "mlp": {"model": "mlp", "hidden": [64], "activation": "relu", "num_classes": 10},
    "mlp-tanh-deep": {"model": "mlp", "hidden": [32, 16], "activation": "tanh", "num_classes": 10},
    "bottleneck": {"model": "mlp", "hidden": [100, 100, 2], "activation": "relu", "num_classes": 2},
    "linear-bottleneck": {
        "model": "mlp",
        "hidden": [32, 2],
        "activation": "relu",
        "linear_last_hidden": True,
        "num_classes": 10,
    },
    "cnn": {
        "model": "cnn",
        "channels": [4, 8],
        "kernel_size": 5,
        "hidden": [16],
        "activation": "relu",
        "num_classes": 10,
    },
    "cnn-stride-2": {
        "model": "cnn",
        "channels": [6, 8],
        "kernel_sizes": [6, 3],
        "strides": [2, 1],
        "hidden": [16],
        "activation": "relu",
        "num_classes": 10,
    },
    "cnn-batch-norm": {
        "model": "cnn",
        "channels": [4, 8],
        "kernel_sizes": [5, 3],
        "batch_norm": True,
        "hidden": [16],
        "activation": "relu",
        "num_classes": 10,
    },
    "cnn-two-convs-per-pool": {
        "model": "cnn",
        "channels": [4, 6, 8],
        "kernel_sizes": [3, 3, 3],
        "pools": [False, True, True],
        "batch_norm": True,
        "hidden": [16],
        "activation": "relu",
        "num_classes": 10,
    },
}

STANDARD = {"kind": "standard", "mean": 0.13, "std": 0.31}
NORMALIZATIONS = {
    "logreg": STANDARD,
    "mlp": {"kind": "unit"},
    "mlp-tanh-deep": STANDARD,
    "bottleneck": {"kind": "unit"},
    "linear-bottleneck": {"kind": "unit"},
    "cnn": STANDARD,
    "cnn-stride-2": STANDARD,
    "cnn-batch-norm": STANDARD,
    "cnn-two-convs-per-pool": STANDARD,
}


def _random_params(architecture: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """He-normal kernels and non-zero biases, drawn with numpy (jax's threefry is slow to compile)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in architectures.param_shapes(architecture).items():
        scale = np.sqrt(2.0 / np.prod(shape[:-1])) if name.endswith(".kernel") else 0.1
        params[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
        if name.endswith(".var"):
            params[name] = 0.5 + np.abs(params[name])
    return params


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_numpy_inference_matches_jax(name: str, synthetic_data) -> None:
    architecture = ARCHITECTURES[name]
    initialized = jax.eval_shape(lambda key: models.init(key, architecture), jax.random.PRNGKey(0))
    assert {k: v.shape for k, v in initialized.items()} == architectures.param_shapes(architecture)
    assert all(v.dtype == jnp.float32 for v in initialized.values())
    params = _random_params(architecture)
    normalization = NORMALIZATIONS[name]
    images = synthetic_data["test_images"][:150]
    x = inference.normalize(images, normalization)
    apply = jax.jit(lambda p, inputs: jax.nn.softmax(models.apply(p, architecture, inputs)))
    jax_probabilities = np.asarray(apply(params, jnp.asarray(x)))
    # Batches of 100 and 50: a CNN's first batch is cut again into inference.CNN_CHUNK (64).
    numpy_probabilities = inference.predict_probabilities(
        params, architecture, normalization, images, batch_size=100
    )
    assert numpy_probabilities.shape == (150, architecture["num_classes"])
    np.testing.assert_allclose(numpy_probabilities, jax_probabilities, atol=1e-5, rtol=0)


@pytest.mark.parametrize("activation", architectures.ACTIVATIONS)
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_every_activation_is_computed_alike_by_jax_and_numpy(
    activation: str, model: str, synthetic_data
) -> None:
    """An activation added to one side only (numpy fell back to ReLU for any other name) made
    `eval` of a checkpoint disagree with `train`'s figures, without a word."""
    assert (
        set(models.ACTIVATION_FUNCTIONS)
        == set(inference.ACTIVATION_FUNCTIONS)
        == set(architectures.ACTIVATIONS)
    )
    architecture = {**ARCHITECTURES[model], "activation": activation}
    params = _random_params(architecture)
    images = synthetic_data["test_images"][:40]
    logits = np.asarray(
        models.apply(params, architecture, jnp.asarray(inference.normalize(images, STANDARD)))
    )
    probabilities = inference.predict_probabilities(params, architecture, STANDARD, images)
    np.testing.assert_allclose(probabilities, np.asarray(jax.nn.softmax(logits)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", [*ARCHITECTURES, "mirror-averaged-ensemble"])
def test_weights_whose_float32_outputs_overflow_still_give_probabilities(name: str, synthetic_data) -> None:
    """Kernels scaled by 1e20 (a checkpoint edited by hand): float32 logits past 3.4e38 gave NaN
    probabilities and a NaN loss; the model runs again in float64 instead, without a warning."""
    if name == "mirror-averaged-ensemble":
        member = {**ARCHITECTURES["cnn"], "mirror_average": True}
        architecture, normalization = (
            {"model": "ensemble", "members": 2, "member": member},
            NORMALIZATIONS["cnn"],
        )
        params = {
            member_tensor_name(index, tensor): value
            for index in range(2)
            for tensor, value in _random_params(member).items()
        }
    else:
        architecture, normalization = ARCHITECTURES[name], NORMALIZATIONS[name]
        params = _random_params(architecture)
    params = {
        name: value * np.float32(1e20) if name.endswith(".kernel") else value
        for name, value in params.items()
    }
    images = synthetic_data["test_images"][:20]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probabilities = inference.predict_probabilities(params, architecture, normalization, images)
        logits = inference.member_logits(params, architecture, inference.normalize(images, normalization))
    assert np.isfinite(probabilities).all() and np.allclose(probabilities.sum(axis=1), 1)
    assert all(np.isfinite(inference.log_softmax(member)).all() for member in logits)


def test_training_evaluation_agrees_with_numpy_over_blocks_chunks_and_padding(
    monkeypatch, synthetic_data
) -> None:
    """On one CPU device, 250 images in blocks of 200 (EVAL_BLOCK rounded up to whole steps of
    100), the second block padded with 150 rows that must count for nothing."""
    from mnistkit import steps
    from mnistkit.parallel import make_placement
    from mnistkit.training_data import Dataset

    monkeypatch.setattr(steps, "EVAL_BLOCK", 120)
    architecture, normalization = ARCHITECTURES["cnn"], NORMALIZATIONS["cnn"]
    params = _random_params(architecture)
    images, labels = (
        synthetic_data["train_images"][:250],
        synthetic_data["train_labels"][:250].astype(np.int32),
    )
    placement = make_placement(32)
    evaluate = steps.make_evaluate(architecture, 1, normalization, placement)
    dataset = Dataset(*(placement.put(array, placement.replicated) for array in (images, labels)))
    rows = evaluate({name: jnp.asarray(value)[None] for name, value in params.items()}, dataset)

    probabilities = inference.predict_probabilities(params, architecture, normalization, images)
    loss, accuracy = loss_and_accuracy(probabilities, labels)
    assert 0.05 < accuracy < 0.95  # random weights: some right, some wrong
    for member_or_ensemble in rows:
        assert member_or_ensemble[0] == pytest.approx(loss, rel=1e-5)
        assert member_or_ensemble[1] == pytest.approx(accuracy, abs=1e-9)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_gradients_match_finite_differences(name: str, synthetic_data) -> None:
    """Directional derivatives of the loss in float64, along a random direction per tensor."""
    architecture = ARCHITECTURES[name]
    if "kernel_size" in architecture:  # the same code with 3x3 kernels compiles much faster
        architecture = {**architecture, "kernel_size": 3}
    images = inference.normalize(synthetic_data["train_images"][:4], {"kind": "unit"})
    labels = synthetic_data["train_labels"][:4] % architecture["num_classes"]
    with jax.enable_x64(True):
        params = {k: jnp.asarray(v, jnp.float64) for k, v in _random_params(architecture).items()}
        x = jnp.asarray(images, jnp.float64)
        y = jnp.asarray(labels, jnp.int32)

        def loss(p):
            # Batch norm in training mode, where its gradient flows through the batch's statistics.
            logits = models.apply(p, architecture, x, training=True)[0]
            log_probs = jax.nn.log_softmax(logits)
            return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))

        @jax.jit
        def central_difference(p, direction, eps):
            plus = loss(jax.tree.map(lambda a, d: a + eps * d, p, direction))
            minus = loss(jax.tree.map(lambda a, d: a - eps * d, p, direction))
            return (plus - minus) / (2 * eps)

        grads = jax.jit(jax.grad(loss))(params)
        rng = np.random.default_rng(0)
        zeros = {k: np.zeros(v.shape) for k, v in params.items()}
        for tensor in params:
            direction = {**zeros, tensor: rng.standard_normal(params[tensor].shape)}
            numeric = float(central_difference(params, direction, 1e-6))
            analytic = float(np.sum(np.asarray(grads[tensor]) * direction[tensor]))
            assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8), tensor


@pytest.mark.parametrize("parts", [2, 3, 4])
def test_a_batch_cut_into_parts_has_the_whole_batchs_gradient(parts: int, synthetic_data) -> None:
    """The CNN's inner scan over parts of a batch (two parts a turn, and a last odd one) sums
    to the gradient and totals of the batch in one piece; padding slots (weight 0) count nowhere."""
    architecture = {**ARCHITECTURES["cnn-stride-2"]}
    params = {k: jnp.asarray(v) for k, v in _random_params(architecture).items()}
    x = jnp.asarray(inference.normalize(synthetic_data["train_images"][:12], {"kind": "unit"}))
    labels = jnp.asarray(synthetic_data["train_labels"][:12])
    weights = jnp.asarray([1.0] * 10 + [0.0] * 2)
    whole, (whole_loss, whole_correct, _) = steps._batch_gradients(architecture, 0.1, 1)(
        params, {}, x, labels, weights
    )
    cut, (cut_loss, cut_correct, _) = steps._batch_gradients(architecture, 0.1, parts)(
        params, {}, x, labels, weights
    )
    for name in whole:
        np.testing.assert_allclose(cut[name], whole[name], rtol=1e-5, atol=1e-7, err_msg=name)
    assert float(cut_loss) == pytest.approx(float(whole_loss), rel=1e-6)
    assert float(cut_correct) == float(whole_correct)


def test_on_a_gpu_matmuls_skip_triton_and_a_cnn_batch_is_one_piece(monkeypatch, synthetic_data) -> None:
    """What a GPU gets, run here on the CPU, whose compiler takes XLA's GPU options too (a
    misspelt option fails the compile): cuBLAS matmuls, since compiling Triton's fusions took
    most of the first epoch on an H200, and each batch whole, since the parts that keep a
    CPU's cache warm would only add launches there."""
    from mnistkit import training
    from mnistkit.config import config_from_options
    from mnistkit.parallel import make_placement

    cnn = ARCHITECTURES["cnn"]
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")  # whatever runs the tests
    assert steps.compiler_options() is None
    assert steps._sub_batches(cnn, 256, make_placement(256)) == 4
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert steps.compiler_options() == {"xla_gpu_enable_triton_gemm": False}
    assert steps._sub_batches(cnn, 256, make_placement(256)) == 1
    arrays = {name: array[:512] for name, array in synthetic_data.items()}
    config = config_from_options("fast", {"epochs": 1, "channels": (4, 8), "hidden": (16,)})
    result = training.train(arrays, config, log=lambda message: None)  # compiled with the options
    assert np.isfinite(result.history[0]["train_loss"])


def test_init_draws_what_the_seed_trainer_draws() -> None:
    """784-128-10 from PRNGKey(0): the seed's `random.split(key)` then He-normal per layer."""
    architecture = {"model": "mlp", "hidden": [128], "activation": "relu", "num_classes": 10}
    params = models.init(jax.random.PRNGKey(0), architecture)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(
        params["dense_0.kernel"], jax.random.normal(k1, (784, 128)) * jnp.sqrt(2.0 / 784)
    )
    np.testing.assert_array_equal(
        params["dense_1.kernel"], jax.random.normal(k2, (128, 10)) * jnp.sqrt(2.0 / 128)
    )
    assert not np.any(params["dense_0.bias"]) and not np.any(params["dense_1.bias"])


def test_cnn_checkpoint_round_trips_and_predicts_the_same(tmp_path, synthetic_data) -> None:
    architecture = ARCHITECTURES["cnn"]
    params = _random_params(architecture)
    metadata = {"architecture": architecture, "normalization": {"kind": "unit"}, "classes": list(range(10))}
    path = tmp_path / "cnn.safetensors"
    save_checkpoint(path, params, metadata)
    checkpoint = load_checkpoint(path)
    images = synthetic_data["test_images"][:10]
    expected = inference.predict_probabilities(params, architecture, {"kind": "unit"}, images)
    np.testing.assert_array_equal(checkpoint.predict_probabilities(images), expected)


@pytest.mark.parametrize(
    "architecture",
    [
        {"model": "cnn", "channels": [], "kernel_size": 5, "hidden": [], "num_classes": 10},
        {"model": "cnn", "channels": [16, 32, 64], "kernel_size": 5, "hidden": [], "num_classes": 10},
    ],
)
def test_impossible_cnn_architectures_are_refused(architecture: dict) -> None:
    with pytest.raises(MnistkitError):
        architectures.check_architecture(architecture)


@pytest.mark.parametrize(
    ("channels", "kernel_size", "problem"),
    [
        # 28 -> 26 -> 13 -> 11 -> 5 -> 3 -> 1, then a -1 pixel wide image, whose square, 1,
        # once passed for a size
        ([8] * 5, 3, "conv 4's 3x3 kernel is wider than the 1x1 image it gets"),
        ([8], 29, "conv 1's 29x29 kernel is wider than the 28x28 image it gets"),
        ([8], 28, "conv 1 leaves a 1x1 image, too small for its 2x2 pool"),
    ],
)
def test_convolutions_that_leave_no_image_are_named(channels: list, kernel_size: int, problem: str) -> None:
    architecture = {
        "model": "cnn",
        "channels": channels,
        "kernel_size": kernel_size,
        "hidden": [],
        "num_classes": 10,
    }
    with pytest.raises(MnistkitError, match=f"^the convolutions shrink 28x28 images to nothing: {problem}$"):
        architectures.check_architecture(architecture)
    architectures.check_architecture({**architecture, "channels": [8], "kernel_size": 27})  # 2 -> 1


def test_pools_say_where_the_image_halves() -> None:
    """Without `pools`, a pool follows each conv of stride 1; with it, exactly where it says."""
    lenet = {"model": "cnn", "channels": [16, 32], "kernel_size": 5, "hidden": [], "num_classes": 10}
    assert architectures.cnn_layers(lenet) == [(5, 1, True), (5, 1, True)]
    assert architectures.cnn_feature_size(lenet) == 4 * 4 * 32  # 28 -> 24 -> 12 -> 8 -> 4
    two_per_pool = {**lenet, "channels": [8, 8, 16, 16], "kernel_size": 3, "pools": [False, True] * 2}
    architectures.check_architecture(two_per_pool)
    assert architectures.cnn_feature_size(two_per_pool) == 4 * 4 * 16  # 28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4
    for pools in ([True], [1, 0], True, [False, False, False]):
        with pytest.raises(MnistkitError, match="pools"):
            architectures.check_architecture({**lenet, "channels": [8, 8], "pools": pools})


def test_batch_norm_learns_from_the_batch_without_its_padding() -> None:
    """In training, each channel is normalized by the batch's own statistics, padding slots
    (weight 0) left out, and the running statistics move toward them by 1 - momentum."""
    architecture = ARCHITECTURES["cnn-batch-norm"]
    params = {k: jnp.asarray(v) for k, v in _random_params(architecture).items()}
    x = jnp.asarray(np.random.default_rng(1).standard_normal((6, 28, 28)), jnp.float32)
    weights = jnp.asarray([1, 1, 1, 1, 0, 0], jnp.float32)
    padded_logits, padded = models.apply(params, architecture, x, training=True, weights=weights)
    logits, statistics = models.apply(params, architecture, x[:4], training=True)
    np.testing.assert_allclose(padded_logits[:4], logits, atol=1e-5)
    assert set(statistics) == {"bn_0.mean", "bn_0.var", "bn_1.mean", "bn_1.var"}
    for name, value in statistics.items():
        np.testing.assert_allclose(padded[name], value, atol=1e-6)
        assert not np.allclose(value, params[name])
    first = models.max_pool_2x2_chwn(
        models.conv2d_valid_chwn(x[:4].transpose(1, 2, 0)[None], params["conv_0.kernel"])
    )
    expected_mean = 0.9 * params["bn_0.mean"] + 0.1 * first.mean(axis=(1, 2, 3))
    np.testing.assert_allclose(statistics["bn_0.mean"], expected_mean, rtol=1e-5, atol=1e-6)


def test_a_batch_norm_cnn_trains_and_predicts_with_numpy_alone(tmp_path, synthetic_data) -> None:
    from mnistkit.config import config_from_options
    from mnistkit.training import train

    config = config_from_options(
        "cnn",
        {
            "channels": (4, 8),
            "kernel_sizes": (5, 3),
            "batch_norm": True,
            "hidden": (16,),
            "epochs": 3,
            "batch_size": 32,
            "augment": "none",
        },
    )
    result = train(synthetic_data, config, tmp_path / "bn.safetensors", log=lambda message: None)
    checkpoint = load_checkpoint(tmp_path / "bn.safetensors")
    assert checkpoint.architecture["batch_norm"] and checkpoint.architecture["kernel_sizes"] == [5, 3]
    assert not np.allclose(checkpoint.params["bn_0.var"], 1.0)  # the running statistics were kept
    assert not any(name.endswith((".mean", ".var")) for name in checkpoint.optimizer_state)
    probabilities = checkpoint.predict_probabilities(synthetic_data["test_images"])
    accuracy = float(np.mean(probabilities.argmax(axis=1) == synthetic_data["test_labels"]))
    assert accuracy == pytest.approx(result.checkpoint.metadata["metrics"]["test_accuracy"], abs=1e-6)
    assert accuracy > 0.3  # chance is 0.1; four epochs of a tiny net on 600 shifted digits


def test_max_pool_gradient_goes_to_the_first_maximum_of_each_window() -> None:
    """Where a window has one maximum, the same gradient as jnp.max's; where it ties (a
    blank background), all of it to the first one, as PyTorch does."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, 6, 7, 4)), jnp.float32)
    weights = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32)

    def plain_pool(values):
        c, n = values.shape[0], values.shape[-1]
        return values[:, :6, :6].reshape(c, 3, 2, 3, 2, n).max(axis=(2, 4))

    ours = jax.grad(lambda v: jnp.sum(models.max_pool_2x2_chwn(v) * weights))(x)
    expected = jax.grad(lambda v: jnp.sum(plain_pool(v) * weights))(x)
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    assert not np.any(ours[:, :, 6])  # the odd column is dropped by the pool
    tied = jax.grad(lambda v: jnp.sum(models.max_pool_2x2_chwn(v)))(jnp.zeros((1, 2, 2, 1)))
    assert tied[0, :, :, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]


WIDE_MLP = {"model": "mlp", "hidden": [1500, 1500], "activation": "relu", "num_classes": 10}


@pytest.mark.parametrize("partitionable", [True, False], ids=["partitionable", "classic threefry"])
@pytest.mark.parametrize(
    "architecture",
    [ARCHITECTURES["cnn-stride-2"], ARCHITECTURES["cnn-batch-norm"], WIDE_MLP],
    ids=["cnn", "batch norm", "rows in two groups"],
)
def test_uniform_init_is_pytorchs_default(architecture: dict, partitionable: bool) -> None:
    """Each tensor is its own key's draw (`split(key, tensors)`, a batch norm's tensors taking
    theirs undrawn) as drawing it alone gives, though tensors of similar sizes are drawn as one
    row per key (one by one where JAX's classic threefry makes an element's bits depend on the
    shape); a batch norm starts as the identity."""
    shapes = architectures.param_shapes(architecture)
    default = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", partitionable)
    try:
        params = {
            name: np.asarray(value)
            for name, value in models.init(jax.random.PRNGKey(3), architecture, "uniform").items()
        }
        keys = jax.random.split(jax.random.PRNGKey(3), len(shapes))
        alone = {
            name: np.asarray(jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0))
            for key, (name, shape) in zip(keys, shapes.items(), strict=True)
        }
    finally:
        jax.config.update("jax_threefry_partitionable", default)
    assert list(params) == list(shapes)  # in layer order
    for name, value in params.items():
        layer, kind = name.rsplit(".", 1)
        if f"{layer}.kernel" in shapes:
            bound = 1 / np.sqrt(np.prod(shapes[f"{layer}.kernel"][:-1]))
            np.testing.assert_array_equal(value, alone[name] * np.float32(bound), err_msg=name)
        else:
            identity = np.full(shapes[name], kind in ("scale", "var"), np.float32)
            np.testing.assert_array_equal(value, identity, err_msg=name)


@pytest.mark.parametrize("stride", [1, 2])
def test_xla_convolution_for_accelerators_computes_the_same(stride: int) -> None:
    """Backends other than CPUs and GPUs (a TPU) take XLA's own convolution; here both run on
    the CPU."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, 12, 12, 5)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((4, 4, 3, 6)), jnp.float32)
    np.testing.assert_allclose(
        models.conv2d_xla_chwn(x, kernel, stride), models.conv2d_valid_chwn(x, kernel, stride), atol=1e-5
    )


def test_a_mirror_averaged_model_predicts_the_mean_of_each_image_and_its_mirror(
    tmp_path, synthetic_data
) -> None:
    """Training's evaluation (JAX) and numpy's predictions agree, for each member of an ensemble."""
    from mnistkit.config import config_from_options
    from mnistkit.training import train

    options = {"channels": (4, 8), "hidden": (16,), "epochs": 2, "batch_size": 32, "augment": "mirror"}
    config = config_from_options("cnn", {**options, "mirror_average": True, "seeds": (0, 1)})
    result = train(synthetic_data, config, tmp_path / "m.safetensors", log=lambda message: None)
    checkpoint = load_checkpoint(tmp_path / "m.safetensors")
    assert checkpoint.architecture["member"]["mirror_average"] is True
    images = synthetic_data["test_images"]
    probabilities = checkpoint.predict_probabilities(images)
    labels = synthetic_data["test_labels"]
    metrics = result.checkpoint.metadata["metrics"]
    loss, accuracy = loss_and_accuracy(probabilities, labels)
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert loss == pytest.approx(metrics["test_loss"], abs=1e-5)
    np.testing.assert_allclose(checkpoint.predict_probabilities(images[:, :, ::-1]), probabilities, atol=1e-6)

    member = dict(checkpoint.architecture["member"], mirror_average=False)
    plain = {**checkpoint.architecture, "member": member}
    views = [
        inference.predict_probabilities(checkpoint.params, plain, checkpoint.normalization, view)
        for view in (images, images[:, :, ::-1])
    ]
    assert not np.allclose(views[0], views[1], atol=1e-3)  # the model alone tells them apart
    np.testing.assert_allclose(probabilities, (views[0] + views[1]) / 2, atol=1e-5)


@pytest.mark.parametrize(
    "settings",
    [{"shift_average": True}, {"shift_average": True, "mirror_average": True, "seeds": (0, 1)}],
    ids=["shifts", "mirrored-and-shifted-ensemble"],
)
def test_a_shift_averaged_model_predicts_the_mean_of_each_image_moved_a_pixel_each_way(
    tmp_path, synthetic_data, settings
) -> None:
    """Training's evaluation (JAX) and numpy's predictions agree; the views are the image (and
    its mirror image) and each moved one pixel down, up, right and left, the edge repeated."""
    from mnistkit.config import config_from_options
    from mnistkit.training import train

    options = {"channels": (4, 8), "hidden": (16,), "epochs": 2, "batch_size": 32, **settings}
    config = config_from_options("cnn", options)
    result = train(synthetic_data, config, tmp_path / "m.safetensors", log=lambda message: None)
    checkpoint = load_checkpoint(tmp_path / "m.safetensors")
    images, labels = synthetic_data["test_images"], synthetic_data["test_labels"]
    probabilities = checkpoint.predict_probabilities(images)
    metrics = result.checkpoint.metadata["metrics"]
    loss, accuracy = loss_and_accuracy(probabilities, labels)
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert loss == pytest.approx(metrics["test_loss"], abs=1e-5)

    member = architectures.member_architecture(checkpoint.architecture)
    plain_member = dict(member, shift_average=False, mirror_average=False)
    plain = (
        {**checkpoint.architecture, "member": plain_member}
        if checkpoint.architecture["model"] == "ensemble"
        else plain_member
    )
    unmoved = [images, images[:, :, ::-1]] if settings.get("mirror_average") else [images]
    moved = []
    for view in unmoved:
        padded = np.pad(view, ((0, 0), (1, 1), (1, 1)), mode="edge")
        moved += [
            padded[:, 1 - dy : 29 - dy, 1 - dx : 29 - dx]
            for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
        ]
    assert len(moved) == 5 * len(unmoved)
    views = [
        inference.predict_probabilities(checkpoint.params, plain, checkpoint.normalization, v) for v in moved
    ]
    assert not np.allclose(views[0], views[1], atol=1e-3)  # the model alone tells them apart
    if checkpoint.architecture["model"] != "ensemble":
        np.testing.assert_allclose(probabilities, np.mean(views, axis=0), atol=1e-5)
    else:  # an ensemble averages its members' view-averaged probabilities
        per_member = [
            np.mean(
                [
                    inference.predict_probabilities(
                        inference.member_params(checkpoint.params, index),
                        plain_member,
                        checkpoint.normalization,
                        v,
                    )
                    for v in moved
                ],
                axis=0,
            )
            for index in range(2)
        ]
        np.testing.assert_allclose(probabilities, np.mean(per_member, axis=0), atol=1e-5)


@pytest.mark.parametrize("flag", architectures.VIEW_FLAGS)
def test_a_view_setting_is_a_boolean_of_a_single_model(flag: str) -> None:
    with pytest.raises(MnistkitError, match=f"{flag} must be true or false"):
        architectures.check_architecture({**ARCHITECTURES["mlp"], flag: "yes"})
    ensemble = {"model": "ensemble", "members": 2, "member": ARCHITECTURES["mlp"], "num_classes": 10}
    architectures.check_architecture(ensemble)
    with pytest.raises(MnistkitError, match="belongs to an ensemble's member"):
        architectures.check_architecture({**ensemble, flag: True})


def test_the_cnn_presets_predict_from_shifted_digits_but_not_from_shifted_clothes() -> None:
    from mnistkit.cli import _preset_help
    from mnistkit.config import preset_config

    assert preset_config("cnn-best").shift_average is True
    clothes = preset_config("cnn-best", "fashion-mnist")
    assert clothes.shift_average is False and clothes.mirror_average is True
    assert preset_config("fast").shift_average is True
    assert preset_config("fast", "fashion-mnist").shift_average is False
    assert preset_config("cnn").shift_average is True
    assert preset_config("cnn", "fashion-mnist").shift_average is False
    # The help says so in options the command takes.
    assert "--mirror-average --no-shift-average" in _preset_help()
    assert "2 epochs, about 99.4% (trained on fashion-mnist, with --no-shift-average)" in _preset_help()
