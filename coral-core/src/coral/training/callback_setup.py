"""Set-up shared by the framework callbacks (coral-hf, coral-lightning): their common options, checked once and
turned into a repository, a branch, an experiment name and a CheckpointConfig. Framework-free."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any, TypedDict

from ..errors import CoralError, InvalidArgumentError
from ..version_control.names import validate_ref_name
from ..version_control.remote_config import remote_url
from ..version_control.repository import Repository
from .config import CheckpointConfig, check_push_to


class CallbackOptions(TypedDict, total=False):
    """The keyword options every Coral training callback takes (defaults in brackets).

    ``save_every_n_epochs`` / ``save_every_n_steps`` [None]: periodic saves; ``save_on_best`` [None]: save when
    this metric improves by ``mode`` ["min"] or "max"; ``branch`` [current]: where checkpoints are committed;
    ``push_to`` [None]: a remote (``coral remote add``) each checkpoint is pushed to in the background;
    ``include_optimizer`` [True]: optimizer and scheduler state too;
    ``metadata_keys`` [none]: extra values recorded in each commit; ``keep_last_n_checkpoints``,
    ``keep_best_n_checkpoints``, ``keep_checkpoint_every_n_epochs`` [None]: retention (see CheckpointConfig);
    ``experiment_name`` [from the branch]: the CheckpointManager history the checkpoints go to.
    """

    save_every_n_epochs: int | None
    save_every_n_steps: int | None
    save_on_best: str | None
    mode: str
    branch: str | None
    push_to: str | None
    include_optimizer: bool
    metadata_keys: Iterable[str] | None
    keep_last_n_checkpoints: int | None
    keep_best_n_checkpoints: int | None
    keep_checkpoint_every_n_epochs: int | None
    experiment_name: str | None


OPTION_NAMES = frozenset(CallbackOptions.__annotations__)


def positive_or_none(name: str, value: Any) -> int | None:
    """``value`` when it is a positive integer or None; anything else is refused naming ``name``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidArgumentError(name, value, "must be a positive integer or None")
    return value


RepoArgument = Repository | str | os.PathLike[str] | None


def check_repository_arguments(
    repo: RepoArgument, repo_path: str | os.PathLike[str] | None, init: Any, *, repo_may_be_path: bool
) -> None:
    """Refuse anything but exactly one of ``repo`` (a Repository, or a path where allowed) and ``repo_path``."""
    if (repo is None) == (repo_path is None):
        raise InvalidArgumentError(
            "repo", repo, "pass exactly one of repo=Repository(...) (or a path) and repo_path=..."
        )
    if not isinstance(init, bool):
        raise InvalidArgumentError("init", init, "must be True or False")
    if repo is not None and not isinstance(repo, Repository) and not repo_may_be_path:
        raise InvalidArgumentError("repo", type(repo).__name__, "expected a coral Repository (or use repo_path=)")
    path = repo if repo is not None else repo_path
    if not isinstance(path, (Repository, str, os.PathLike)):
        raise InvalidArgumentError("repo", path, "expected a coral Repository or a folder path")


def open_callback_repository(repo: RepoArgument, repo_path: str | os.PathLike[str] | None, init: bool) -> Repository:
    """The Repository given, or the one at the path given (created with ``init``)."""
    if isinstance(repo, Repository):
        return repo
    path = repo if repo is not None else repo_path
    return Repository(path, init=init)  # type: ignore[arg-type]


def use_branch(repo: Repository, branch: str) -> None:
    """Point HEAD at ``branch``: switch to it, create it from HEAD, or (empty repository) make it the unborn branch."""
    validate_ref_name(branch, "branch")
    if repo.current_branch == branch:
        return
    if branch in repo.list_branches():
        repo.switch(branch)
    elif repo.head_commit() is None:  # empty repository: the first checkpoint starts the branch
        old = repo.store.get_ref("HEAD")
        if not repo.store.compare_and_swap("HEAD", old, f"ref: heads/{branch}"):
            raise CoralError(f"HEAD moved while switching to branch {branch!r}")
    else:
        repo.switch(branch, create=True)


class CallbackSetup:
    """Mixin of the framework callbacks: ``setup_checkpointing`` checks the shared options and sets them as
    attributes (those of CallbackOptions, ``metadata_keys`` as a list, ``retention`` the keep_* values);
    ``checkpoint_config`` turns them into the CheckpointManager's config."""

    def setup_checkpointing(
        self,
        repo: RepoArgument,
        repo_path: str | os.PathLike[str] | None,
        init: bool,
        options: CallbackOptions,
        *,
        repo_may_be_path: bool = True,
        reserved_metadata: Iterable[str] = (),
        every_epoch_by_default: bool = False,
        branch_required: bool = False,
        fallback_name: str = "training",
    ) -> Repository:
        """Check the repository arguments and ``options`` (one clear error naming the option, before anything is
        created), set the options on ``self`` and return the opened Repository."""
        unknown = sorted(set(options) - OPTION_NAMES)
        if unknown:
            raise InvalidArgumentError(unknown[0], options[unknown[0]], "is not an option of this callback")  # type: ignore[literal-required]
        push_to = self.push_to = check_push_to(options.get("push_to"))
        check_repository_arguments(repo, repo_path, init, repo_may_be_path=repo_may_be_path)
        self.save_every_n_epochs = positive_or_none("save_every_n_epochs", options.get("save_every_n_epochs"))
        self.save_every_n_steps = positive_or_none("save_every_n_steps", options.get("save_every_n_steps"))
        best = options.get("save_on_best")
        if best is not None and (not isinstance(best, str) or not best):
            raise InvalidArgumentError("save_on_best", best, "must be the name of a logged or evaluation metric")
        self.save_on_best = best
        self.mode = options.get("mode", "min")
        if self.mode not in ("min", "max"):
            raise InvalidArgumentError("mode", self.mode, "must be 'min' or 'max'")
        self.include_optimizer = options.get("include_optimizer", True)
        if not isinstance(self.include_optimizer, bool):
            raise InvalidArgumentError("include_optimizer", self.include_optimizer, "must be True or False")
        if every_epoch_by_default and (self.save_every_n_epochs, self.save_every_n_steps, best) == (None, None, None):
            self.save_every_n_epochs = 1
        self.metadata_keys = _metadata_keys(options.get("metadata_keys"), frozenset(reserved_metadata))
        self.retention = {
            name: options.get(name)  # type: ignore[misc]
            for name in ("keep_last_n_checkpoints", "keep_best_n_checkpoints", "keep_checkpoint_every_n_epochs")
        }
        branch = options.get("branch")
        if branch is not None:
            validate_ref_name(branch, "branch")
        opened = open_callback_repository(repo, repo_path, init)
        if push_to is not None:
            remote_url(opened, push_to)  # an unknown remote fails here, not at the first save
        if branch is None and branch_required:
            branch = opened.current_branch
            if branch is None:
                raise InvalidArgumentError("branch", None, "HEAD is detached: name the branch to commit checkpoints on")
        self.branch: str | None = branch
        self.experiment_name: str = options.get("experiment_name") or re.sub(
            r"[^A-Za-z0-9._\-]", "-", branch or opened.current_branch or fallback_name
        )
        return opened

    def checkpoint_config(self, **overrides: Any) -> CheckpointConfig:
        """The CheckpointConfig of these options (retention, what state to keep); ``overrides`` add fields."""
        values: dict[str, Any] = {
            "save_on_best_metric": self.save_on_best,
            "minimize_metric": self.mode == "min",
            "save_optimizer_state": self.include_optimizer,
            "save_scheduler_state": self.include_optimizer,
            "save_random_state": True,
            "push_to": self.push_to,  # pushed in the background after each save (CheckpointManager)
            **self.retention,
        }
        values.update(overrides)
        return CheckpointConfig(**values)


def _metadata_keys(keys: Any, reserved: frozenset[str]) -> list[str]:
    if isinstance(keys, str):
        raise InvalidArgumentError("metadata_keys", keys, "must be a list of names, not a string")
    out = list(keys or [])
    for key in out:
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError("metadata_keys", key, "must be names (strings)")
        if key in reserved:
            raise InvalidArgumentError("metadata_keys", key, f"is reserved ({', '.join(sorted(reserved))})")
    return out


__all__ = [
    "CallbackOptions",
    "CallbackSetup",
    "check_repository_arguments",
    "open_callback_repository",
    "positive_or_none",
    "use_branch",
]
