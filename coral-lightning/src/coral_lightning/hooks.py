"""coral-lightning's hook implementations, registered through the ``coral`` entry point."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coral.hookspecs import hookimpl
from coral.training.provenance import package_version


@hookimpl
def coral_environment() -> Any:
    """Lightning's version (whichever of ``lightning`` / ``pytorch-lightning`` is installed)."""
    return {"versions": {"lightning": package_version("lightning"),
                         "pytorch_lightning": package_version("pytorch-lightning")}}


@hookimpl
def coral_find_hparams(source: Any) -> Any:
    """A LightningModule's or LightningDataModule's ``hparams`` (what ``save_hyperparameters()`` recorded)."""
    names = {cls.__name__ for cls in type(source).__mro__}
    if not names & {"LightningModule", "LightningDataModule"}:
        return None
    hparams = getattr(source, "hparams", None)
    return dict(hparams) if isinstance(hparams, Mapping) else {}
