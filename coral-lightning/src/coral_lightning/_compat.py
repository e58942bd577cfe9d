"""The Lightning flavour in use: ``pytorch_lightning`` when installed, else the unified ``lightning.pytorch``."""

from __future__ import annotations

try:
    import pytorch_lightning as pl
    from pytorch_lightning.plugins.io import CheckpointIO
except ImportError:  # pragma: no cover - exercised only where only the unified package is installed
    try:
        import lightning.pytorch as pl  # type: ignore[no-redef]
        from lightning.fabric.plugins.io import CheckpointIO  # type: ignore[no-redef,assignment]
    except ImportError as exc:
        raise ImportError(
            "coral-lightning needs PyTorch Lightning: pip install pytorch-lightning (or pip install lightning)"
        ) from exc

Callback = pl.Callback
Checkpoint = pl.callbacks.Checkpoint
LIGHTNING_PACKAGE = pl.__name__
LIGHTNING_VERSION = pl.__version__

__all__ = ["LIGHTNING_PACKAGE", "LIGHTNING_VERSION", "Callback", "Checkpoint", "CheckpointIO", "pl"]
