"""Child processes of the reliability harness: ``python relh_child.py ROLE JSON_ARGS``.

Each role prints ``ready`` once it is about to do the work a parent may kill it in, and records what it
finished in a JSON-lines report written only after the operation returned.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from coral import Repository
from coral.training import CheckpointConfig, CheckpointManager
from relh_content import append_line, digest, flat_content, model_weights, training_state


def _ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def saver(repo: str, report: str, mode: str, seed: int, start: int, size: str) -> None:
    """Save checkpoints in a loop until killed: ``repo`` (plain API), ``manager-sync``, ``manager-async``."""
    r = Repository(repo)
    mgr = None
    if mode != "repo":
        cfg = CheckpointConfig(
            save_every_n_steps=1,
            save_random_state=False,
            async_save=(mode == "manager-async"),
            save_on_best_metric="loss",
            tag_best_checkpoints=True,
        )
        mgr = CheckpointManager(r, cfg, model_name="m", experiment_name="crash")
    kind = "repo" if mode == "repo" else "manager"
    step = start
    _ready()
    while True:
        step += 1
        flat = flat_content(step, seed, size)
        d = digest(flat)
        if mgr is None:
            r.stage_weights(flat)
            h = r.commit(f"step {step}", {"step": step})
        elif mode == "manager-sync":
            h = mgr.save_checkpoint(model_weights(step, seed, size), training_state(step, seed, size))
        else:
            mgr.save_checkpoint(model_weights(step, seed, size), training_state(step, seed, size))
            flat_content(step + 1, seed, size)  # "train" while the write runs in the background
            mgr.wait()
            h = mgr.last_commit_hash
        append_line(report, {"kind": kind, "commit": h, "step": step, "digest": d})


def bgpacker(repo: str, report: str, seed: int, start: int, size: str, commits: int) -> None:
    """Commit ``commits`` checkpoints through plain ``Repository.commit`` (each queues the packing of its
    parent, run by the background packer), then wait for the packer; killed at random instants meanwhile."""
    r = Repository(repo)
    _ready()
    for step in range(start + 1, start + commits + 1):
        flat = flat_content(step, seed, size)
        r.stage_weights(flat)
        h = r.commit(f"step {step}", {"step": step})
        append_line(report, {"kind": "repo", "commit": h, "step": step, "digest": digest(flat)})
    r.wait()
    sys.stdout.write("done\n")
    sys.stdout.flush()


def maint(repo: str, op: str, targets: list[str]) -> None:
    """Run one maintenance operation (``gc``, ``prune`` = prune targets then gc, ``repack``) and exit."""
    r = Repository(repo)
    _ready()
    if op == "gc":
        r.gc()
    elif op == "prune":
        for c in targets:
            r.prune(c)
        r.gc()
    elif op == "repack":
        r.repack()
    else:
        raise SystemExit(f"unknown op {op}")
    sys.stdout.write("done\n")
    sys.stdout.flush()


def committer(repo: str, report: str, proc: int, count: int, go: str, seed: int, size: str) -> None:
    """Commit ``count`` checkpoints to the current branch as fast as possible, starting when ``go`` exists."""
    r = Repository(repo)
    _ready()
    while not os.path.exists(go):
        time.sleep(0.001)
    for i in range(1, count + 1):
        flat = flat_content(i, seed + proc, size)
        r.stage_weights(flat)
        h = r.commit(f"proc {proc} commit {i}", {"proc": proc, "i": i})
        append_line(
            report, {"kind": "repo", "commit": h, "step": i, "seed": seed + proc, "digest": digest(flat)}
        )


def manager_committer(
    repo: str, report: str, proc: int, count: int, go: str, seed: int, size: str, keep: int
) -> None:
    """Like ``committer`` but through a CheckpointManager with retention (prune + gc inside every save)."""
    r = Repository(repo)
    cfg = CheckpointConfig(save_every_n_steps=1, save_random_state=False, keep_last_n_checkpoints=keep)
    mgr = CheckpointManager(r, cfg, model_name="m", experiment_name=f"exp{proc}")
    _ready()
    while not os.path.exists(go):
        time.sleep(0.001)
    for i in range(1, count + 1):
        h = mgr.save_checkpoint(model_weights(i, seed + proc, size), training_state(i, seed + proc, size))
        append_line(
            report,
            {
                "kind": "manager",
                "commit": h,
                "step": i,
                "seed": seed + proc,
                "digest": digest(flat_content(i, seed + proc, size)),
                "proc": proc,
            },
        )


def gc_looper(repo: str, go: str, stop: str) -> None:
    """Run gc back to back until ``stop`` exists (races every writer's stage -> commit window)."""
    r = Repository(repo)
    _ready()
    while not os.path.exists(go):
        time.sleep(0.001)
    runs = 0
    while not os.path.exists(stop):
        r.gc()
        runs += 1
    sys.stdout.write(f"gc-runs {runs}\n")
    sys.stdout.flush()


ROLES = {
    "saver": saver,
    "maint": maint,
    "bgpacker": bgpacker,
    "committer": committer,
    "manager_committer": manager_committer,
    "gc_looper": gc_looper,
}

if __name__ == "__main__":
    ROLES[sys.argv[1]](**json.loads(sys.argv[2]))
