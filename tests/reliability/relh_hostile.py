"""Build hostile repositories by hand (as an attacker would) and open them under an audit hook.

Commits are planted with ids that match their bytes (``blake3`` of the document) and written through
the store, so they pass every check an honest object passes; only their content is hostile.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import blake3
from coral import Repository
from coral.version_control.commit import commit_key
from coral.version_control.jsonsafe import canonical_dumps

# audit events that mean "code from the repository could run" (marshal.loads is left out: it is how
# Python's own import system reads .pyc files when a module is imported lazily)
DANGEROUS_EVENTS = (
    "pickle.find_class",
    "os.system",
    "subprocess.Popen",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "ctypes.dlopen",
)


class Payload:
    """Unpickling this runs ``touch marker`` (through os.system): the classic pickle attack."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def pickle_payload(marker: Path) -> bytes:
    return pickle.dumps({"weights": Payload(str(marker))}, protocol=2)


def commit_doc(
    tree: dict[str, Any] | None = None, parents: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    doc = {
        "format": 1,
        "parents": parents or [],
        "message": "planted",
        "metadata": {},
        "time": 1.0,
        "tree": tree or {},
    }
    doc.update(extra)
    return doc


def plant_commit(repo_dir: Path, doc: dict[str, Any] | bytes) -> str:
    """Store a commit object as given; returns its id (the hash of its bytes, as Coral computes it)."""
    raw = doc if isinstance(doc, bytes) else canonical_dumps(doc)
    cid = blake3.blake3(raw).hexdigest()
    with Repository(repo_dir) as r:
        r.store.put(commit_key(cid), raw, overwrite=True)
    return cid


def write_ref(repo_dir: Path, name: str, value: str | bytes) -> None:
    """Write a ref file directly (no validation), as a hand-edited or downloaded repository could hold."""
    path = repo_dir / ".coral" / "refs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape"))


def everything_a_reader_does(repo_dir: Path) -> dict[str, str]:
    """Open, log every branch, list tags, load every commit, fsck, stats, resume a manager: outcomes."""
    from coral.errors import CoralError
    from coral.training import CheckpointManager

    outcomes: dict[str, str] = {}

    def step(name: str, fn: Any) -> Any:
        try:
            value = fn()
            outcomes[name] = "ok"
            return value
        except CoralError as exc:
            outcomes[name] = f"CoralError:{type(exc).__name__}"
        except Exception as exc:  # the failure this harness exists to find
            outcomes[name] = f"CRASH:{type(exc).__name__}:{exc}"
        return None

    repo = step("open", lambda: Repository(repo_dir))
    if repo is None:
        return outcomes
    branches = step("list_branches", repo.list_branches) or []
    step("list_tags", repo.list_tags)
    step("log", repo.log)
    for b in branches:
        step(f"log {b}", lambda b=b: repo.log(b))
    for cid in repo._commit_ids():
        step(f"load {cid[:12]}", lambda cid=cid: {n: w.data for n, w in repo.get_weights(cid).items()})
        step(f"load_arrays {cid[:12]}", lambda cid=cid: repo.load_arrays(cid))
    step("fsck", repo.fsck)
    step("stats", repo.stats)
    mgr = step("manager", lambda: CheckpointManager(repo, experiment_name="exp"))
    if mgr is not None:
        step("load_checkpoint", mgr.load_checkpoint)
    step("gc", repo.gc)
    return outcomes


def audited_child(repo: str, marker: str) -> None:
    """Child process: record dangerous audit events while doing everything a reader does."""
    events: list[str] = []

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event.startswith(DANGEROUS_EVENTS):
            events.append(f"{event} {args!r:.200}")

    sys.addaudithook(hook)
    outcomes = everything_a_reader_does(Path(repo))
    print(json.dumps({"events": events, "outcomes": outcomes, "marker": os.path.exists(marker)}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    audited_child(**json.loads(sys.argv[1]))
