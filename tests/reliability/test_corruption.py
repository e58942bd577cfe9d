"""Flipped bytes, truncated and deleted object files are detected on load and by fsck, naming the object."""

from __future__ import annotations

import relh_corrupt as K


def test_damaged_objects_never_load_silently(tmp_path, seed):
    # every object file of a repository covering raw, planes+zstd, delta and commit objects; a few random
    # byte flips each (bench/reliability.py flips every byte), plus truncations and deletion
    res = K.run_corruption(tmp_path / "repo", sample=4, masks=1, seed=seed)
    assert res["failures"] == [], f"seed={seed}: {res['failures'][:10]}"
    assert res["objects"] >= 12 and res["flips"] >= 3 * res["objects"] and res["deletions"] == res["objects"]


def test_every_byte_of_a_small_object_is_covered(tmp_path, seed):
    # exhaustive on the commit objects and the smallest chunk: no byte of them can change unseen
    res = K.run_corruption(
        tmp_path / "repo", exhaustive=True, masks=1, seed=seed, kinds=("flip",), max_objects=3
    )
    assert res["failures"] == [], f"seed={seed}: {res['failures'][:10]}"
    assert res["flips"] >= 500
