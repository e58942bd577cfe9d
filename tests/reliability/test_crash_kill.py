"""SIGKILL a process at random instants while it saves, gc's, prunes or repacks.

The fast subset of ``bench/reliability.py``.
"""

from __future__ import annotations

import random

import pytest
import relh_crash as C


@pytest.mark.parametrize("mode,kills", [("manager-sync", 8), ("manager-async", 8), ("repo", 4)])
def test_every_reported_checkpoint_survives_sigkill_while_saving(tmp_path, seed, mode, kills):
    res = C.run_save_kills(
        tmp_path, mode, kills, seed=seed, window=0.4, rotate_every=kills, rng=random.Random(seed)
    )
    assert res["failures"] == [], f"seed={seed}: {res['failures'][:10]}"
    assert res["kills"] == kills  # the saver loops forever: every kill lands while it works
    assert res["reported"] >= 1, f"seed={seed}: no save finished before the kills, nothing was tested"


@pytest.mark.parametrize("op", ["gc", "prune", "repack"])
def test_live_commits_survive_sigkill_during_maintenance(tmp_path, seed, op):
    res = C.run_maint_kills(tmp_path, op, 3, seed=seed, rng=random.Random(seed))
    assert res["failures"] == [], f"seed={seed}: {res['failures'][:10]}"
    assert res["kills"] + res["finished"] == 3


def test_commits_survive_sigkill_during_background_packing_and_the_next_write_drains_the_queue(tmp_path, seed):
    # large checkpoints: packing a pair takes long enough that the kills leave queued pairs behind
    res = C.run_bgpack_kills(tmp_path, 3, seed=seed, size="large", commits=4, rng=random.Random(seed))
    assert res["failures"] == [], f"seed={seed}: {res['failures'][:10]}"
    assert res["kills"] + res["finished"] == 3
    assert res["reported"] >= 1


def test_sigkill_during_push_leaves_the_remote_readable_and_a_retry_completes_it(tmp_path, seed):
    import relh_push as P

    res = P.run_push_kills(tmp_path, 4, rng=random.Random(seed))
    assert res["failures"] == [], f"seed={seed}: {res['failures'][:10]}"
    assert res["killed"] + res["finished"] == 4


def test_sigkill_of_one_rank_during_a_sharded_save_leaves_whole_commits_and_resumes(tmp_path, seed):
    import relh_distributed as D

    res = D.run_sharded_save_kill(tmp_path, random.Random(seed))
    assert res["failures"] == [], f"seed={seed}: {res['failures'][:10]}"
    assert res["reported"] >= 2 and res["commits"] >= res["reported"]
