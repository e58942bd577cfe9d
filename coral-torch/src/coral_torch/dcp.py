"""torch.distributed.checkpoint (DCP) storage backed by a Coral repository: N ranks' shards in ONE commit.

``dcp.save(state, storage_writer=CoralWriter(repo))`` on every rank: each rank writes its own shards as
Coral chunks (deduplicated, delta-packable like any tensor) in parallel; when every rank's chunks are
durable, rank 0 writes one commit whose metadata holds DCP's planner metadata as JSON.
``dcp.load(state, storage_reader=CoralReader(repo, ref))`` reads it back on any number of ranks (DCP's
planner reshards). Nothing is unpickled: the ``Metadata`` object is rebuilt from the commit's JSON.

Tree names: a whole tensor is stored under its state-dict path joined by ``/`` (``{"model": sd}`` gives
``model/<fqn>``; top-level tensors keep their own name); a shard adds ``@<offsets>`` (``w@4,0``).
"""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from coral import Repository
from coral.errors import CheckpointError, InvalidArgumentError
from coral.objects.tensors import TensorEntry
from coral.training import TrainingState
from coral.version_control.jsonsafe import from_jsonable, to_jsonable
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    SavePlan,
    SavePlanner,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from . import distributed as _dist
from .convert import numpy_to_tensor, tensor_to_numpy, torch_dtype, torch_dtype_name

log = logging.getLogger(__name__)

#: The commit-metadata key holding DCP's metadata as JSON.
METADATA_KEY = "dcp"
FORMAT_VERSION = 1


def _open(repo: Repository | str | os.PathLike[str]) -> Repository:
    """A private handle on the same store: this writer's staged chunks never mix with the caller's."""
    if isinstance(repo, Repository):
        return Repository(repo.path) if repo.path is not None else repo
    return Repository(repo, init=True)


def _tree_name(item_fqn: str, offsets: Any, whole: bool, mappings: Mapping[str, Any] | None) -> str:
    path = mappings.get(item_fqn) if mappings else None
    base = "/".join(str(p) for p in path) if path else item_fqn
    return base if whole else f"{base}@{','.join(str(int(o)) for o in offsets)}"


class CoralWriter(StorageWriter):
    """A DCP ``StorageWriter`` that commits every rank's shards to ``repo`` as one commit on ``branch``.

    ``branch`` defaults to the current one (created from HEAD when missing); ``message`` and ``metadata``
    go to the commit. After ``dcp.save`` returns, ``commit_hash`` is the new commit on rank 0 (the
    coordinator); ``coral_torch.dcp.save_training_checkpoint`` broadcasts it to every rank.
    """

    def __init__(
        self,
        repo: Repository | str | os.PathLike[str],
        branch: str | None = None,
        *,
        message: str = "DCP checkpoint",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(repo, (Repository, str, os.PathLike)):
            raise InvalidArgumentError("repo", type(repo).__name__, "expected a coral Repository or a folder path")
        if branch is not None and not isinstance(branch, str):
            raise InvalidArgumentError("branch", branch, "must be a branch name or None")
        if not isinstance(message, str):
            raise InvalidArgumentError("message", message, "must be a string")
        self._target = repo
        self.branch = branch
        self.message = message
        self.metadata = dict(metadata or {})
        self.commit_hash: str | None = None
        self._repo: Repository | None = None
        self._coordinator = False

    # ---- the StorageWriter protocol ---------------------------------------------------------------------
    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        self.close()
        self.commit_hash = None

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self._coordinator = is_coordinator
        if self._repo is None:
            self._repo = _open(self._target)

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        return plans

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        """Stage this rank's tensors (chunks durable on return); small objects travel to rank 0 as JSON."""
        repo = self._repo if self._repo is not None else _open(self._target)
        self._repo = repo
        mappings = getattr(planner, "mappings", None)
        arrays: dict[str, Any] = {}
        results: list[tuple[WriteItem, str | None, Any]] = []
        for item in plan.items:
            if item.type == WriteItemType.BYTE_IO:
                lookup = getattr(planner, "lookup_object", None)
                if lookup is None:
                    raise CheckpointError(f"{type(planner).__name__} cannot hand over {item.index.fqn!r} unpickled")
                value = to_jsonable(lookup(item.index), path=item.index.fqn)
                results.append((item, None, value))
                continue
            tensor = planner.resolve_data(item)
            assert isinstance(tensor, torch.Tensor) and item.tensor_data is not None
            chunk = item.tensor_data.chunk
            whole = all(o == 0 for o in chunk.offsets) and tuple(chunk.sizes) == tuple(item.tensor_data.size)
            name = _tree_name(item.index.fqn, chunk.offsets, whole, mappings)
            arrays[name] = tensor_to_numpy(tensor.detach())
            results.append((item, name, None))
        entries: dict[str, Any] = {}
        if arrays:
            repo.stage_weights(arrays)  # deduplicated against every earlier chunk; durable when it returns
            staged = repo.staged
            entries = {n: staged[n].to_json() for n in arrays}
        out = []
        for item, name, value in results:
            if name is None:
                out.append(WriteResult(index=item.index, size_in_bytes=0, storage_data={"json": value}))
            else:
                nbytes = arrays[name].nbytes
                data = {"name": name, "entry": entries[name]}
                out.append(WriteResult(index=item.index, size_in_bytes=nbytes, storage_data=data))
        fut: Future[list[WriteResult]] = Future()
        fut.set_result(out)
        return fut

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """Rank 0, after every rank's chunks are durable: one commit holding every shard and the metadata."""
        repo = self._repo if self._repo is not None else _open(self._target)
        tree: dict[str, Any] = {}
        names: dict[MetadataIndex, str] = {}
        small: dict[str, Any] = {}
        for rank_results in results:
            for wr in rank_results:
                data = wr.storage_data
                if "json" in data:
                    small[wr.index.fqn] = data["json"]
                else:
                    tree[data["name"]] = data["entry"]
                    names[wr.index] = data["name"]
        layout = metadata_to_json(metadata, names)
        layout["bytes"] = small
        if self.branch is not None and self.branch != repo.current_branch:
            if self.branch not in repo.list_branches():
                repo.create_branch(self.branch)
            repo.switch(self.branch)
        meta = dict(self.metadata)
        meta[METADATA_KEY] = layout
        entries = {name: TensorEntry.from_json(name, entry) for name, entry in tree.items()}
        self.commit_hash = repo.commit_tree(entries, self.message, meta)
        log.info("DCP checkpoint %s: %d shards from %d ranks", self.commit_hash[:12], len(tree), len(results))

    def storage_meta(self) -> StorageMeta | None:
        return StorageMeta()

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return False  # never picked automatically: pass storage_writer=CoralWriter(...)

    def close(self) -> None:
        """Release this writer's hold on its staged chunks (after the commit; also on failure)."""
        if self._repo is not None and self._repo is not self._target:
            self._repo.close()
        self._repo = None


class CoralReader(StorageReader):
    """A DCP ``StorageReader`` for a commit written by :class:`CoralWriter` (``ref``: hash, branch or tag)."""

    def __init__(self, repo: Repository | str | os.PathLike[str], ref: str | None = None) -> None:
        self.repo = repo if isinstance(repo, Repository) else Repository(repo)
        self.commit_hash = self.repo.resolve(ref)
        self._names: dict[MetadataIndex, str] = {}
        self._bytes: dict[str, Any] = {}

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        pass

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        commit = self.repo.get_commit(self.commit_hash)
        layout = commit.metadata.get(METADATA_KEY)
        if not isinstance(layout, dict) or "tensors" not in layout:
            raise CheckpointError(
                f"commit {self.commit_hash[:12]} is not a DCP checkpoint (no {METADATA_KEY!r} metadata)"
            )
        metadata, self._names = metadata_from_json(layout)
        self._bytes = dict(layout.get("bytes") or {})
        return metadata

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if not self._names:
            _meta, self._names = metadata_from_json(self.repo.get_commit(self.commit_hash).metadata[METADATA_KEY])
        if metadata.storage_data:
            self._names.update(metadata.storage_data)

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        """Read the shards this rank needs (each once, chunks in parallel, verified) and copy their overlaps."""
        wanted = sorted({self._names[r.storage_index] for r in plan.items if r.type != LoadItemType.BYTE_IO})
        arrays = self.repo.load_arrays(self.commit_hash, wanted) if wanted else {}
        for req in plan.items:
            if req.type == LoadItemType.BYTE_IO:
                buf = io.BytesIO()
                # rebuilt from JSON in this process: nothing read from the store is unpickled
                torch.save(from_jsonable(self._bytes[req.storage_index.fqn]), buf)
                buf.seek(0)
                planner.load_bytes(req, buf)
                continue
            src = numpy_to_tensor(arrays[self._names[req.storage_index]])
            for dim, (start, length) in enumerate(zip(req.storage_offsets, req.lengths, strict=True)):
                src = src.narrow(dim, start, length)
            target = planner.resolve_tensor(req).detach()
            if target.size() != src.size():
                raise CheckpointError(
                    f"shard {req.storage_index.fqn!r}: stored {tuple(src.size())} != wanted {tuple(target.size())}"
                )
            target.copy_(src)
            planner.commit_tensor(req, target)
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return False


# ---- Metadata <-> JSON (no pickle) ---------------------------------------------------------------------
def metadata_to_json(metadata: Metadata, names: Mapping[MetadataIndex, str]) -> dict[str, Any]:
    """DCP's Metadata as plain JSON: tensor sizes, dtypes, chunk layout (``names``: each chunk's tree name)
    and the planner's mappings; no pickle."""
    tensors: dict[str, Any] = {}
    for fqn, md in metadata.state_dict_metadata.items():
        if isinstance(md, TensorStorageMetadata):
            tensors[fqn] = {
                "dtype": torch_dtype_name(md.properties.dtype),
                "requires_grad": bool(md.properties.requires_grad),
                "size": [int(s) for s in md.size],
                "chunks": [],
            }
        else:
            tensors[fqn] = None  # a small object: its value is in "bytes"
    for index, name in names.items():
        if tensors.get(index.fqn) is not None:
            tensors[index.fqn]["chunks"].append({"offsets": [int(o) for o in index.offset or ()], "name": name})
    for fqn, md in metadata.state_dict_metadata.items():
        if isinstance(md, TensorStorageMetadata):
            sizes = {tuple(int(o) for o in c.offsets): [int(s) for s in c.sizes] for c in md.chunks}
            for c in tensors[fqn]["chunks"]:
                c["sizes"] = sizes.get(tuple(c["offsets"]), tensors[fqn]["size"])
    planner = metadata.planner_data
    mappings = (
        {k: list(v) for k, v in planner.items()}
        if isinstance(planner, dict) and all(isinstance(v, (tuple, list)) for v in planner.values())
        else None
    )
    return {
        "format": FORMAT_VERSION, "version": metadata.version, "tensors": tensors, "bytes": {}, "mappings": mappings,
    }


def metadata_from_json(layout: Mapping[str, Any]) -> tuple[Metadata, dict[MetadataIndex, str]]:
    """Rebuild DCP's Metadata (and each chunk's tree name) from :func:`metadata_to_json`'s JSON."""
    state: dict[str, Any] = {}
    names: dict[MetadataIndex, str] = {}
    try:
        for fqn, md in layout["tensors"].items():
            if md is None:
                state[fqn] = BytesStorageMetadata()
                continue
            chunks = []
            for c in md["chunks"]:
                offsets = torch.Size(int(o) for o in c["offsets"])
                chunks.append(ChunkStorageMetadata(offsets=offsets, sizes=torch.Size(int(s) for s in c["sizes"])))
                names[MetadataIndex(fqn, offsets)] = str(c["name"])
            props = TensorProperties(dtype=torch_dtype(md["dtype"]), requires_grad=bool(md.get("requires_grad")))
            size = torch.Size(int(s) for s in md["size"])
            state[fqn] = TensorStorageMetadata(properties=props, size=size, chunks=chunks)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"malformed DCP metadata in commit: {exc}") from None
    mappings = layout.get("mappings")
    planner_data = {k: tuple(v) for k, v in mappings.items()} if isinstance(mappings, dict) else None
    metadata = Metadata(
        state_dict_metadata=state, planner_data=planner_data, storage_data=dict(names),
        storage_meta=StorageMeta(), version=layout.get("version"),
    )
    return metadata, names


# ---- the Checkpointer(distributed="dcp") path ---------------------------------------------------------
def _split_optimizer(optim_sd: Mapping[str, Any]) -> dict[str, Any]:
    return {"optim": dict(optim_sd)} if optim_sd else {}


def save_training_checkpoint(
    repo: Repository,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: TrainingState,
    *,
    experiment: str,
    epoch_complete: bool,
    data: Any = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> str:
    """Save model + optimizer shards from every rank through DCP; returns the commit hash (same on every rank).

    ``extra_metadata`` adds JSON-safe top-level keys to the commit metadata (e.g. the ``preempted`` mark)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer if optimizer is not None else [])
    sd: dict[str, Any] = dict(model_sd)
    sd.update(_split_optimizer(optim_sd))
    info = state.copy_without_state()
    info["experiment_name"] = experiment
    skeletons = {}
    if state.scheduler_state is not None:
        skeletons["scheduler_state"] = to_jsonable(state.scheduler_state, path="scheduler_state")
    metadata = {
        "coral_checkpoint": {
            "experiment": experiment, "model_name": type(_dist.unwrap(model)).__name__, "is_best": False,
            "weights": sorted(model_sd), "training_state": info, "sharded": True,
            "data_state": _data_state_to_json(data, epoch_complete),
            "scheduler_state": skeletons.get("scheduler_state"),
        },
        "epoch": state.epoch, "global_step": state.global_step, "loss": state.loss, "metrics": dict(state.metrics),
    }
    for key, value in (extra_metadata or {}).items():
        metadata.setdefault(key, to_jsonable(value, path=f"metadata[{key!r}]"))
    writer = CoralWriter(repo, message=f"Checkpoint {experiment} epoch {state.epoch} step {state.global_step}",
                         metadata=metadata)
    try:
        dcp.save(sd, storage_writer=writer)
        commit = _dist.broadcast(writer.commit_hash)
    finally:
        writer.close()
    if commit is None:
        raise CheckpointError("DCP save ended without a commit")
    return commit


_ARRAY_TAG = "__ndarray__"


def _arrays_to_json(value: Any) -> Any:
    """Plain data state (dicts, lists, numbers, numpy arrays such as generator states) as JSON."""
    if isinstance(value, np.ndarray):
        data = base64.b64encode(np.ascontiguousarray(value).tobytes()).decode()
        return {_ARRAY_TAG: {"dtype": value.dtype.str, "shape": list(value.shape), "b64": data}}
    if isinstance(value, Mapping):
        return {str(k): _arrays_to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_arrays_to_json(v) for v in value]
    return to_jsonable(value, path="data_state")


def _arrays_from_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        if set(value) == {_ARRAY_TAG}:
            spec = value[_ARRAY_TAG]
            raw = base64.b64decode(spec["b64"])
            return np.frombuffer(raw, dtype=np.dtype(spec["dtype"])).reshape(spec["shape"]).copy()
        return {k: _arrays_from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_arrays_from_json(v) for v in value]
    return from_jsonable(value)


def _data_state_to_json(data: Any, epoch_complete: bool) -> dict[str, Any]:
    """Rank 0's data position (every rank resumes from it, as on the unsharded path); mid-epoch if it is."""
    if data is None:
        return {"epoch_complete": bool(epoch_complete)}
    from coral.training import capture_data_state

    from .data import as_data_source, is_mid_epoch

    source = capture_data_state(as_data_source(data))
    return {"epoch_complete": bool(epoch_complete) and not is_mid_epoch(data), "source": _arrays_to_json(source)}


def _data_state_from_json(saved: Any) -> dict[str, Any]:
    out = dict(saved or {})
    if out.get("source") is not None:
        out["source"] = _arrays_from_json(out["source"])
    return out


def latest_checkpoint(repo: Repository, experiment: str) -> str | None:
    """The newest sharded checkpoint commit of ``experiment`` on the current branch, or None."""
    for info in repo.log():
        meta = info.metadata.get("coral_checkpoint") or {}
        if meta.get("experiment") == experiment and meta.get("sharded") and METADATA_KEY in info.metadata:
            return info.hash
    return None


def load_training_checkpoint(
    repo: Repository, commit_hash: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None
) -> dict[str, Any]:
    """Load a sharded checkpoint into ``model``/``optimizer`` on every rank (any rank count); returns
    ``{"weights": {}, "state": TrainingState, "commit_hash"}`` for the Checkpointer's resume."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer if optimizer is not None else [])
    sd: dict[str, Any] = dict(model_sd)
    sd.update(_split_optimizer(optim_sd))
    reader = CoralReader(repo, commit_hash)
    dcp.load(sd, storage_reader=reader)
    set_state_dict(
        model, optimizer if optimizer is not None else [],
        model_state_dict={k: sd[k] for k in model_sd}, optim_state_dict=sd.get("optim", {}),
    )
    commit = repo.get_commit(reader.commit_hash)
    meta = commit.metadata.get("coral_checkpoint") or {}
    info = dict(meta.get("training_state") or {})
    known = set(TrainingState.__dataclass_fields__)
    state = TrainingState(**{k: v for k, v in info.items() if k in known})
    state.data_state = _data_state_from_json(meta.get("data_state"))
    if meta.get("scheduler_state") is not None:
        state.scheduler_state = from_jsonable(meta["scheduler_state"])
    return {"weights": {}, "state": state, "commit_hash": reader.commit_hash}


__all__ = [
    "CoralReader", "CoralWriter", "latest_checkpoint", "load_training_checkpoint", "metadata_from_json",
    "metadata_to_json", "save_training_checkpoint",
]
