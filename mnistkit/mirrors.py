"""Where fetch looks for MNIST, kept apart from the network code so the CLI starts fast."""

from __future__ import annotations

import re
from collections.abc import Sequence

# Public mirrors in the order tried; yann.lecun.com last, since its domain lapsed in 2026.
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://raw.githubusercontent.com/fgnt/mnist/master/",
    "http://yann.lecun.com/exdb/mnist/",
)
MIRROR_ENV = "MNISTKIT_MIRROR"
DEFAULT_TIMEOUT_S = 30.0
# A download averaging less than this over any --timeout window is abandoned: far below
# any honest link (a slow mobile one brings 10,000 bytes/s), far above a dripping mirror.
DEFAULT_MIN_RATE_BYTES_PER_S = 1000


def mirror_list(option_mirrors: Sequence[str], env_value: str | None, use_defaults: bool = True) -> list[str]:
    """The mirrors in the order fetch tries them: options, then the variable, then defaults.

    The variable holds one or more mirrors separated by spaces or commas.
    """
    env_mirrors = [mirror for mirror in re.split(r"[\s,]+", env_value or "") if mirror]
    defaults = DEFAULT_MIRRORS if use_defaults else ()
    return list(dict.fromkeys([*option_mirrors, *env_mirrors, *defaults]))
