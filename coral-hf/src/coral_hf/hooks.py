"""coral-hf's hook implementations, registered through the ``coral`` entry point.

Only numpy, json and core are imported here: ``coral export/import`` of HF folders never loads torch or transformers.
"""

from __future__ import annotations

from typing import Any

from coral.errors import InvalidArgumentError
from coral.hookspecs import hookimpl

from .folder import export_hf_folder, is_hf_folder, model_config_from_metadata, open_hf_folder


@hookimpl
def coral_export(weights: dict[str, Any], metadata: dict[str, Any], out: str, format: str) -> str | None:
    """``--format hf``: a folder with ``model.safetensors`` and the ``config.json`` recorded in the commit."""
    if format != "hf":
        return None
    config = model_config_from_metadata(metadata)
    if config is None:
        raise InvalidArgumentError(
            "format",
            "hf",
            "this commit records no HF model config (metadata['hf']['model_config']); save it with "
            "CoralTrainerCallback or import an HF folder first, or export with --format safetensors",
        )
    return export_hf_folder(weights, config, out)


@hookimpl
def coral_import_file(path: str) -> dict[str, Any] | None:
    """An HF folder (``config.json`` + safetensors): its tensors (read on access), ``.metadata`` holding the config."""
    if not is_hf_folder(path):
        return None
    return open_hf_folder(path)
