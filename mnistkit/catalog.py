"""What `mnistkit datasets` prints: the datasets as a table, one in detail, or all as JSON.

Pure Python, from the registry in `datasets.py`, so the listing is instant.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

from mnistkit.datasets import DATASETS, IMAGE_STYLES, DatasetSpec


def _size_text(size_bytes: int | None) -> str:
    return "unknown" if size_bytes is None else f"{size_bytes / 1e6:.1f} MB"


def _host(spec: DatasetSpec) -> str:
    return urlsplit(spec.mirrors[0]).netloc


def datasets_table() -> str:
    """One line per dataset: name, classes, images, what a first fetch downloads, host."""
    rows = [("name", "classes", "train", "test", "download", "host")]
    for spec in DATASETS.values():
        size = _size_text(spec.download_bytes) + (" (all EMNIST)" if spec.archive else "")
        rows.append(
            (
                spec.name,
                str(len(spec.class_names)),
                f"{spec.counts[0]:,}",
                f"{spec.counts[1]:,}",
                size,
                _host(spec),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    right = {1, 2, 3, 4}
    lines = [
        "  ".join(
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def dataset_details(spec: DatasetSpec) -> str:
    """What mnistkit knows of one dataset, for a person."""
    names = ", ".join(
        f"{label} {name}" if name != str(label) else name for label, name in enumerate(spec.class_names)
    )
    lines = [
        f"{spec.title} ({spec.name}): {spec.summary}",
        f"classes     {len(spec.class_names)}: {names}",
        f"images      {spec.counts[0]:,} training, {spec.counts[1]:,} test, 28x28 grayscale",
        f"files       {', '.join(spec.files.values())}",
    ]
    if spec.archive:
        lines.append(
            f"archive     {spec.archive.name}, {_size_text(spec.download_bytes)}, in the cache folder "
            f"{spec.cache_folder}/; every split is extracted from it"
        )
    else:
        lines.append(f"download    {_size_text(spec.download_bytes)}")
    if all(entry.sha256 for entry in spec.downloads):
        verified = "the SHA-256 of each file's content (any recompression passes)"
    else:
        algorithm = spec.downloads[0].published.algorithm_name
        verified = f"the official file's {algorithm} (only the official bytes pass)"
    lines.append(f"verified by {verified}")
    for entry in spec.downloads:
        sums = [f"content SHA-256 {entry.sha256}"] if entry.sha256 else []
        if entry.published:
            sums.append(f"official {entry.published.algorithm_name} {entry.published.digest}")
        lines.append(f"checksum    {entry.name}: {', '.join(sums)}")
    lines += [f"mirror      {mirror}" for mirror in spec.mirrors]
    lines.append(
        f"predict     prepares an image as its images were made: {IMAGE_STYLES[spec.image_style].summary}"
    )
    lines += [f"note        {note}" for note in spec.notes]
    return "\n".join(lines) + "\n"


def dataset_facts(spec: DatasetSpec) -> dict[str, Any]:
    """Everything the registry holds of one dataset, as JSON-ready values."""
    return {
        "name": spec.name,
        "title": spec.title,
        "summary": spec.summary,
        "class_names": list(spec.class_names),
        "train_images": spec.counts[0],
        "test_images": spec.counts[1],
        "files": dict(spec.files),
        "downloads": [
            {**dataclasses.asdict(entry), "sha256": entry.sha256 or None} for entry in spec.downloads
        ],
        "download_bytes": spec.download_bytes,
        "archive": spec.archive.name if spec.archive else None,
        "mirrors": list(spec.mirrors),
        "preprocessing": spec.image_style,
        "label_columns": list(spec.label_columns),
        "notes": list(spec.notes),
    }
