"""Packing runs in the background after every commit: off the calling thread, durable across exits, drained by
the next writer or ``coral repack``, and the newest checkpoint stays raw."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from coral import Repository
from coral.cli.main import main
from coral.codecs import CODEC_RAW
from coral.training import CheckpointConfig, CheckpointManager, TrainingState


def _steps(n: int, size: int = 200_000, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` checkpoints of a slowly trained float32 model: each step nudges the weights a little."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(size).astype(np.float32)
    out = []
    for _ in range(n):
        w = (w + 1e-3 * rng.standard_normal(size).astype(np.float32)).astype(np.float32)
        out.append({"w": w.copy(), "b": w[:1000].copy()})
    return out


def _commit_all(repo: Repository, steps: list[dict[str, np.ndarray]]) -> list[str]:
    ids = []
    for i, weights in enumerate(steps):
        repo.stage_weights(weights)
        ids.append(repo.commit(f"step {i}"))
    return ids


def test_plain_commit_packs_in_a_background_thread_and_stored_bytes_shrink(tmp_path):
    steps = _steps(4)
    with Repository(tmp_path, init=True) as repo:
        ids = _commit_all(repo, steps)
        assert repo.wait(timeout=300)
        assert repo.pending_background() == {"packing": 0}
        assert repo.packer.last_thread_id is not None
        assert repo.packer.last_thread_id != threading.get_ident()  # never the thread that committed
        assert repo.packer.totals["chunks"] > 0
        st = repo.stats()
        assert st["stored_bytes"] < 0.9 * st["unique_bytes"], st
        for cid, weights in zip(ids, steps, strict=True):  # every commit still loads bit-exact
            got = repo.load_arrays(cid)
            for name, arr in weights.items():
                assert got[name].tobytes() == arr.tobytes()
        # the newest checkpoint stays raw: no chain walk, no decompression
        for entry in repo.get_commit(ids[-1]).tree.values():
            for chunk in entry.chunks:
                head = repo.objects.header(chunk)
                assert head.base is None and head.codec == CODEC_RAW
        assert repo.fsck()["ok"]


def test_pack_false_queues_nothing(tmp_path):
    with Repository(tmp_path, init=True) as repo:
        for weights in _steps(2):
            repo.commit_weights(weights, "no packing", pack=False)
        assert repo.wait(timeout=60)
        assert repo.pending_background() == {"packing": 0}
        assert repo.packer.last_thread_id is None


def test_wait_rejects_a_bad_timeout(tmp_path):
    with Repository(tmp_path, init=True) as repo:
        with pytest.raises(Exception, match="timeout"):
            repo.wait(timeout=-1)


def _abandoned(path) -> tuple[list[str], list[dict[str, np.ndarray]]]:
    """Commits whose packing a process queued but never ran (as if it exited or was killed)."""
    steps = _steps(3, seed=1)
    repo = Repository(path, init=True)
    repo.background.stop()  # the packer starts nothing more: the queue stays in the store
    ids = _commit_all(repo, steps)
    repo.close()
    return ids, steps


def test_the_next_write_drains_what_an_earlier_process_left_queued(tmp_path, capsys):
    ids, steps = _abandoned(tmp_path)
    assert main(["-C", str(tmp_path), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["packing_pending"] == 2  # the root has nothing to pack
    assert main(["-C", str(tmp_path), "status"]) == 0
    assert "Packing pending for 2 commit(s)" in capsys.readouterr().out
    with Repository(tmp_path) as repo:
        before = repo.stats()["stored_bytes"]
        repo.commit_weights(_steps(4, seed=1)[-1], "next writer")
        assert repo.wait(timeout=300)
        assert repo.pending_background() == {"packing": 0}
        assert repo.stats()["stored_bytes"] < before
        for cid, weights in zip(ids, steps, strict=True):
            assert repo.load_arrays(cid)["w"].tobytes() == weights["w"].tobytes()


def test_coral_repack_drains_the_queue(tmp_path, capsys):
    _abandoned(tmp_path)
    assert main(["-C", str(tmp_path), "repack", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["queued_commits"] == 2 and doc["bytes_saved"] > 0
    with Repository(tmp_path) as repo:
        assert repo.pending_background() == {"packing": 0}
        assert repo.fsck()["ok"]


def test_checkpoint_manager_packs_in_the_background_and_wait_includes_it(tmp_path):
    repo = Repository(tmp_path, init=True)
    mgr = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1, save_random_state=False), experiment_name="bg")
    for i, weights in enumerate(_steps(4, seed=2), start=1):
        mgr.save_checkpoint(weights, TrainingState(epoch=0, global_step=i))
    mgr.wait()
    assert repo.pending_background() == {"packing": 0}
    assert repo.packer.last_thread_id not in (None, threading.get_ident())
    st = repo.stats()
    assert st["stored_bytes"] < 0.9 * st["unique_bytes"], st
    loaded = mgr.load_checkpoint()
    assert loaded is not None and loaded["state"].global_step == 4
    repo.close()


_EXITING_WRITER = """
import sys, time
import numpy as np
from coral import Repository

rng = np.random.default_rng(0)
w = rng.standard_normal(1_000_000).astype(np.float32)
repo = Repository(sys.argv[1], init=True)
repo.background.stop()  # packing starts nothing in this process: the run "ends" with all of it queued
for i in range(4):
    w = (w + 1e-3 * rng.standard_normal(w.size).astype(np.float32)).astype(np.float32)
    repo.commit_weights({"w": w}, f"step {i}")
print(repo.pending_background()["packing"], flush=True)
# no close(): like a training process that ends with its repository open
"""


def _run_writer(tmp_path, env_extra: dict[str, str]) -> int:
    import os
    import subprocess
    import sys

    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", _EXITING_WRITER, str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def _wait_for_queue(path, seconds: float) -> int:
    import time

    deadline = time.monotonic() + seconds
    while True:
        with Repository(path) as repo:
            left = repo.pending_background()["packing"]
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_packing_left_at_exit_goes_on_in_a_detached_process(tmp_path):
    queued = _run_writer(tmp_path, {})
    assert queued > 0  # the writer exited with packing queued ...
    assert _wait_for_queue(tmp_path, 120) == 0  # ... and a detached worker drained it after the exit
    with Repository(tmp_path) as repo:
        st = repo.stats()
        assert st["stored_bytes"] < 0.9 * st["unique_bytes"], st
        assert repo.fsck()["ok"]


def test_exit_detach_off_leaves_the_queue_for_the_next_writer(tmp_path):
    queued = _run_writer(tmp_path, {"CORAL_EXIT_DETACH": "0", "CORAL_EXIT_WAIT": "0"})
    assert queued > 0
    with Repository(tmp_path) as repo:
        assert repo.pending_background()["packing"] == queued


def test_a_reader_never_starts_a_packer(tmp_path):
    _abandoned(tmp_path)
    with Repository(tmp_path) as repo:
        repo.log()
        assert repo.packer.detach(1.0)  # nothing of this process to hand on: no worker starts
    with Repository(tmp_path) as repo:
        assert repo.pending_background()["packing"] == 2
