"""What mnistkit knows of the datasets themselves: the image shape and MNIST's file names.

Pure data, no numpy: the IDX reader, fetch and the models all take their facts from here.
"""

from __future__ import annotations

IMAGE_SHAPE = (28, 28)

# The four files, by the array each holds; parse-to-npz also accepts them without `.gz`.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
