"""Several real processes committing to one repository and one branch at once lose no ref update and leave
a valid linear history; the local store's compare-and-swap holds across processes."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import time

import numpy as np
from coral import Repository
from coral.store import LocalStore

PROCESSES = 4
COMMITS = 10

_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from coral import Repository
    path, me, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    repo = Repository(path)
    while not os.path.exists(go):  # start together, so the writers really race
        time.sleep(0.005)
    for i in range(n):
        repo.stage_weights({"shared": np.full(64, me * 1000 + i, dtype=np.float32),
                            f"only_{me}": np.arange(8, dtype=np.int64) + i})
        repo.commit(f"p{me}-{i}", {"process": me, "step": i})
    repo.close()
    """
)

_CAS_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from coral.store import LocalStore
    store, n, go = LocalStore(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    while not os.path.exists(go):
        time.sleep(0.005)
    for _ in range(n):
        while True:
            cur = store.get_ref("counter")
            if store.compare_and_swap("counter", cur, str(int(cur or "0") + 1)):
                break
    """
)


def _race(tmp_path, script: str, args_for) -> None:
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args_for(i), str(go)], stderr=subprocess.PIPE, text=True
        )
        for i in range(PROCESSES)
    ]
    time.sleep(0.5)  # let them import and reach the starting line
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err


def test_concurrent_processes_committing_to_one_branch_make_a_linear_chain(tmp_path):
    path = tmp_path / "repo"
    with Repository(path, init=True) as repo:
        repo.stage_weights({"shared": np.zeros(64, np.float32)})
        root = repo.commit("root")
    _race(tmp_path, _WRITER, lambda i: [str(path), str(i), str(COMMITS)])

    with Repository(path) as repo:
        log = repo.log()
        assert len(log) == PROCESSES * COMMITS + 1, "a commit was lost"
        assert log[-1].hash == root and log[-1].parents == []
        for newer, older in itertools.pairwise(log):
            assert newer.parents == [older.hash], "history is not one linear chain in log order"
        messages = [c.message for c in log[:-1]]
        assert sorted(messages) == sorted(f"p{p}-{i}" for p in range(PROCESSES) for i in range(COMMITS))
        for p in range(PROCESSES):  # each writer's own commits appear in its order
            mine = [m for m in reversed(messages) if m.startswith(f"p{p}-")]
            assert mine == [f"p{p}-{i}" for i in range(COMMITS)]
        for info in log[:-1]:
            me, step = info.metadata["process"], info.metadata["step"]
            w = repo.load_arrays(info.hash)
            assert np.all(w["shared"] == me * 1000 + step)
            assert w[f"only_{me}"].tolist() == list(range(step, step + 8))
        report = repo.fsck()
        assert report["ok"], report["errors"]
        assert report["commits"] == PROCESSES * COMMITS + 1


def test_compare_and_swap_holds_across_processes(tmp_path):
    store_path = tmp_path / "store"
    LocalStore(store_path)
    _race(tmp_path, _CAS_WRITER, lambda i: [str(store_path), "25"])
    assert LocalStore(store_path).get_ref("counter") == str(PROCESSES * 25)
