"""Provenance of a checkpoint: where it came from (versions, device, host, command, code commit) and its hparams.

Recorded under ``metadata["provenance"]`` of every checkpoint commit, so a checkpoint found months later still
says how it was made. The environment is captured once per process (cheap); hyperparameters at every save.
Nothing here may fail a save: a missing ``git``, an odd plugin or an unreadable ``/proc`` just leaves a field out.
"""

from __future__ import annotations

import enum
import importlib.metadata
import logging
import math
import os
import platform
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError

log = logging.getLogger(__name__)

PROVENANCE_KEY = "provenance"
GIT_TIMEOUT_S = 2.0
_OPTIMIZER_KEYS = ("lr", "betas", "momentum", "weight_decay", "eps", "nesterov", "amsgrad")

_env_lock = threading.Lock()
_env_cache: dict[str, Any] | None = None
_git_lock = threading.Lock()
_git_probe: tuple[threading.Thread, dict[str, Any]] | None = None


def enabled_by_environment() -> bool:
    """False when ``CORAL_PROVENANCE`` is ``0``/``false``/``off`` (a way to switch capture off without code)."""
    return os.environ.get("CORAL_PROVENANCE", "1").strip().lower() not in ("0", "false", "off", "no")


def json_safe(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy for hyperparameters: tuples become lists, paths/enums/unknown objects their ``str``."""
    if depth > 8:
        return str(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        return json_safe(value.value, depth + 1)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, depth + 1) for v in value]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", None) == 0:
        try:
            return json_safe(item(), depth + 1)
        except Exception:  # noqa: BLE001 - fall through to str
            pass
    return str(value)


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None (never imports the package)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def find_git_root(start: str | os.PathLike[str] | None) -> Path | None:
    """The nearest folder at or above ``start`` that holds ``.git`` (a folder or a worktree's file), or None."""
    if start is None:
        return None
    try:
        here = Path(start).resolve()
    except OSError:
        return None
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder
    return None


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.SubprocessError) as exc:  # no git, or it hung
        log.debug("git %s in %s failed: %s", args[0], root, exc)
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_info(start: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """``{"commit", "dirty", "root", "branch"}`` of the git work tree holding ``start``; None without git.

    ``dirty`` is True when tracked files differ from the commit (untracked files, such as fresh checkpoints
    in the project folder, do not count).
    """
    root = find_git_root(start)
    if root is None:
        return None
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    return {
        "commit": commit,
        "dirty": None if status is None else bool(status),
        "branch": branch if branch and branch != "HEAD" else None,
        "root": str(root),
    }


def script_folder() -> str | None:
    """The folder of the running script (``sys.argv[0]``), else the current folder (``python -c``, notebooks)."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0 and argv0 not in ("-c", "-m") and os.path.exists(argv0):
        return os.path.dirname(os.path.abspath(argv0))
    try:
        return os.getcwd()
    except OSError:
        return None


def start_git_probe() -> None:
    """Ask git about the training code in a background thread (once per process), so a save never waits on it."""
    global _git_probe
    with _git_lock:
        if _git_probe is not None:
            return
        result: dict[str, Any] = {}

        def probe() -> None:
            result["git"] = git_info(script_folder())

        thread = threading.Thread(target=probe, name="coral-provenance-git", daemon=True)
        _git_probe = (thread, result)
        thread.start()


def code_commit() -> dict[str, Any] | None:
    """The git probe's answer (started now if it was not); None without git or when it did not answer in time."""
    start_git_probe()
    assert _git_probe is not None
    thread, result = _git_probe
    thread.join(timeout=3 * GIT_TIMEOUT_S)
    return result.get("git")


def _plugin_environment() -> tuple[dict[str, Any], dict[str, Any]]:
    versions: dict[str, Any] = {}
    device: dict[str, Any] = {}
    try:
        from ..plugins import hook

        parts = hook().coral_environment()
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not fail a save
        log.warning("a plugin's coral_environment hook failed: %s", exc)
        return versions, device
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        versions.update({str(k): v for k, v in (part.get("versions") or {}).items() if v})
        found = part.get("device") or {}
        if isinstance(found, Mapping) and found.get("type") not in (None, "cpu"):
            device = dict(found)  # an accelerator named by a plugin wins over the CPU
    return versions, device


def environment(refresh: bool = False) -> dict[str, Any]:
    """Versions, device, host, command line and code commit of this process (captured once, then reused)."""
    global _env_cache
    with _env_lock:
        if _env_cache is not None and not refresh:
            return _env_cache
        from .. import __version__

        versions = {"python": platform.python_version(), "numpy": package_version("numpy"), "coral": __version__}
        plugin_versions, device = _plugin_environment()
        versions.update(plugin_versions)
        env: dict[str, Any] = {
            "versions": {k: v for k, v in versions.items() if v},
            "device": device or {"type": "cpu", "name": cpu_model(), "count": os.cpu_count() or 1},
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "command": [str(a) for a in sys.argv],
            "cwd": os.getcwd(),
        }
        code = code_commit()
        if code is not None:
            env["git"] = code
        _env_cache = env
        return env


def optimizer_hparams_from_state(optimizer_state: Any) -> dict[str, Any]:
    """lr, betas, weight decay (...) of the first param group of a captured ``state_dict``-style optimizer state."""
    if not isinstance(optimizer_state, Mapping):
        return {}
    groups = optimizer_state.get("param_groups")
    if not isinstance(groups, list) or not groups or not isinstance(groups[0], Mapping):
        return {}
    return {k: json_safe(groups[0][k]) for k in _OPTIMIZER_KEYS if k in groups[0]}


def hparams_of(source: Any) -> dict[str, Any]:
    """The hyperparameters a plugin recognises in ``source`` (an optimizer, a LightningModule, TrainingArguments)."""
    if isinstance(source, Mapping):
        return json_safe(source)
    try:
        from ..plugins import hook

        found = hook().coral_find_hparams(source=source)
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not fail a save
        log.warning("finding hyperparameters in %s failed: %s", type(source).__name__, exc)
        return {}
    return json_safe(found) if isinstance(found, Mapping) else {}


class Provenance:
    """What a CheckpointManager records under ``metadata["provenance"]``: the environment plus hyperparameters.

    ``hparams`` are the user's (they win over anything found); integrations :meth:`add_source` framework
    objects whose hyperparameters plugins can read at each save. Set ``enabled = False`` to record nothing.
    """

    def __init__(self, hparams: Mapping[str, Any] | None = None) -> None:
        if hparams is not None and not isinstance(hparams, Mapping):
            shown = hparams if len(repr(hparams)) <= 80 else f"<{type(hparams).__name__}>"
            raise InvalidArgumentError("hparams", shown, f"expected a mapping such as {{'lr': 0.001}}, "
                                       f"not a {type(hparams).__name__} (vars(args) for an argparse Namespace)")
        self.hparams: dict[str, Any] = json_safe(dict(hparams or {}))
        self.enabled = enabled_by_environment()
        # git is asked at the first save (code_commit), never when a manager only opens or loads a repository
        self._sources: list[tuple[str, Any]] = []

    def add_source(self, source: Any, key: str | None = None) -> None:
        """Read hyperparameters from ``source`` at every save; under ``key`` (e.g. ``"optimizer"``) if given."""
        if source is None or any(s is source for _, s in self._sources):
            return
        self._sources.append((key or "", source))

    def found_hparams(self, optimizer_state: Any = None) -> dict[str, Any]:
        """Hyperparameters read from the sources (and, when no source is an optimizer, the optimizer state)."""
        found: dict[str, Any] = {}
        for key, source in self._sources:
            values = hparams_of(source)
            if not values:
                continue
            if key:
                found.setdefault(key, {}).update(values)
            else:
                found.update(values)
        if "optimizer" not in found:
            values = optimizer_hparams_from_state(optimizer_state)
            if values:
                found["optimizer"] = values
        return found

    def capture(self, optimizer_state: Any = None) -> dict[str, Any]:
        """``{"provenance": {...}}`` to merge into commit metadata, or ``{}`` when disabled; never raises."""
        if not self.enabled:
            return {}
        try:
            record = dict(environment())
            hparams = self.found_hparams(optimizer_state)
            hparams.update(self.hparams)
            if hparams:
                record["hparams"] = hparams
            return {PROVENANCE_KEY: record}
        except Exception as exc:  # noqa: BLE001 - provenance is a record, never a reason to lose a checkpoint
            log.warning("could not capture provenance: %s", exc)
            return {}


def read_provenance(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The provenance record in commit metadata, or None (commits written before provenance existed)."""
    value = (metadata or {}).get(PROVENANCE_KEY)
    return dict(value) if isinstance(value, Mapping) else None
