"""What mnistkit knows of the datasets themselves: MNIST and its drop-in siblings.

Each entry says where a dataset's files come from and how each is verified, what its
classes are called, how its IDX files are laid out (EMNIST stores its images transposed
and its letters from 1; QMNIST's labels are two-dimensional int32), and how its images
were made, which is how `predict` must prepare a person's image for its models.

Pure data, no numpy: the IDX reader, fetch, the checkpoint and the CLI (`--help`,
`mnistkit datasets`) all take their facts from here.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mnistkit.errors import MnistkitError
from mnistkit.terms import on_command_line, setting

IMAGE_SHAPE = (28, 28)
DEFAULT_DATASET = "mnist"
DIGIT_NAMES = tuple(string.digits)


@dataclass(frozen=True)
class Published:
    """A checksum of a file as its official host serves it, byte for byte."""

    algorithm: str  # "sha256" or "md5"
    digest: str
    size_bytes: int | None = None

    @property
    def algorithm_name(self) -> str:
        return {"sha256": "SHA-256", "md5": "MD5"}[self.algorithm]


@dataclass(frozen=True)
class ExpectedFile:
    """A file fetch writes: its name (in the output folder and on every mirror) and what it
    must hold. A copy is genuine when its bytes match `published` (the official file), or
    when its decompressed content has `sha256` (any mirror's recompression of it). An empty
    `sha256` means no one has published the content's hash: only the official bytes pass."""

    name: str
    sha256: str
    size_bytes: int
    max_download_bytes: int
    published: Published | None = None

    def __post_init__(self) -> None:
        if Path(self.name).name != self.name or self.name in ("", ".", ".."):
            raise ValueError(f"expected file name {self.name!r} must be a plain file name")
        if not self.sha256 and self.published is None:
            raise ValueError(f"{self.name}: nothing to verify a copy against")


def gzip_cap(content_bytes: int) -> int:
    """The most bytes any gzip of `content_bytes` bytes can take: stored blocks cost 5 bytes
    per 64 KiB, and the header and trailer a few dozen; 1% and 64 KiB are far above that."""
    return content_bytes + content_bytes // 100 + (64 << 10)


def idx_file(
    name: str, content_bytes: int, sha256: str = "", published: Published | None = None
) -> ExpectedFile:
    """A gzip-compressed IDX file; its download cap is twice its official size when known."""
    cap = 2 * published.size_bytes if published and published.size_bytes else gzip_cap(content_bytes)
    return ExpectedFile(name, sha256, content_bytes, cap, published)


def images_bytes(count: int) -> int:
    return 16 + count * IMAGE_SHAPE[0] * IMAGE_SHAPE[1]


def labels_bytes(count: int, columns: int = 0) -> int:
    """An IDX labels file: uint8 labels, or (count, columns) int32 with a two-dimension header."""
    return 8 + count if not columns else 12 + 4 * count * columns


UNKNOWN_STYLE = "none"


@dataclass(frozen=True)
class ImageStyle:
    """How a dataset's images were made from the original drawings or photos: the longer side
    of the cropped ink scaled to `side_px`, placed by its centre of mass or its box, and its
    stroke levels stretched so the strokes saturate (pen strokes) or kept (photos).
    `stroke_px`, where known, is the dataset's typical stroke width in its 28x28 frame:
    thinner strokes (a pencil, a fine pen) are drawn thicker to it before scaling. With
    `drops_rules`, an underline or a box drawn apart from the character is dropped: a digit
    seldom has a piece well past the rest at both ends, as a letter's T bar or I's serifs are.
    With `white_backdrop`, a picture's transparent pixels are the white the photos were taken
    on (a product cut out of its photo), not whatever contrasts with its opaque ones (a pen's
    strokes, light or dark). With `as_is`, nothing is known of how they were made (a dataset
    of a user's own): an image is taken as it is, 28x28 as the dataset's own."""

    side_px: int
    by_centre_of_mass: bool
    saturate_ink: bool
    summary: str
    stroke_px: float | None = None
    drops_rules: bool = False
    white_backdrop: bool = False
    as_is: bool = False


IMAGE_STYLES = {
    # MNIST's median stroke width: 2.5 px over 10,000 training digits (enlarged 4x, the
    # strokes' area twice over their outline at half the peak level; 10% are under 1.8 px).
    "mnist": ImageStyle(
        20,
        True,
        True,
        "the ink's longer side to 20 px, its centre of mass at the centre, thin strokes thickened, "
        "an underline or a box apart from it dropped",
        stroke_px=2.5,
        drops_rules=True,
    ),
    "emnist": ImageStyle(
        26, False, True, "the ink's longer side to 26 px (a 2 px border at NIST's 128 px), centred"
    ),
    "fashion-mnist": ImageStyle(
        28, False, False, "the object's longer side to 28 px, centred, shades kept", white_backdrop=True
    ),
    # A dataset mnistkit does not know: preparing its pictures as digits hollowed a user's
    # filled shapes into rings and read them with confidence.
    UNKNOWN_STYLE: ImageStyle(
        28, False, False, "none: 28x28 images taken as they are, as the dataset's own", as_is=True
    ),
}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its classes, its files by array, how to fetch and read them.

    `files` maps each array of the `.npz` to its IDX file's name. `downloads` are the files
    fetch downloads: those four, or one archive holding them (EMNIST's zip, under
    `archive_prefix/` inside it), kept in the cache's `cache_folder` so that every split is
    extracted from one download. `mirrors` are the public hosts, tried in order.
    """

    name: str
    title: str
    class_names: tuple[str, ...]
    files: Mapping[str, str]
    downloads: tuple[ExpectedFile, ...]
    mirrors: tuple[str, ...]
    counts: tuple[int, int]
    summary: str
    image_style: str = "mnist"
    cache_folder: str = ""  # set when `downloads` is one archive holding `files`
    archive_prefix: str = ""
    label_offset: int = 0  # EMNIST letters numbers its classes from 1
    label_columns: tuple[str, ...] = ()  # the columns of two-dimensional labels; the first is the class
    transposed: bool = False
    notes: tuple[str, ...] = ()

    @property
    def archive(self) -> ExpectedFile | None:
        return self.downloads[0] if self.cache_folder else None

    @property
    def download_bytes(self) -> int | None:
        """What a first fetch downloads, when every published size is known."""
        sizes = [entry.published.size_bytes if entry.published else None for entry in self.downloads]
        return None if None in sizes else sum(sizes)


def label_named(text: str, names: Mapping[int, str]) -> int | None:
    """The label of the class called `text` (`names`: each label's name); failing that, of the
    one class whose name differs from it only in case, as EMNIST's letters hold `C` and `c` in
    one class named `c`; None where there is none."""
    folded = [label for label, name in names.items() if name.casefold() == text.casefold()]
    exact = [label for label in folded if names[label] == text]
    return (exact or folded)[0] if len(exact) == 1 or len(folded) == 1 else None


def named_by_digits(labels: Iterable[int], names: Iterable[str]) -> bool:
    """Whether each class is named by its label, as MNIST's digits are: outputs then call the
    classes digits, as they always have; other classes are shown by name."""
    return all(name == str(label) for label, name in zip(labels, names, strict=True))


def _idx_names(prefix: str, labels_suffix: str = "labels-idx1-ubyte", test: str = "t10k") -> dict[str, str]:
    return {
        "train_images": f"{prefix}train-images-idx3-ubyte.gz",
        "train_labels": f"{prefix}train-{labels_suffix}.gz",
        "test_images": f"{prefix}{test}-images-idx3-ubyte.gz",
        "test_labels": f"{prefix}{test}-{labels_suffix}.gz",
    }


MNIST_FILES = _idx_names("")


def _four_files(
    names: Mapping[str, str],
    counts: tuple[int, int],
    label_columns: int = 0,
    sha256: Mapping[str, str] | None = None,
    published: Mapping[str, Published] | None = None,
) -> tuple[ExpectedFile, ...]:
    sizes = {
        "train_images": images_bytes(counts[0]),
        "train_labels": labels_bytes(counts[0], label_columns),
        "test_images": images_bytes(counts[1]),
        "test_labels": labels_bytes(counts[1], label_columns),
    }
    return tuple(
        idx_file(name, sizes[key], (sha256 or {}).get(key, ""), (published or {}).get(key))
        for key, name in names.items()
    )


# MNIST: the content's SHA-256 (mirrors recompress), and the official files' MD5 and size
# (torchvision's); the caps are twice those sizes.
_MNIST_CONTENT = {
    "train_images": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016),
    "train_labels": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008),
    "test_images": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016),
    "test_labels": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008),
}
_MNIST_PUBLISHED = {
    "train_images": Published("md5", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422),
    "train_labels": Published("md5", "d53e105ee54ea40749a09fcbcd1e9432", 28_881),
    "test_images": Published("md5", "9fb629c4189551a2d022fa330f9573f3", 1_648_877),
    "test_labels": Published("md5", "ec29112dd5afa0611ce80d1b7f02629c", 4_542),
}
MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    class_names=DIGIT_NAMES,
    files=MNIST_FILES,
    downloads=tuple(
        idx_file(MNIST_FILES[key], size_bytes, sha256, _MNIST_PUBLISHED[key])
        for key, (sha256, size_bytes) in _MNIST_CONTENT.items()
    ),
    # yann.lecun.com last, since its domain lapsed in 2026.
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://raw.githubusercontent.com/fgnt/mnist/master/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    counts=(60_000, 10_000),
    summary="handwritten digits",
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    files=MNIST_FILES,
    downloads=_four_files(
        MNIST_FILES,
        (60_000, 10_000),
        # The content's SHA-256, of Debian's dataset-fashion-mnist (the official files, recompressed).
        sha256={
            "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        # The official .gz files (tensorflow_datasets' checksums; Keras has the same).
        published={
            "train_images": Published(
                "sha256", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26_421_880
            ),
            "train_labels": Published(
                "sha256", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29_515
            ),
            "test_images": Published(
                "sha256", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4_422_102
            ),
            "test_labels": Published(
                "sha256", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5_148
            ),
        },
    ),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ),
    counts=(60_000, 10_000),
    summary="Zalando's product photos, in 10 kinds of clothing",
    image_style="fashion-mnist",
)

KMNIST = DatasetSpec(
    name="kmnist",
    title="Kuzushiji-MNIST",
    class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    files=MNIST_FILES,
    downloads=_four_files(
        MNIST_FILES,
        (60_000, 10_000),
        published={
            "train_images": Published(
                "sha256", "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4", 18_165_135
            ),
            "train_labels": Published(
                "sha256", "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17", 29_497
            ),
            "test_images": Published(
                "sha256", "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5", 3_041_136
            ),
            "test_labels": Published(
                "sha256", "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c", 5_120
            ),
        },
    ),
    mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    counts=(60_000, 10_000),
    summary="cursive Japanese (Kuzushiji) hiragana, one per row of the syllabary",
    notes=("its host was reported unreachable in 2026; point a mirror at a copy",),
)

QMNIST_LABEL_COLUMNS = (
    "class",
    "hsf_series",
    "writer_id",
    "digit_index",
    "nist_class",
    "global_index",
    "duplicate",
    "unused",
)
_QMNIST_NAMES = _idx_names("qmnist-", labels_suffix="labels-idx2-int", test="test")
QMNIST = DatasetSpec(
    name="qmnist",
    title="QMNIST",
    class_names=DIGIT_NAMES,
    files=_QMNIST_NAMES,
    downloads=_four_files(
        _QMNIST_NAMES,
        (60_000, 60_000),
        label_columns=len(QMNIST_LABEL_COLUMNS),
        published={
            "train_images": Published("md5", "ed72d4157d28c017586c42bc6afe6370"),
            "train_labels": Published("md5", "0058f8dd561b90ffdd0f734c6a30e5e4"),
            "test_images": Published("md5", "1394631089c404de565df7b7aeaf9412"),
            "test_labels": Published("md5", "5b5b05890a5e13444e108efe57b788aa"),
        },
    ),
    mirrors=("https://raw.githubusercontent.com/facebookresearch/qmnist/master/",),
    counts=(60_000, 60_000),
    summary="MNIST rebuilt from NIST, with each digit's writer and origin",
    label_columns=QMNIST_LABEL_COLUMNS,
    notes=("the first 10,000 test images reconstruct MNIST's test set",),
)

EMNIST_MIRRORS = (
    "https://biometrics.nist.gov/cs_links/EMNIST/",
    "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/",
)
EMNIST_ARCHIVE = ExpectedFile(
    "gzip.zip",
    "",
    561_753_746,
    561_753_746,
    Published("sha256", "fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e", 561_753_746),
)
# bymerge and balanced merge the lower-case letters written like their capitals into them.
_EMNIST_LOWER_KEPT = "".join(sorted(set(string.ascii_lowercase) - set("cijklmopsuvwxyz")))
_EMNIST_SPLITS = {
    # split: (class names, training images, test images)
    "byclass": (tuple(string.digits + string.ascii_uppercase + string.ascii_lowercase), 697_932, 116_323),
    "bymerge": (
        tuple(string.digits + string.ascii_uppercase + _EMNIST_LOWER_KEPT),
        697_932,
        116_323,
    ),
    "letters": (tuple(string.ascii_lowercase), 88_800, 14_800),
    "digits": (DIGIT_NAMES, 240_000, 40_000),
    "mnist": (DIGIT_NAMES, 60_000, 10_000),
}
_EMNIST_SPLITS["balanced"] = (_EMNIST_SPLITS["bymerge"][0], 112_800, 18_800)
_EMNIST_SUMMARIES = {
    "byclass": "NIST's digits and letters, upper and lower case apart",
    "bymerge": "digits and letters, the 15 lower-case letters that look like upper case merged",
    "balanced": "bymerge's classes with the same number of images each",
    "letters": "letters, upper and lower case together",
    "digits": "NIST's digits",
    "mnist": "digits in MNIST's proportions",
}


def _emnist(split: str) -> DatasetSpec:
    class_names, train_count, test_count = _EMNIST_SPLITS[split]
    return DatasetSpec(
        name=f"emnist-{split}",
        title=f"EMNIST {split}",
        class_names=class_names,
        files=_idx_names(f"emnist-{split}-", test="test"),
        downloads=(EMNIST_ARCHIVE,),
        mirrors=EMNIST_MIRRORS,
        counts=(train_count, test_count),
        summary=_EMNIST_SUMMARIES[split],
        image_style="emnist",
        cache_folder="emnist",
        archive_prefix="gzip",
        label_offset=1 if split == "letters" else 0,
        transposed=True,
        notes=("one 562 MB zip holds every split; it is downloaded once",),
    )


DATASETS: dict[str, DatasetSpec] = {
    dataset.name: dataset
    for dataset in (
        MNIST,
        FASHION_MNIST,
        KMNIST,
        *(_emnist(split) for split in ("byclass", "bymerge", "balanced", "letters", "digits", "mnist")),
        QMNIST,
    )
}
DATASET_NAMES = tuple(DATASETS)


def dataset_option(name: str) -> str:
    """The `--dataset NAME` a command needs for this dataset, as the commands' hints write it:
    nothing for MNIST, the default."""
    return "" if name == DEFAULT_DATASET else f" --dataset {name}"


def fetch_call(name: str, out: str | Path, force: bool = False) -> str:
    """What puts this dataset's verified files in `out`, as its caller runs things: the
    command in a shell, `mnistkit.download(...)` from Python."""
    if on_command_line():
        return f"mnistkit fetch{dataset_option(name)}{' --force' if force else ''} --out {out}"
    dataset = "" if name == DEFAULT_DATASET else f", dataset={name!r}"
    return f"mnistkit.download({str(out)!r}{dataset}{', force=True' if force else ''})"


def dataset_spec(name: str, given_as: str = "dataset") -> DatasetSpec:
    """The dataset called `name`; the error names the setting it was `given_as` and lists the
    names there are."""
    try:
        return DATASETS[name]
    except KeyError:
        raise MnistkitError(f"{setting(given_as)}: {name!r} is not one of {', '.join(DATASETS)}") from None


@functools.cache
def _published_contents() -> dict[str, tuple[tuple[str, str], ...]]:
    contents: dict[str, tuple[tuple[str, str], ...]] = {}
    for spec in DATASETS.values():
        for entry in spec.downloads:
            if entry.sha256:
                contents[entry.sha256] = (*contents.get(entry.sha256, ()), (spec.name, entry.name))
    return contents


def known_content(sha256: str) -> tuple[tuple[str, str], ...]:
    """Each (dataset, file name) whose published decompressed content has this SHA-256."""
    return _published_contents().get(sha256, ())
