"""What a checkpoint holds, for `mnistkit info`: read from its metadata, numpy only."""

from __future__ import annotations

import json
import os
from typing import Any

from mnistkit.checkpoint import load_checkpoint


def checkpoint_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Architecture, parameter count, normalization, classes, training config and metrics."""
    checkpoint = load_checkpoint(path)
    metadata = checkpoint.metadata
    return {
        "checkpoint": str(path),
        "format_version": metadata.get("format_version"),
        "mnistkit_version": metadata.get("mnistkit_version"),
        "architecture": checkpoint.architecture,
        "parameters": sum(int(tensor.size) for tensor in checkpoint.params.values()),
        "tensors": {name: list(tensor.shape) for name, tensor in sorted(checkpoint.params.items())},
        "normalization": checkpoint.normalization,
        "classes": checkpoint.classes,
        "config": metadata.get("config"),
        "metrics": metadata.get("metrics"),
        "data_sha256": metadata.get("data_sha256"),
        "has_optimizer_state": bool(checkpoint.optimizer_state),
    }


def format_info(info: dict[str, Any]) -> str:
    """`key  value` lines; nested values as compact JSON so each stays on one line."""
    lines = []
    for key, value in info.items():
        if key == "tensors":
            lines.append("tensors")
            lines += [f"  {name:<20} {'x'.join(map(str, shape))}" for name, shape in value.items()]
        elif key in ("config", "metrics") and isinstance(value, dict):
            lines.append(key)
            lines += [f"  {name:<20} {json.dumps(item)}" for name, item in value.items()]
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            lines.append(f"{key:<22} {text}")
    return "\n".join(lines) + "\n"
