"""CoralCallback's parameters: every bad value fails at construction with a CoralError naming it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from coral import Repository
from coral.errors import (
    ConfigError,
    CoralError,
    InvalidArgumentError,
    InvalidNameError,
    RepositoryNotFoundError,
    UnknownRemoteError,
)
from coral_lightning import CoralCallback, CoralCheckpointIO, CoralLightningCallback, RemotesUnavailableError


def test_import_paths_and_alias() -> None:
    from coral.integrations import lightning as shim

    assert shim.CoralCallback is CoralCallback
    assert shim.CoralLightningCallback is CoralCallback
    assert CoralLightningCallback is CoralCallback
    assert shim.CoralCheckpointIO is CoralCheckpointIO


def test_repo_path_with_init_creates_the_repository(tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True)
    assert (tmp_path / "r" / ".coral").is_dir()
    assert cb.branch == "main" and cb.experiment_name == "main"
    assert cb.save_every_n_epochs == 1  # nothing chosen: every epoch


def test_repo_path_without_init_must_exist(tmp_path) -> None:
    with pytest.raises(RepositoryNotFoundError):
        CoralCallback(repo_path=tmp_path / "missing")


def test_exactly_one_of_repo_and_repo_path(tmp_path) -> None:
    repo = Repository(tmp_path / "r", init=True)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        CoralCallback()
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        CoralCallback(repo=repo, repo_path=tmp_path / "r")
    with pytest.raises(InvalidArgumentError, match="Repository"):
        CoralCallback(repo=str(tmp_path / "r"))  # type: ignore[arg-type]


def test_push_to_an_unknown_remote_fails_at_construction(tmp_path) -> None:
    with pytest.raises(UnknownRemoteError, match="remote='origin'") as info:
        CoralCallback(repo_path=tmp_path / "r", init=True, push_to="origin")
    assert isinstance(info.value, CoralError)
    assert issubclass(RemotesUnavailableError, CoralError)  # still importable for old code


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"save_every_n_epochs": 0}, "save_every_n_epochs"),
        ({"save_every_n_epochs": True}, "save_every_n_epochs"),
        ({"save_every_n_steps": -3}, "save_every_n_steps"),
        ({"save_every_n_steps": 2.5}, "save_every_n_steps"),
        ({"save_on_best": ""}, "save_on_best"),
        ({"mode": "minimum"}, "mode"),
        ({"include_optimizer": "yes"}, "include_optimizer"),
        ({"metadata_keys": "max_epochs"}, "metadata_keys"),
        ({"metadata_keys": ["metrics"]}, "metadata_keys"),
        ({"metadata_keys": ["hparams"]}, "metadata_keys"),
        ({"metadata_keys": [3]}, "metadata_keys"),
        ({"init": "true"}, "init"),
    ],
)
def test_bad_values_name_the_parameter(tmp_path, kwargs, name) -> None:
    kwargs.setdefault("init", True)
    with pytest.raises(InvalidArgumentError) as info:
        CoralCallback(repo_path=tmp_path / "r", **kwargs)
    assert info.value.parameter == name


def test_retention_options_are_validated_by_checkpoint_config(tmp_path) -> None:
    with pytest.raises(ConfigError, match="keep_last_n_checkpoints"):
        CoralCallback(repo_path=tmp_path / "r", init=True, keep_last_n_checkpoints=0)
    # without save_on_best, keep_best_n_checkpoints ranks by the logged "loss"
    assert CoralCallback(repo_path=tmp_path / "r", init=True, keep_best_n_checkpoints=2).manager.policy.ranking_metric == "loss"
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, save_on_best="val_loss", keep_best_n_checkpoints=2,
                       keep_last_n_checkpoints=1, keep_checkpoint_every_n_epochs=5)
    assert cb.manager.config.keep_best_n_checkpoints == 2
    assert cb.save_every_n_epochs is None  # save_on_best alone: only improvements are saved


def test_branch_names_are_validated_and_detached_head_needs_one(tmp_path) -> None:
    with pytest.raises(InvalidNameError):
        CoralCallback(repo_path=tmp_path / "r", init=True, branch="../escape")
    repo = Repository(tmp_path / "d", init=True)
    repo.stage_weights({"w": np.zeros(3, np.float32)})
    first = repo.commit("first")
    repo.switch(first)  # detached HEAD
    with pytest.raises(InvalidArgumentError, match="detached"):
        CoralCallback(repo=repo)
    assert CoralCallback(repo=repo, branch="exp/one").experiment_name == "exp-one"


def test_callback_pickles_for_ddp_spawn_and_reopens_its_repository(tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="exp", save_on_best="val_loss", mode="max")
    _ = cb.manager
    clone = pickle.loads(pickle.dumps(cb))
    assert clone.repo.path == cb.repo.path and clone.repo is not cb.repo
    assert (clone.branch, clone.mode, clone.save_on_best) == ("exp", "max", "val_loss")


def test_falls_back_to_the_unified_lightning_package() -> None:
    # `lightning` is not installed here: stand it in with pytorch_lightning's own modules, then hide the latter
    code = """
import sys, types
import pytorch_lightning, lightning_fabric.plugins.io as fabric_io
pkg = types.ModuleType("lightning"); pkg.__path__ = []; pkg.pytorch = pytorch_lightning
sys.modules.update({"lightning": pkg, "lightning.pytorch": pytorch_lightning,
                    "lightning.fabric": types.ModuleType("lightning.fabric"),
                    "lightning.fabric.plugins": types.ModuleType("lightning.fabric.plugins"),
                    "lightning.fabric.plugins.io": fabric_io})
sys.modules["pytorch_lightning"] = None  # `import pytorch_lightning` now raises ImportError
try:
    import pytorch_lightning as hidden
    raise SystemExit("pytorch_lightning is still importable")
except ImportError:
    pass
from coral_lightning import _compat
assert _compat.pl is pytorch_lightning and _compat.CheckpointIO is fabric_io.CheckpointIO
print("fallback ok")
"""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "fallback ok" in proc.stdout, proc.stderr[-2000:]
