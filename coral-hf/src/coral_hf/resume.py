"""Materialise a Coral checkpoint commit as an HF Trainer checkpoint folder, for exact resume.

``trainer.train(resume_from_checkpoint=resume_from_coral(repo))`` lets the Trainer restore everything the
way it restores its own checkpoints: weights, optimizer, scheduler, RNG and (from ``trainer_state.json``'s
``global_step``) the data position. The ``.pt``/``.pth`` files are written here from plain tensors, tuples
and dicts, and the Trainer reads them back with ``torch.load(weights_only=True)``; Coral itself never unpickles.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from coral import Repository
from coral.errors import CheckpointError, InvalidArgumentError
from coral.interchange import save_file
from coral.store import atomic_write
from coral.training.manager import load_checkpoint_commit
from coral_torch.convert import numpy_to_tensor

from .folder import WEIGHTS_NAME, write_config

log = logging.getLogger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
_temp_dirs: list[str] = []


@atexit.register
def _remove_temp_dirs() -> None:
    for d in _temp_dirs:
        shutil.rmtree(d, ignore_errors=True)


def _to_torch(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return numpy_to_tensor(value)
    if isinstance(value, dict):
        return {k: _to_torch(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_torch(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_torch(v) for v in value)
    return value


def hf_rng_state(random_state: dict[str, Any], distributed: bool) -> dict[str, Any]:
    """Coral's captured generators (python, numpy, torch, torch_cuda) in the layout of the Trainer's
    ``rng_state.pth``."""
    out: dict[str, Any] = {}
    py = random_state.get("python")
    if py is not None:
        out["python"] = (int(py["version"]), tuple(int(x) for x in np.asarray(py["state"])), py["gauss"])
    npy = random_state.get("numpy")
    if npy is not None:
        out["numpy"] = (
            str(npy["kind"]),
            np.asarray(npy["keys"], dtype=np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached"]),
        )
    if random_state.get("torch") is not None:
        out["cpu"] = numpy_to_tensor(np.asarray(random_state["torch"], dtype=np.uint8))
    cuda = random_state.get("torch_cuda")
    if cuda:
        states = [numpy_to_tensor(np.asarray(s, dtype=np.uint8)) for s in cuda]
        out["cuda"] = states if distributed else states[0]
    return out


def resume_from_coral(
    repo: Repository | str | os.PathLike[str],
    commit_ref: str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Write the checkpoint ``commit_ref`` (default: HEAD) as a Trainer checkpoint folder; returns its path.

    Pass the result to ``trainer.train(resume_from_checkpoint=...)``. Without ``output_dir`` a temporary
    folder is used, written without fsync (a throwaway copy of the commit) and removed when the process
    exits; an ``output_dir`` is written durably.
    """
    repository = repo if isinstance(repo, Repository) else Repository(repo)
    ref = commit_ref if commit_ref is not None else "HEAD"
    commit_hash = repository.resolve(ref)
    commit = repository.get_commit(commit_hash)
    hf = commit.metadata.get("hf") or {}
    trainer_state = hf.get("trainer_state")
    if not isinstance(trainer_state, dict):
        raise CheckpointError(
            f"commit {commit_hash[:12]} ({ref}) was not saved by CoralTrainerCallback: "
            "it has no HF trainer state to resume from"
        )
    ckpt = load_checkpoint_commit(repository, commit_hash)
    state = ckpt["state"]
    if output_dir is None:
        folder = tempfile.mkdtemp(prefix=f"coral-resume-{commit_hash[:12]}-")
        _temp_dirs.append(folder)
    else:
        folder = os.fspath(output_dir)
        if Path(folder).exists() and any(Path(folder).iterdir()):
            raise InvalidArgumentError("output_dir", folder, "must be empty or absent")
        Path(folder).mkdir(parents=True, exist_ok=True)
    target = Path(folder)
    # a temp folder is a throwaway copy of a durable commit (removed at exit): no fsync. A folder the caller
    # named may be kept, so it is written durably
    durable = output_dir is not None
    save_file({n: w.data for n, w in ckpt["weights"].items()}, target / WEIGHTS_NAME, {"format": "pt"},
              fsync=durable)
    if isinstance(hf.get("model_config"), dict):
        write_config(target, hf["model_config"], fsync=durable)
    atomic_write(target / TRAINER_STATE_NAME, json.dumps(trainer_state, indent=2, sort_keys=True) + "\n",
                 fsync=durable)
    if state.optimizer_state is not None:
        torch.save(_to_torch(state.optimizer_state), target / OPTIMIZER_NAME)
    if state.scheduler_state is not None:
        torch.save(_to_torch(state.scheduler_state), target / SCHEDULER_NAME)
    if state.random_state:
        torch.save(hf_rng_state(state.random_state, distributed=False), target / "rng_state.pth")
        if int(hf.get("world_size") or 1) > 1:
            # a run in several processes reads rng_state_{rank}.pth; only rank 0's generators were recorded
            torch.save(hf_rng_state(state.random_state, distributed=True), target / "rng_state_0.pth")
    log.info("checkpoint %s written to %s for resume", commit_hash[:12], folder)
    return folder
