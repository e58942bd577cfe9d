"""coral-hf: Coral for HuggingFace transformers (also importable as ``coral.integrations.hf_trainer``).

Names load lazily, so the ``coral export/import`` hooks for HF folders never import torch or transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .callback import CoralHFCallback, CoralTrainerCallback, RemotesUnavailableError
    from .folder import ImportedWeights, export_hf_folder, open_hf_folder, read_hf_folder
    from .resume import resume_from_coral

_WHERE = {
    "CoralTrainerCallback": "callback",
    "CoralHFCallback": "callback",
    "RemotesUnavailableError": "errors",
    "resume_from_coral": "resume",
    "export_hf_folder": "folder",
    "read_hf_folder": "folder",
    "open_hf_folder": "folder",
    "ImportedWeights": "folder",
}
__all__ = [
    "CoralHFCallback",
    "CoralTrainerCallback",
    "ImportedWeights",
    "RemotesUnavailableError",
    "export_hf_folder",
    "open_hf_folder",
    "read_hf_folder",
    "resume_from_coral",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        where = _WHERE[name]
        module = import_module("coral.errors") if where == "errors" else import_module(f".{where}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'coral_hf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
