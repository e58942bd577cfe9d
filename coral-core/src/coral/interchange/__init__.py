"""Weights interchange: export a commit to ``.safetensors`` (or a plugin's format) and import files as commits."""

from .safetensors_io import SafetensorsReader, TensorInfo, TensorSpec, load_file, save_file, write_file
from .transfer import (
    ExportReport,
    LazyArrays,
    WeightsFile,
    export_commit,
    export_commit_report,
    import_file,
    open_weights_file,
)

__all__ = [
    "ExportReport",
    "LazyArrays",
    "SafetensorsReader",
    "TensorInfo",
    "TensorSpec",
    "WeightsFile",
    "export_commit",
    "export_commit_report",
    "import_file",
    "load_file",
    "open_weights_file",
    "save_file",
    "write_file",
]
