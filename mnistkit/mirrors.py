"""Where fetch looks for a dataset, kept apart from the network code so the CLI starts fast.

A mirror is a folder (or URL) holding a dataset's files under their canonical names, as its
official host serves them. `{dataset}` in a mirror stands for the dataset's name, so one
setting serves every dataset: `MNISTKIT_MIRROR=/srv/datasets/{dataset}` reads Fashion-MNIST
from /srv/datasets/fashion-mnist. A mirror without it is tried for any dataset; the
checksums turn away another dataset's files of the same name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from mnistkit.datasets import DEFAULT_DATASET, MNIST, dataset_spec

# MNIST's public mirrors in the order tried (each dataset has its own, in datasets.py).
DEFAULT_MIRRORS = MNIST.mirrors
MIRROR_ENV = "MNISTKIT_MIRROR"
DATASET_PLACEHOLDER = "{dataset}"
# Where archives holding several datasets (EMNIST's zip) are kept, beside fetch's `data/raw`.
DEFAULT_CACHE_DIR = "data/cache"
DEFAULT_TIMEOUT_S = 30.0
# A download averaging less than this over any --timeout window is abandoned: far below
# any honest link (a slow mobile one brings 10,000 bytes/s), far above a dripping mirror.
DEFAULT_MIN_RATE_BYTES_PER_S = 1000


def split_mirrors(text: str) -> list[str]:
    """The mirrors in one string, separated by spaces or commas (as $MNISTKIT_MIRROR holds them).

    A string that is the path of a folder is that one folder, whatever its name holds: cut at
    its spaces, `MNISTKIT_MIRROR="/srv/my data/mnist"` was two folders that are not there.
    """
    whole = text.strip()
    if re.search(r"[\s,]", whole) and os.path.isdir(whole):  # any error: no such folder
        return [whole]
    return [mirror for mirror in re.split(r"[\s,]+", text) if mirror]


def mirror_list(
    option_mirrors: Sequence[str],
    env_value: str | None,
    use_defaults: bool = True,
    dataset: str = DEFAULT_DATASET,
) -> list[str]:
    """The mirrors in the order fetch tries them for `dataset`: options, then the variable,
    then the dataset's public mirrors; `{dataset}` replaced by its name.

    The variable holds one or more mirrors separated by spaces or commas.
    """
    env_mirrors = split_mirrors(env_value or "")
    defaults = dataset_spec(dataset).mirrors if use_defaults else ()
    given = [mirror.replace(DATASET_PLACEHOLDER, dataset) for mirror in [*option_mirrors, *env_mirrors]]
    return list(dict.fromkeys([*given, *defaults]))
