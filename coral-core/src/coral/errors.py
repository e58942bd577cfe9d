"""Coral's exception classes: every error a user can hit is one of these, with a message naming the value."""

from __future__ import annotations


class CoralError(Exception):
    """Base class of every error Coral raises on purpose."""


class InvalidArgumentError(CoralError, ValueError):
    """A parameter has a value Coral cannot accept; the message names the parameter and the value."""

    def __init__(self, parameter: str, value: object, reason: str) -> None:
        self.parameter = parameter
        self.value = value
        super().__init__(f"invalid {parameter}={value!r}: {reason}")


class InvalidNameError(InvalidArgumentError):
    """A branch, tag, tensor or ref name that could escape the repository or is otherwise unusable."""


class ConfigError(InvalidArgumentError):
    """A CheckpointConfig field has a bad value."""


class RepositoryNotFoundError(CoralError):
    """The path is not a Coral repository."""


class RepositoryExistsError(CoralError):
    """`init=True` on a folder that already holds a repository with a different layout."""


class RefNotFoundError(CoralError, KeyError):
    """A branch, tag, hash or `HEAD~N` expression does not name a commit."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "ref not found"


class AmbiguousRefError(CoralError):
    """A short hash prefix matches more than one commit."""


class RefExistsError(CoralError):
    """A branch, tag or release with that name already exists."""


class UnmergedBranchError(CoralError):
    """``delete_branch`` without ``force`` on a branch whose head no other branch or tag reaches (git's -d)."""


class RefConflictError(CoralError):
    """A compare-and-swap on a ref failed because another writer moved it first."""


class ObjectNotFoundError(CoralError, KeyError):
    """An object id is not in the store (deleted, never written, or pruned)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "object not found"


class CorruptObjectError(CoralError):
    """An object's bytes do not hash to its id, or cannot be decoded: the store is damaged."""

    def __init__(self, object_id: str, reason: str, tensor: str | None = None) -> None:
        self.object_id = object_id
        self.tensor = tensor
        where = f" (tensor {tensor!r})" if tensor else ""
        super().__init__(f"corrupt object {object_id}{where}: {reason}")


class CorruptRefError(CorruptObjectError):
    """A branch, tag or HEAD holds something that is not a commit id of an existing commit (a disk error, a bad
    hand edit): readers refuse it and nothing is written on top of it."""

    def __init__(self, ref: str, content: str, reason: str = "not the id of an existing commit") -> None:
        self.ref = ref
        self.content = content
        self.object_id = f"ref {ref}"
        self.tensor = None
        CoralError.__init__(
            self,
            f"damaged ref {ref}: holds {content[:80]!r} ({reason}); nothing was written. "
            "`coral fsck` shows its last good value from the reflog and the command that restores it",
        )


class PrunedCommitError(CoralError):
    """The commit exists but its weights were freed by retention (`prune`)."""


class MergeConflictError(CoralError):
    """A merge found tensors missing on one side or with different shapes."""

    def __init__(self, conflicts: dict[str, str]) -> None:
        self.conflicts = conflicts
        names = ", ".join(f"{k} ({v})" for k, v in sorted(conflicts.items()))
        super().__init__(
            f"merge conflicts: {names}; choose a side with on_conflict='ours'/'theirs' (CLI: --ours/--theirs)"
        )


class ShapeMismatchError(CoralError, ValueError):
    """A stored tensor and the model's tensor of the same name have different shapes."""


class InsufficientSpaceError(CoralError, OSError):
    """Saving would leave less free disk space than allowed, or the disk is full."""


class AllocationError(CoralError, MemoryError):
    """A tensor is bigger than this process can allocate (a manifest from elsewhere may claim any size)."""


class LockTimeoutError(CoralError):
    """The repository lock could not be taken in time."""


class PluginError(CoralError):
    """A plugin is missing, misbehaves, or no plugin handles the given object."""


class UnsupportedDtypeError(CoralError, TypeError):
    """A dtype Coral cannot store losslessly."""


class CheckpointError(CoralError):
    """A training checkpoint could not be saved or restored (including errors from async saves)."""


class SnapshotChangedError(CheckpointError):
    """A lazy async snapshot found a tensor changed after ``save`` was called: that save is not committed."""


class NothingChangedError(CoralError):
    """An import (or commit) would record exactly the tree HEAD already has; ``allow_empty`` commits it anyway."""


class MalformedFileError(CoralError, ValueError):
    """A file to import is malformed or unsafe (a bad safetensors header, pickled objects in a ``.pt``);
    the message names the file and the problem."""


class RemotesUnavailableError(CoralError, NotImplementedError):
    """``push_to`` (or another remote operation) was asked for, but this Coral has no remotes yet."""


class UnknownRemoteError(InvalidArgumentError):
    """A remote name that ``add_remote`` never configured in this repository."""


class PushRejectedError(CoralError):
    """A push was refused: the remote branch moved since the last fetch, or another push won the race."""


class DivergedError(CoralError):
    """A pull could not fast-forward: the local branch and the remote branch each have commits the other lacks."""


class RankTimeoutError(CoralError, TimeoutError):
    """A distributed save point: some rank did not arrive in time (it crashed, hung or skipped the save)."""


class StoreUnavailableError(CoralError, OSError):
    """A remote store cannot be used: the endpoint is unreachable, the credentials are refused, or the
    bucket is missing; the message names the URL and the endpoint."""


class ConditionalWritesUnsupportedError(RefConflictError):
    """The object store ignores conditional writes (``If-None-Match``/``If-Match``), so a ref update that
    raced another writer was refused instead of risking a lost update."""


class ExitDeadlineError(CoralError, TimeoutError):
    """Background work (a push) abandoned because the process's preemption deadline passed: it is stopping."""


class MissingExtraError(CoralError, ImportError):
    """An optional feature's dependencies are not installed; the message names the extra to install."""
