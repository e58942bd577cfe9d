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


TRAINING_ARGS_HPARAMS = (
    "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
    "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_steps",
    "warmup_steps", "warmup_ratio", "lr_scheduler_type", "optim", "seed", "bf16", "fp16",
)


@hookimpl
def coral_environment() -> Any:
    """transformers' version (and accelerate's, when installed), read from the installed metadata."""
    from coral.training.provenance import package_version

    return {"versions": {"transformers": package_version("transformers"), "accelerate": package_version("accelerate")}}


@hookimpl
def coral_find_hparams(source: Any) -> Any:
    """The training hyperparameters of a ``TrainingArguments`` (lr, betas, batch size, schedule, seed...)."""
    if "TrainingArguments" not in {cls.__name__ for cls in type(source).__mro__}:
        return None
    from coral.training.provenance import json_safe

    values = source.to_dict()
    return {k: json_safe(values[k]) for k in TRAINING_ARGS_HPARAMS if k in values}
