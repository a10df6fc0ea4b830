"""mnistkit: MNIST from download to a trained JAX model and predictions on your own digits."""

__version__ = "0.1.0"
