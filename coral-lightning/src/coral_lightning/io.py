"""CoralCheckpointIO: Lightning reads ``ckpt_path="coral://<ref>"`` from a Coral repository; other paths pass
through."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from coral.errors import InvalidArgumentError
from coral.version_control.repository import Repository

from ._compat import CheckpointIO
from ._state import build_checkpoint

SCHEME = "coral://"


def is_coral_path(path: Any) -> bool:
    return isinstance(path, str) and path.startswith(SCHEME)


def parse_coral_path(path: str) -> str:
    """The ref in ``coral://<ref>`` (``last``, ``best``, a branch, tag, hash or ``HEAD~N``)."""
    ref = path[len(SCHEME):] if is_coral_path(path) else ""
    if not ref:
        raise InvalidArgumentError("ckpt_path", path, "expected coral://<ref>, e.g. coral://last or coral://best")
    return ref


class CoralCheckpointIO(CheckpointIO):
    """Serves ``coral://<ref>`` checkpoint paths from a repository; every other path goes to ``wrapped``.

    ``CoralCallback`` installs one on the trainer's strategy by itself (``coral://last`` and ``coral://best`` then
    mean the callback's latest and best checkpoints). Standalone: ``Trainer(plugins=[CoralCheckpointIO(repo)])``,
    where ``coral://last`` is the current branch's head.
    """

    def __init__(
        self,
        repo: Repository | str | os.PathLike[str],
        wrapped: CheckpointIO | None = None,
        resolve: Callable[[str], str] | None = None,
    ) -> None:
        self._repo = repo if isinstance(repo, Repository) else None
        self._repo_path = None if isinstance(repo, Repository) else os.fspath(repo)
        self.wrapped = wrapped
        self._resolve = resolve

    @property
    def repo(self) -> Repository:
        if self._repo is None:
            self._repo = Repository(self._repo_path)  # type: ignore[arg-type]
        return self._repo

    def resolve(self, path: str) -> str:
        """The full commit hash ``coral://<ref>`` names."""
        ref = parse_coral_path(path)
        if self._resolve is not None:
            return self._resolve(ref)
        return self.repo.resolve("HEAD" if ref in ("last", "latest") else ref)

    def _inner(self) -> CheckpointIO:
        if self.wrapped is None:
            from ._compat import pl

            self.wrapped = pl.plugins.TorchCheckpointIO()
        return self.wrapped

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if is_coral_path(path):
            return build_checkpoint(self.repo, self.resolve(path))
        return self._inner().load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if is_coral_path(path):
            raise InvalidArgumentError("path", path, "CoralCallback writes Coral checkpoints; save files elsewhere")
        self._inner().save_checkpoint(checkpoint, path, storage_options=storage_options)

    def remove_checkpoint(self, path: Any) -> None:
        self._inner().remove_checkpoint(path)

    def teardown(self) -> None:
        if self.wrapped is not None:
            self.wrapped.teardown()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._repo is not None and self._repo.path is not None:
            state["_repo_path"], state["_repo"] = str(self._repo.path), None
        return state
