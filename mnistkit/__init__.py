"""mnistkit: MNIST from download to a trained JAX model and predictions on your own digits.

The Python API (see `mnistkit.api`) loads on first use, so `import mnistkit` stays instant::

    import mnistkit
    arrays = mnistkit.load_mnist("data")                  # fetched and parsed once, then cached
    model = mnistkit.train(arrays, preset="mlp", epochs=3)
    model.predict(arrays["test_images"][:5])              # digits
    mnistkit.evaluate(model, arrays).accuracy

The names, each with its own help (`help(mnistkit.train)`):

    load_mnist, load_dataset, load_arrays, download    the data, fetched and verified
    train, TrainConfig, PRESETS                        a model trained on arrays
    load, Model                                        a checkpoint; predicts with numpy alone
    evaluate, predict_images                           figures on a split; your own images
    draw_samples, draw_curves, draw_confusion,         the pictures, as PIL images
    draw_embedding, draw_weights
    MnistkitError                                      what a bad file or a failed write raises
    BadArrays                                          what arrays of the wrong shape or type
                                                       raise: a MnistkitError and a ValueError

The modules listed under PACKAGE CONTENTS are the machinery behind these and the commands.
"""

__version__ = "0.1.0"

# The names of `mnistkit.api.__all__` (a test holds the two equal).
_API = (
    "PRESETS",
    "BadArrays",
    "MnistkitError",
    "Model",
    "TrainConfig",
    "download",
    "draw_confusion",
    "draw_curves",
    "draw_embedding",
    "draw_samples",
    "draw_weights",
    "evaluate",
    "load",
    "load_arrays",
    "load_dataset",
    "load_mnist",
    "predict_images",
    "train",
)


__all__ = list(_API)  # `from mnistkit import *`, as the fast.ai lessons import their library


def __getattr__(name: str):
    if name in _API:
        from mnistkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'mnistkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
