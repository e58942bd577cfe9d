"""Several processes commit to one branch of one repository at once: no update is lost, history is a chain."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import relh_crash as C
from coral import Repository


def test_concurrent_committers_lose_no_update(tmp_path, seed):
    res = C.run_concurrency(tmp_path, procs=4, commits=8, seed=seed % 1000)
    assert res["failures"] == [], res["failures"][:10]
    assert res["commits"] == 32


def test_commits_racing_a_gc_loop_never_dangle(tmp_path, seed):
    res = C.run_concurrency(tmp_path, procs=3, commits=8, seed=seed % 1000, gc=True)
    assert res["failures"] == [], res["failures"][:10]
    assert res["gc_runs"] >= 1


def test_checkpoint_managers_with_retention_share_a_branch(tmp_path, seed):
    # each save prunes and gc's its own old checkpoints while the other processes commit
    res = C.run_concurrency(tmp_path, procs=1, managers=2, commits=6, keep=2, seed=seed % 1000)
    assert res["failures"] == [], res["failures"][:10]


def test_gc_elsewhere_keeps_chunks_staged_but_not_yet_committed(tmp_path):
    writer = Repository(tmp_path, init=True)
    writer.stage_weights({"x": np.arange(10.0)})
    writer.commit("one")
    writer.stage_weights({"x": np.arange(20.0)})  # staged: unreferenced until the commit below
    with Repository(tmp_path) as other:
        assert other.gc()["objects_removed"] == 0
    h = writer.commit("two")
    assert writer.load_arrays(h)["x"].tobytes() == np.arange(20.0).tobytes()
    writer.close()
    with Repository(tmp_path) as r:
        report = r.fsck()
        assert report["ok"] and report["unreferenced_objects"] == 0 and report["temp_files"] == 0


def test_a_dead_stager_leaves_nothing_gc_cannot_remove(tmp_path):
    Repository(tmp_path, init=True).close()
    code = (
        "import os, numpy as np; from coral import Repository; r = Repository(os.environ['R']); "
        "r.stage_weights({'x': np.arange(50.0)}); os._exit(0)"  # dies with the chunks staged
    )
    env = {**os.environ, "R": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    with Repository(tmp_path) as r:
        before = r.fsck()
        assert before["unreferenced_objects"] == 1 and before["temp_files"] == 1  # the chunk and its record
        r.gc()
        after = r.fsck()
        assert after["unreferenced_objects"] == 0 and after["temp_files"] == 0
