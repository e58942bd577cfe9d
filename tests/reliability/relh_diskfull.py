"""Fill a real file system and save: the save must raise InsufficientSpaceError and change nothing.

The repository lives on a small tmpfs mounted in a private mount namespace (``unshare --mount``; a user
namespace too when not root), so the kernel's own ENOSPC is what Coral meets. Where namespaces are not
allowed, ``RLIMIT_FSIZE`` makes the kernel refuse big writes with EFBIG instead (``mechanism`` says which).
For each free-space level ("slack" pages left before the save), the outcome is one of:
``raised-unchanged`` (the error, same refs, fsck ok, old commits bit-exact, gc leaves the old object set),
``saved`` (enough room: the new commit loads bit-exact) or a failure.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from coral import Repository
from coral.errors import CheckpointError, InsufficientSpaceError
from coral.objects.tensors import chunk_key
from coral.training import CheckpointConfig, CheckpointManager
from relh_content import check_commit, flat_content, model_weights, training_state

CHILD = Path(__file__).resolve().with_name("relh_diskfull.py")
VARIANTS = ("repo", "manager-sync", "manager-async")
PAGE = 4096


def _save(variant: str, repo: Repository, mgr: CheckpointManager | None, step: int) -> str:
    if mgr is None:
        repo.stage_weights(flat_content(step, 0, "small"))
        return repo.commit(f"step {step}")
    h = mgr.save_checkpoint(model_weights(step, 0, "small"), training_state(step, 0, "small"))
    if variant == "manager-async":
        mgr.wait()
        h = mgr.last_commit_hash
    assert h is not None
    return h


def _fill(path: Path, slack: int) -> None:
    """Write ``path`` until the file system is full, then give back ``slack`` bytes."""
    block = b"\xa5" * (64 * 1024)
    with open(path, "wb", buffering=0) as fh:
        for size in (len(block), PAGE, 1):
            while True:
                try:
                    fh.write(block[:size])
                except OSError as exc:
                    if exc.errno not in (errno.ENOSPC, errno.EFBIG):
                        raise
                    break
        if slack:
            fh.truncate(max(0, fh.tell() - slack))


def _object_set(repo: Repository) -> set[str]:
    return set(repo.store.list(""))


def one_case(root: Path, variant: str, slack: int, mechanism: str) -> dict[str, Any]:
    """Two good saves, then a save with ``slack`` bytes free; check and classify what happened."""
    d = root / f"{variant}-{slack}"
    kind = "repo" if variant == "repo" else "manager"
    repo = Repository(d, init=True)
    mgr = None
    if variant != "repo":
        cfg = CheckpointConfig(
            save_every_n_steps=1,
            save_random_state=False,
            async_save=variant == "manager-async",
            save_on_best_metric="loss",
        )
        mgr = CheckpointManager(repo, cfg, model_name="m", experiment_name="full")
    old = {_save(variant, repo, mgr, s): s for s in (1, 2)}
    repo.wait()  # background packing of the good saves is done: the snapshot below is the state to keep
    refs_before = repo.store.list_refs("")
    objects_before = _object_set(repo)
    problems: list[str] = []
    filler = root / "filler"
    if mechanism == "tmpfs":
        _fill(filler, slack)
    else:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (slack, resource.RLIM_INFINITY))
    outcome = "saved"
    new = None
    try:
        new = _save(variant, repo, mgr, 3)
    except InsufficientSpaceError as exc:
        outcome, message = "raised", str(exc)
    except CheckpointError as exc:  # async: the background error surfaces at wait()
        if not isinstance(exc.__cause__, InsufficientSpaceError):
            problems.append(f"async save failed with {exc!r}, not InsufficientSpaceError")
        outcome, message = "raised", str(exc)
    except Exception as exc:
        problems.append(f"save raised {type(exc).__name__}: {exc} (expected InsufficientSpaceError)")
        outcome, message = "crashed", str(exc)
    finally:
        if mechanism == "tmpfs":
            filler.unlink(missing_ok=True)
        else:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    if outcome == "raised" and "disk full" not in message:
        problems.append(f"error does not say the disk is full: {message}")
    with Repository(d) as fresh:
        f = fresh.fsck()
        if not f["ok"]:
            problems.append(f"fsck: {f['errors'][:3]}")
        if f["temp_files"]:
            problems.append(f"{f['temp_files']} temp files left by the failed save")
        for h, s in old.items():
            problems += check_commit(fresh, h, s, 0, "small", kind, None)
        if outcome == "saved":
            assert new is not None
            problems += check_commit(fresh, new, 3, 0, "small", kind, None)
        else:
            refs_after = fresh.store.list_refs("")
            if refs_after != refs_before:
                changed = sorted(
                    k for k in set(refs_before) | set(refs_after) if refs_before.get(k) != refs_after.get(k)
                )
                problems.append(f"the failed save changed refs {changed}")
                outcome = "raised-changed"
            fresh.gc()
            # the failed save's chunks may stay staged in the still-open repository (ready for a retry of
            # commit()): gc keeps exactly those and nothing else
            held = {chunk_key(c) for e in repo.staged.values() for c in e.chunks}
            extra = _object_set(fresh) - objects_before - held
            gone = objects_before - _object_set(fresh)
            if gone:
                problems.append(f"{len(gone)} objects of earlier commits are gone")
            if extra and outcome != "raised-changed":
                problems.append(f"{len(extra)} objects remain after gc that were not there before")
            if outcome == "raised":
                outcome = "raised-unchanged"
    # with the space back, the same manager/repository saves again
    try:
        again = _save(variant, repo, mgr, 4)
        with Repository(d) as fresh:
            problems += check_commit(fresh, again, 4, 0, "small", kind, None)
    except Exception as exc:
        problems.append(f"save after freeing space failed: {type(exc).__name__}: {exc}")
    repo.close()
    shutil.rmtree(d, ignore_errors=True)
    return {"variant": variant, "slack": slack, "outcome": outcome, "problems": problems}


def child_main(mount: str, slacks: list[int], variants: list[str], mechanism: str, size: str) -> None:
    root = Path(mount)
    if mechanism == "tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], check=True)
    results = [one_case(root, v, s, mechanism) for v in variants for s in slacks]
    sys.stdout.write(json.dumps(results) + "\n")


def _namespace_prefix() -> list[str] | None:
    """The unshare command that gives a private mount namespace here, or None when none is allowed."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return None
    cands = [["unshare", "--mount", "--propagation", "private"]] if os.geteuid() == 0 else []
    cands.append(["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"])
    for prefix in cands:
        probe = subprocess.run(
            [*prefix, "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"],
            capture_output=True,
        )
        if probe.returncode == 0:
            return prefix
    return None


def run_disk_full(
    workdir: Path, slacks: list[int], variants: tuple[str, ...] = VARIANTS, size: str = "1m"
) -> dict[str, Any]:
    """Run every (variant, slack) case in a child; returns the cases and the mechanism used."""
    mount = workdir / "mnt"
    mount.mkdir(parents=True, exist_ok=True)
    prefix = _namespace_prefix()
    mechanism = "tmpfs" if prefix is not None else "rlimit-fsize"
    if mechanism == "rlimit-fsize":  # a per-file size limit: slack is then the largest file allowed
        slacks = [max(64, s) for s in slacks]
    args = {
        "mount": str(mount),
        "slacks": slacks,
        "variants": list(variants),
        "mechanism": mechanism,
        "size": size,
    }
    cmd = [*(prefix or []), sys.executable, str(CHILD), json.dumps(args)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"disk-full child failed (rc={res.returncode}): {res.stderr[-3000:]}")
    cases = json.loads(res.stdout.strip().splitlines()[-1])
    return {"mechanism": mechanism, "cases": cases}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    child_main(**json.loads(sys.argv[1]))
