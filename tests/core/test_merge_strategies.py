"""Merge strategies against small hand-computed examples, per-tensor choices, reproducibility, the record
the merge commit keeps, and every bad input refused before anything is written."""

from __future__ import annotations

import hashlib
import logging
import math

import numpy as np
import pytest
from coral import Repository
from coral.errors import CoralError, InvalidArgumentError, MergeConflictError
from coral.version_control import merge_strategies as ms


def forked(tmp_path, base, ours, theirs):
    """base on main; branch 'other' commits ``theirs``; main then commits ``ours``."""
    repo = Repository(tmp_path / "repo", init=True)
    repo.stage_weights(base)
    c_base = repo.commit("base")
    repo.switch("other", create=True)
    repo.stage_weights(theirs)
    c_theirs = repo.commit("theirs")
    repo.switch("main")
    repo.stage_weights(ours)
    c_ours = repo.commit("ours")
    repo.wait()  # background packing done: snapshots then see only what a merge writes
    return repo, c_base, c_ours, c_theirs


def snapshot(repo: Repository) -> dict[str, str]:
    """Every file of the store with a hash of its bytes: equal snapshots mean nothing was written.

    Background packing of earlier commits is waited for first: it runs on its own schedule, and a pending
    pack ref it clears between two snapshots is not something the merge under test wrote."""
    repo.wait()
    root = repo.path / ".coral"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "lock" not in p.name
    }


def digests(repo: Repository, commit: str) -> dict[str, str]:
    """Content hash per tensor (small tensors share pack chunks, so chunk ids depend on their neighbours)."""
    return {name: entry.digest for name, entry in repo.get_commit(commit).tree.items()}


def arr(*values):
    return np.array(values, dtype=np.float64)


# ---- each strategy against a hand-computed example --------------------------------------------------------

BASE = {"w": arr(1, 2)}
OURS = {"w": arr(3, 2)}
THEIRS = {"w": arr(1, 6)}


@pytest.mark.parametrize(
    "strategy,params,expect",
    [
        ("average", {}, [2, 4]),
        ("weighted", {"weights": [0.25, 0.75]}, [1.5, 5]),
        ("task_arithmetic", {}, [3, 6]),  # base + (2, 0) + (0, 4)
        ("task_arithmetic", {"weights": [0.5, 0.25]}, [2, 3]),
        ("ties", {"density": 1.0}, [3, 6]),  # disjoint task vectors: each entry keeps the one that moved
        ("dare", {"density": 1.0, "seed": 1}, [3, 6]),  # nothing dropped: task arithmetic
        ("dare_ties", {"density": 1.0, "seed": 1}, [3, 6]),
        ("slerp", {"t": 0.0}, [3, 2]),
        ("ours", {}, [3, 2]),
        ("theirs", {}, [1, 6]),
    ],
)
def test_each_strategy_on_a_hand_computed_example(tmp_path, strategy, params, expect):
    repo, c_base, c_ours, c_theirs = forked(tmp_path, BASE, OURS, THEIRS)
    merged = repo.merge("other", strategy, **params)
    assert repo.get_commit(merged).parents == [c_ours, c_theirs]
    np.testing.assert_allclose(repo.load_arrays(merged)["w"], expect, rtol=0, atol=1e-12)
    record = repo.get_commit(merged).metadata["merge"]
    assert record["strategy"] == strategy and record["other"] == c_theirs and record["ours"] == c_ours


def test_ties_trims_elects_signs_and_takes_the_disjoint_mean(tmp_path):
    base = arr(10, 20, 30, 40, 50, 60)
    tau_a = arr(1, -2, 0.5, 3, 4, 2.5)  # top 3 magnitudes: 4, 3, 2.5
    tau_b = arr(-1.5, -1, 2, 0.1, -3, 3.5)  # top 3 magnitudes: 3.5, -3, 2
    repo, _, c_ours, _ = forked(tmp_path, {"w": base}, {"w": base + tau_a}, {"w": base + tau_b})
    # trimmed: a = [0, 0, 0, 3, 4, 2.5], b = [0, 0, 2, 0, -3, 3.5]; signs of the sum: [0, 0, +, +, +, +]
    # entry 4: only a (+4) agrees with the elected +; entry 5: both agree -> mean (2.5 + 3.5) / 2 = 3
    got = repo.load_arrays(repo.merge("other", "ties", density=0.5))["w"]
    assert got.tolist() == (base + arr(0, 0, 2, 3, 4, 3)).tolist()
    # weights [1, 3]: entry 4 elects sign(4 - 9) = -, so b's -3 wins; entry 5: (2.5 + 3 * 3.5) / 4 = 3.25
    repo.create_branch("weighted", c_ours)
    repo.switch("weighted")
    got = repo.load_arrays(repo.merge("other", "ties", [1, 3], density=0.5))["w"]
    assert got.tolist() == (base + arr(0, 0, 2, 3, -3, 3.25)).tolist()


def test_trim_keeps_exactly_k_and_breaks_ties_by_index():
    t = arr(1, -1, 1, 0.5)
    assert ms.trim(t, 0.5).tolist() == [1, -1, 0, 0]
    assert ms.keep_count(0.6, 5) == 3 and ms.keep_count(0.01, 10) == 1 and ms.keep_count(1.0, 7) == 7


def test_dare_ties_with_nothing_dropped_is_sign_election_and_disjoint_mean(tmp_path):
    base = arr(0, 0, 0)
    repo, *_ = forked(tmp_path, {"w": base}, {"w": arr(1, -2, 3)}, {"w": arr(3, 1, -1)})
    # sum = [4, -1, 2] -> signs [+, -, +]: [(1 + 3) / 2, -2, 3]
    got = repo.load_arrays(repo.merge("other", "dare_ties", density=1.0, seed=0))["w"]
    assert got.tolist() == [2, -2, 3]


def test_dare_drops_and_rescales_and_is_reproducible_with_a_seed(tmp_path):
    rng = np.random.default_rng(0)
    base = np.zeros(2000)
    ours = rng.integers(1, 9, 2000).astype(np.float64)
    repo, _, c_ours, _ = forked(tmp_path, {"w": base}, {"w": ours}, {"w": base.copy()})
    first = repo.merge("other", "dare", density=0.25, seed=1234)
    got = repo.load_arrays(first)["w"]
    kept = got != 0
    assert np.array_equal(got[kept], ours[kept] * 4)  # survivors rescaled by 1 / (1 - p) = 1 / density
    assert 0.2 < kept.mean() < 0.3  # a fraction p = 0.75 dropped
    assert repo.get_commit(first).metadata["merge"]["seed"] == 1234
    # the same seed on another branch from the same commit: bit-identical weights, the same chunks
    repo.create_branch("again", c_ours)
    repo.switch("again")
    chunks_before = set(repo.store.list("chunks/"))
    second = repo.merge("other", "dare", density=0.25, seed=1234)
    assert second != first
    assert repo.get_commit(second).tree["w"].chunks == repo.get_commit(first).tree["w"].chunks
    assert set(repo.store.list("chunks/")) == chunks_before  # the merge's weights deduplicated
    repo.create_branch("third", c_ours)
    repo.switch("third")
    other_seed = repo.load_arrays(repo.merge("other", "dare", density=0.25, seed=99))["w"]
    assert not np.array_equal(other_seed, got)


def test_dare_without_a_seed_records_the_one_it_drew_and_that_seed_repeats_it(tmp_path):
    base = np.zeros(300)
    ours = np.arange(1, 301, dtype=np.float64)
    repo, _, c_ours, _ = forked(tmp_path, {"w": base}, {"w": ours}, {"w": base - 1})
    first = repo.merge("other", "dare_ties", density=0.5)
    seed = repo.get_commit(first).metadata["merge"]["seed"]
    assert isinstance(seed, int)
    repo.create_branch("again", c_ours)
    repo.switch("again")
    again = repo.merge("other", "dare_ties", density=0.5, seed=seed)
    assert repo.load_arrays(again)["w"].tobytes() == repo.load_arrays(first)["w"].tobytes()


def test_slerp_follows_the_arc_and_falls_back_to_linear_when_parallel():
    a, b = arr(1, 0), arr(0, 1)
    np.testing.assert_allclose(ms.slerp(a, b, 0.5), [math.sqrt(0.5)] * 2, atol=1e-15)
    np.testing.assert_allclose(ms.slerp(a, b, 1 / 3), [math.cos(math.pi / 6), 0.5], atol=1e-15)
    np.testing.assert_allclose(ms.slerp(2 * a, 2 * b, 0.5), [math.sqrt(2)] * 2, atol=1e-15)
    assert ms.slerp(arr(1, 2), arr(2, 4), 0.25).tolist() == [1.25, 2.5]  # parallel: linear
    assert ms.slerp(arr(0, 0), arr(2, 4), 0.5).tolist() == [1, 2]  # a zero vector: linear
    near = arr(1, 2) + 1e-6
    np.testing.assert_allclose(ms.slerp(arr(1, 2), near, 0.5), arr(1, 2) + 0.5e-6, atol=1e-15)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_slerp_with_a_non_finite_value_falls_back_to_linear_instead_of_dividing_by_zero(bad):
    with np.errstate(invalid="ignore", over="ignore"):
        out = ms.slerp(arr(1, bad, 3), arr(2, -4, 6), 0.5)
    assert out[0] == 1.5 and out[2] == 4.5
    assert out[1] == bad or (math.isnan(bad) and math.isnan(out[1]))


def test_ties_keeps_a_nan_visible_like_average_instead_of_trimming_it_away(tmp_path):
    base, ours, theirs = {"w": arr(0, 0, 0)}, {"w": arr(1, math.nan, 3)}, {"w": arr(2, -4, 6)}
    assert ms.trim(arr(1, math.nan, 3), 0.5)[1] != 0  # NaN ranks first, so it is kept
    repo, *_ = forked(tmp_path, base, ours, theirs)
    with np.errstate(invalid="ignore"):
        w = repo.get_weights(repo.merge("other", "ties", density=0.5))["w"].data
    assert w[0] == 0 and math.isnan(w[1]) and w[2] == 4.5


def test_slerp_of_a_float32_matrix_through_merge(tmp_path):
    base = {"m": np.zeros((2, 2), np.float32)}
    repo, *_ = forked(
        tmp_path, base, {"m": np.array([[1, 0], [0, 0]], np.float32)}, {"m": np.array([[0, 0], [0, 1]], np.float32)}
    )
    got = repo.load_arrays(repo.merge("other", "slerp", t=0.5))["m"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[math.sqrt(0.5), 0], [0, math.sqrt(0.5)]], atol=1e-7)


def test_ours_and_theirs_take_one_side_whole(tmp_path):
    base = {"w": arr(1, 2), "b": arr(0)}
    theirs = {"w": arr(5, 5), "b": arr(1, 2, 3), "new": arr(7)}  # reshaped and added: no conflict for a side
    repo, _, c_ours, c_theirs = forked(tmp_path, base, {"w": arr(3, 3), "b": arr(9)}, theirs)
    ours_merge = repo.merge("other", "ours")
    assert digests(repo, ours_merge) == digests(repo, c_ours)
    repo.create_branch("t", c_ours)
    repo.switch("t")
    theirs_merge = repo.merge("other", "theirs")
    assert digests(repo, theirs_merge) == digests(repo, c_theirs)


# ---- per-tensor choices -----------------------------------------------------------------------------------


def test_per_tensor_globs_pick_a_side_or_a_strategy_first_match_wins(tmp_path):
    base = {"embed.weight": arr(0, 0), "layer.0.w": arr(1, 2), "layer.1.w": arr(1, 2), "head.b": arr(0)}
    ours = {"embed.weight": arr(1, 1), "layer.0.w": arr(3, 2), "layer.1.w": arr(3, 2), "head.b": arr(2)}
    theirs = {"embed.weight": arr(5, 5), "layer.0.w": arr(1, 6), "layer.1.w": arr(1, 6), "head.b": arr(4)}
    repo, *_ = forked(tmp_path, base, ours, theirs)
    merged = repo.merge(
        "other", "average", per_tensor={"embed.*": "theirs", "layer.1.*": "ours", "layer.*": "task_arithmetic"}
    )
    got = repo.load_arrays(merged)
    assert got["embed.weight"].tolist() == [5, 5]
    assert got["layer.1.w"].tolist() == [3, 2]  # the first matching pattern wins over layer.*
    assert got["layer.0.w"].tolist() == [3, 6]
    assert got["head.b"].tolist() == [3]  # no pattern: the default strategy
    record = repo.get_commit(merged).metadata["merge"]
    assert record["per_tensor"] == {"embed.*": "theirs", "layer.1.*": "ours", "layer.*": "task_arithmetic"}
    assert record["base"] is not None  # task_arithmetic was used for some tensors: the base is recorded


def test_integer_and_bool_tensors_come_from_one_side_and_the_choice_is_recorded(tmp_path):
    base = {"w": arr(0, 0), "step": np.array([1], np.int64), "mask": np.array([True, False])}
    ours = {"w": arr(2, 2), "step": np.array([10], np.int64), "mask": np.array([True, True])}
    theirs = {"w": arr(4, 4), "step": np.array([20], np.int64), "mask": np.array([False, False])}
    repo, _, c_ours, _ = forked(tmp_path, base, ours, theirs)
    merged = repo.merge("other", "ties", density=1.0)
    got = repo.load_arrays(merged)
    assert got["step"].tolist() == [10] and got["mask"].tolist() == [True, True]
    assert got["w"].tolist() == [3, 3]
    assert repo.get_commit(merged).metadata["merge"]["non_float_from"] == {"mask": "ours", "step": "ours"}
    repo.create_branch("t", c_ours)
    repo.switch("t")
    merged = repo.merge("other", on_conflict="theirs")
    assert repo.load_arrays(merged)["step"].tolist() == [20]
    assert repo.get_commit(merged).metadata["merge"]["non_float_from"]["step"] == "theirs"
    repo.create_branch("u", c_ours)
    repo.switch("u")
    merged = repo.merge("other", per_tensor={"step": "theirs"})
    assert repo.load_arrays(merged)["step"].tolist() == [20]
    assert repo.load_arrays(merged)["mask"].tolist() == [True, True]


# ---- the record and reproducibility ----------------------------------------------------------------------


def test_merge_record_holds_strategy_params_base_and_seed(tmp_path):
    repo, c_base, c_ours, c_theirs = forked(tmp_path, BASE, OURS, THEIRS)
    merged = repo.merge("other", "dare_ties", [1.0, 0.5], density=0.5, seed=42, per_tensor={"w": "dare"})
    record = repo.get_commit(merged).metadata["merge"]
    assert record["strategy"] == "dare_ties" and record["seed"] == 42 and record["base"] == c_base
    assert record["params"] == {"weights": [1.0, 0.5], "density": 0.5}
    assert record["ours"] == c_ours and record["other"] == c_theirs and record["per_tensor"] == {"w": "dare"}


@pytest.mark.parametrize(
    "strategy,params",
    [("average", {}), ("ties", {"density": 0.3}), ("dare_ties", {"density": 0.3, "seed": 5}), ("slerp", {"t": 0.3})],
)
def test_same_inputs_and_params_give_bit_identical_weights(tmp_path, strategy, params):
    rng = np.random.default_rng(3)
    base = {"a": rng.standard_normal((16, 8)).astype(np.float32), "b": rng.standard_normal(8).astype(np.float16)}
    ours = {k: (v + rng.standard_normal(v.shape) * 0.1).astype(v.dtype) for k, v in base.items()}
    theirs = {k: (v + rng.standard_normal(v.shape) * 0.1).astype(v.dtype) for k, v in base.items()}
    repo, _, c_ours, _ = forked(tmp_path, base, ours, theirs)
    first = repo.merge("other", strategy, **params)
    repo.create_branch("again", c_ours)
    repo.switch("again")
    before = set(repo.store.list("chunks/"))
    second = repo.merge("other", strategy, **params)
    assert repo.get_commit(first).tree == repo.get_commit(second).tree
    assert set(repo.store.list("chunks/")) == before
    assert repo.load_arrays(second)["b"].dtype == np.float16


# ---- bad input: one clear line, nothing written ---------------------------------------------------------


@pytest.fixture
def clashing(tmp_path):
    base = {"w": arr(1, 2), "h": np.zeros(3, np.float32), "c": np.zeros(2, np.complex64)}
    ours = {"w": arr(3, 2), "h": np.ones(3, np.float32), "c": np.ones(2, np.complex64)}
    theirs = {"w": arr(1, 6), "h": np.ones(3, np.float32), "c": np.ones(2, np.complex64)}
    return forked(tmp_path, base, ours, theirs)


@pytest.mark.parametrize(
    "kwargs,error,fragments",
    [
        ({"strategy": "median"}, InvalidArgumentError, ["strategy", "median", "ties"]),
        ({"strategy": "ties"}, InvalidArgumentError, ["density", "ties needs"]),
        ({"strategy": "dare"}, InvalidArgumentError, ["density", "dare needs"]),
        ({"strategy": "slerp"}, InvalidArgumentError, ["t=None", "slerp needs"]),
        ({"strategy": "weighted"}, InvalidArgumentError, ["weights", "weighted needs"]),
        ({"strategy": "ties", "density": 0}, InvalidArgumentError, ["density=0", "(0, 1]"]),
        ({"strategy": "ties", "density": 1.5}, InvalidArgumentError, ["density=1.5", "(0, 1]"]),
        ({"strategy": "dare", "density": -0.1}, InvalidArgumentError, ["density=-0.1"]),
        ({"strategy": "dare", "density": float("nan")}, InvalidArgumentError, ["density=nan"]),
        ({"strategy": "slerp", "t": 2}, InvalidArgumentError, ["t=2", "[0, 1]"]),
        ({"strategy": "weighted", "weights": [1]}, InvalidArgumentError, ["weights=[1]", "two numbers"]),
        ({"strategy": "ties", "density": 0.5, "weights": [-1, 1]}, InvalidArgumentError, ["weights"]),
        ({"strategy": "dare", "density": 0.5, "seed": -3}, InvalidArgumentError, ["seed=-3"]),
        ({"strategy": "average", "density": 0.5}, InvalidArgumentError, ["density=0.5", "not used by average"]),
        ({"strategy": "ties", "density": 0.5, "seed": 1}, InvalidArgumentError, ["seed=1", "not used by ties"]),
        ({"per_tensor": {"h": "median"}}, InvalidArgumentError, ["per_tensor['h']", "median"]),
        ({"per_tensor": {"embed*": "ours"}}, InvalidArgumentError, ["per_tensor", "embed*", "matches no tensor"]),
        ({"per_tensor": ["h=ours"]}, InvalidArgumentError, ["per_tensor", "mapping"]),
        ({"per_tensor": {"": "ours"}}, InvalidArgumentError, ["per_tensor", "glob"]),
        ({"per_tensor": {"h": "ties"}}, InvalidArgumentError, ["density", "ties needs"]),
        ({"strategy": "ties", "density": 0.5}, InvalidArgumentError, ["strategy='ties'", "c is complex64", "side"]),
        ({"on_conflict": "both"}, InvalidArgumentError, ["on_conflict"]),
    ],
)
def test_bad_input_is_refused_in_one_line_before_anything_is_written(clashing, kwargs, error, fragments):
    repo, _, c_ours, _ = clashing
    before = snapshot(repo)
    with pytest.raises(error) as exc:
        repo.merge("other", **kwargs)
    message = str(exc.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert repo.head_commit() == c_ours and snapshot(repo) == before


@pytest.mark.parametrize(
    "theirs_h,fragment",
    [(np.ones(4, np.float32), "h (shape (3,) vs (4,))"), (np.ones(3, np.float64), "h (dtype float32 vs float64)")],
)
def test_shape_and_dtype_mismatches_are_named_and_nothing_is_written(tmp_path, theirs_h, fragment):
    base = {"w": arr(1, 2), "h": np.zeros(3, np.float32)}
    repo, _, c_ours, _ = forked(
        tmp_path, base, {"w": arr(3, 2), "h": np.ones(3, np.float32)}, {"w": arr(1, 6), "h": theirs_h}
    )
    before = snapshot(repo)
    for strategy, params in [("average", {}), ("ties", {"density": 0.5}), ("slerp", {"t": 0.5})]:
        with pytest.raises(MergeConflictError) as exc:
            repo.merge("other", strategy, **params)
        assert fragment in str(exc.value) and "\n" not in str(exc.value)
    assert repo.head_commit() == c_ours and snapshot(repo) == before
    # a side for that tensor resolves it
    merged = repo.merge("other", "ties", density=0.5, per_tensor={"h": "theirs"})
    assert repo.load_arrays(merged)["h"].dtype == theirs_h.dtype


def test_strategies_that_need_a_merge_base_refuse_unrelated_histories(tmp_path):
    repo = Repository(tmp_path / "repo", init=True)
    repo.stage_weights({"w": arr(1, 2)})
    repo.commit("a")
    repo.store.compare_and_swap("HEAD", repo.store.get_ref("HEAD"), "ref: heads/orphan")  # an unrelated root
    repo.stage_weights({"w": arr(5, 6)})
    repo.commit("orphan root")
    repo.switch("main")
    before = snapshot(repo)
    with pytest.raises(CoralError, match="no common ancestor"):
        repo.merge("orphan", "ties", density=0.5)
    assert snapshot(repo) == before
    assert repo.load_arrays(repo.merge("orphan"))["w"].tolist() == [3, 4]  # average needs no base


# ---- already merged, detached HEAD ----------------------------------------------------------------------


def test_merging_what_is_already_merged_changes_nothing(tmp_path):
    repo, _, c_ours, _ = forked(tmp_path, BASE, OURS, THEIRS)
    merged = repo.merge("other", "ties", density=0.5)
    before = snapshot(repo)
    assert repo.merge("other", "ties", density=0.5) == merged
    assert repo.merge("HEAD~1") == merged and snapshot(repo) == before


def test_merge_on_a_detached_head_warns_that_it_would_be_lost(tmp_path, caplog):
    repo, _, c_ours, c_theirs = forked(tmp_path, BASE, OURS, THEIRS)
    repo.switch(c_ours)  # detached
    with caplog.at_level(logging.WARNING, logger="coral"):
        merged = repo.merge("other")
    assert repo.current_branch is None and repo.head_commit() == merged
    assert any("detached" in r.message and "lost" in r.message and merged[:8] in r.message for r in caplog.records)


def test_merge_refuses_while_tensors_are_staged(tmp_path):
    repo, _, c_ours, _ = forked(tmp_path, BASE, OURS, THEIRS)
    repo.stage_weights({"w": arr(0, 0)})
    with pytest.raises(CoralError, match="staged"):
        repo.merge("other")
    assert repo.head_commit() == c_ours
