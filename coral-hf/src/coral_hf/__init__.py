"""coral-hf: Coral for HuggingFace transformers (also importable as ``coral.integrations.hf_trainer``).

Names load lazily, so the ``coral export/import`` hooks for HF folders never import torch or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coral.lazy import lazy_exports

if TYPE_CHECKING:
    from .callback import CoralHFCallback, CoralTrainerCallback, RemotesUnavailableError
    from .folder import ImportedWeights, export_hf_folder, open_hf_folder, read_hf_folder
    from .resume import resume_from_coral

_WHERE = {
    "CoralTrainerCallback": "callback",
    "CoralHFCallback": "callback",
    "RemotesUnavailableError": "coral.errors",
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


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
