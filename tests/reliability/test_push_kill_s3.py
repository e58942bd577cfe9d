"""The push kill harness against moto's real S3 server: SIGKILL during a push to ``s3://`` at random instants
leaves the remote readable (its branch names the old head or the new one, every commit it reaches loads), and
running the push again completes it, bit-exact (``relh_push.py``; ``CORAL_RELIABILITY_SEED`` replays a run)."""

from __future__ import annotations

import random


def test_sigkill_during_push_to_s3_leaves_the_remote_readable_and_a_retry_completes_it(tmp_path, seed, s3_url):
    import relh_push as P

    res = P.run_push_kills(tmp_path, 3, rng=random.Random(seed), window=1.5, remote_url=s3_url, mib=3)
    assert res["failures"] == [], f"seed={seed}: {res['failures'][:10]}"
    assert res["killed"] + res["finished"] == 3
