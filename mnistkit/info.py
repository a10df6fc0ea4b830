"""What a checkpoint holds, for `mnistkit info`: read from its metadata, numpy only."""

from __future__ import annotations

import json
import os
from typing import Any

from mnistkit.checkpoint import load_checkpoint, stopped_after
from mnistkit.config import settings_that_apply
from mnistkit.inputs import json_path


def checkpoint_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Architecture, parameter count, normalization, dataset and classes (labels and names),
    how predict prepares images for it, training config and metrics."""
    checkpoint = load_checkpoint(path)
    metadata = checkpoint.metadata
    return {
        **json_path("checkpoint", os.fsdecode(path)),
        "format_version": metadata.get("format_version"),
        "mnistkit_version": metadata.get("mnistkit_version"),
        "architecture": checkpoint.architecture,
        "parameters": sum(int(tensor.size) for tensor in checkpoint.params.values()),
        "tensors": {name: list(tensor.shape) for name, tensor in sorted(checkpoint.params.items())},
        "normalization": checkpoint.normalization,
        "dataset": checkpoint.dataset,
        "classes": checkpoint.classes,
        "class_names": checkpoint.class_names,
        "preprocessing": checkpoint.preprocessing,
        "config": metadata.get("config"),
        "metrics": metadata.get("metrics"),
        "finished": checkpoint.finished,
        "data_sha256": metadata.get("data_sha256"),
        "has_optimizer_state": bool(checkpoint.optimizer_state),
    }


def _rounded(name: str, value: Any) -> Any:
    """Accuracies as percentages with two decimals, other floats to four significant digits."""
    if isinstance(value, float):
        return f"{100 * value:.2f}%" if name.endswith("accuracy") else float(f"{value:.4g}")
    if isinstance(value, dict):
        return {key: _rounded(key, item) for key, item in value.items() if item not in (None, "", [], {})}
    if isinstance(value, list):
        return [_rounded(name, item) for item in value]
    return value


def format_info(info: dict[str, Any]) -> str:
    """`key  value` lines, rounded, leaving out what is empty and the settings that did not
    apply to the model; nested values as compact JSON."""
    lines = []
    for key, value in info.items():
        if key == "config" and isinstance(value, dict):
            architecture = info.get("architecture")
            model = architecture.get("model") if isinstance(architecture, dict) else None
            value = settings_that_apply(value, model)
        if value in (None, "", [], {}):
            continue
        if key == "finished":
            value = (
                "yes"
                if value
                else f"no: {stopped_after(info['metrics']['epochs'], info['config']['epochs'])}"
            )
        if key == "tensors":
            lines.append("tensors")
            lines += [f"  {name:<24} {'x'.join(map(str, shape))}" for name, shape in value.items()]
        elif key in ("config", "metrics") and isinstance(value, dict):
            lines.append(key)
            for name, item in _rounded(key, value).items():
                text = item if isinstance(item, str) else json.dumps(item)
                lines.append(f"  {name:<24} {text}")
        else:
            lines.append(f"{key:<22} {value if isinstance(value, str) else json.dumps(_rounded(key, value))}")
    return "\n".join(lines) + "\n"
