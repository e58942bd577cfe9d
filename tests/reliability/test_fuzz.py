"""Hypothesis-generated configs, states, metrics, weights, refs and manifests: a Coral error or success,
never a crash from deep inside, never a write outside the repository.

``CORAL_FUZZ_EXAMPLES`` sets the examples per test (bench/reliability.py runs many more).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import relh_hostile as H
from coral import Repository
from coral.core.dtypes import DTYPES
from coral.errors import ConfigError, CoralError, InvalidArgumentError
from coral.training import CheckpointConfig, CheckpointManager, TrainingState
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("CORAL_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)

CONFIG_FIELDS = list(CheckpointConfig.__dataclass_fields__)
STATE_FIELDS = list(TrainingState.__dataclass_fields__)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
odd_values = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        None,
        10**400,
        -(10**400),
        1 + 2j,
        b"bytes",
        "auto",
        "",
        np.float32(np.nan),
        np.float64(np.inf),
        np.int64(-3),
        np.bool_(True),
        np.array(1.5),
        np.array([1.0, 2.0]),
        np.array([], dtype=np.float32),
        object(),
        [float("nan")],
        {"k": float("inf")},
        (1, 2),
        {1, 2},
        True,
        0,
        -1,
    ]
)
anything = json_values | odd_values
escaping = st.sampled_from(
    [
        "..",
        "../x",
        "a/../../b",
        "/etc/passwd",
        "a\x00b",
        "C:\\x",
        "HEAD",
        "~",
        "^",
        "a~1",
        "HEAD~99",
        "main^^",
        "-rf",
        ".hidden",
        "a/",
        "/",
        "a//b",
        "a.lock",
        "é",
        " ",
        "x" * 300,
    ]
)


class Sandbox:
    """A repository in ``root/repo``, the working directory at ``root``; nothing may appear outside repo."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo_dir = root / "repo"
        with Repository(self.repo_dir, init=True) as r:
            r.stage_weights({"w": np.arange(3, dtype=np.float64), "b": np.ones(2, np.int32)})
            self.honest = r.commit("honest")
        self.repo = Repository(self.repo_dir)
        self.outside = self._outside()

    def _outside(self) -> set[str]:
        return {str(p) for p in self.root.rglob("*") if self.repo_dir not in (p, *p.parents)}

    def check_nothing_outside(self) -> None:
        assert self._outside() == self.outside, (
            f"written outside the repository: {self._outside() - self.outside}"
        )


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    monkeypatch.chdir(tmp_path)
    box = Sandbox(tmp_path)
    yield box
    box.repo.close()


def coral_or_ok(fn: Callable[[], Any]) -> tuple[bool, Any]:
    """(True, value) on success, (False, error) on a CoralError; anything else fails the test."""
    try:
        return True, fn()
    except CoralError as exc:
        assert str(exc), f"{type(exc).__name__} with an empty message"
        return False, exc


def same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (metrics come back as they went in)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# ---- configs -----------------------------------------------------------------------------------------------
@FUZZ
@given(st.dictionaries(st.sampled_from(CONFIG_FIELDS) | st.text(max_size=12), anything, max_size=6))
def test_any_config_is_built_or_refused_with_a_config_error(kw):
    ok, _ = coral_or_ok(lambda: CheckpointConfig.from_dict(kw))
    if not ok:
        with pytest.raises(ConfigError):
            CheckpointConfig.from_dict(kw)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from([f"CORAL_{f.upper()}" for f in CONFIG_FIELDS]), st.text(max_size=12), max_size=5
    )
)
def test_any_config_environment_is_read_or_refused(env):
    coral_or_ok(lambda: CheckpointConfig.from_env(env))


# ---- training states and metric values ---------------------------------------------------------------------
@FUZZ
@given(
    fields=st.dictionaries(st.sampled_from(STATE_FIELDS), anything, max_size=5),
    metrics=st.dictionaries(st.text(max_size=8), anything, max_size=4),
    watch=st.sampled_from([None, "loss", "acc"]),
)
def test_any_state_and_metrics_save_or_give_a_coral_error(sandbox, fields, metrics, watch):
    fields = dict(fields, metrics=metrics)
    ok, state = coral_or_ok(lambda: TrainingState(**fields))
    if not ok:
        assert isinstance(state, InvalidArgumentError)
        return
    cfg = CheckpointConfig(save_on_best_metric=watch, save_random_state=False)
    mgr = CheckpointManager(sandbox.repo, cfg, experiment_name="fuzz")
    saved, h = coral_or_ok(lambda: mgr.save_checkpoint({"w": np.arange(3.0)}, state, force=True))
    sandbox.check_nothing_outside()
    if saved:
        assert h is not None
        back = mgr.load_checkpoint(h)["state"]
        assert back.global_step == state.global_step and back.epoch == state.epoch
        assert same(back.metrics, state.metrics) or not all(
            isinstance(v, (int, float, str, type(None))) for v in state.metrics.values()
        )
    assert Repository(sandbox.repo_dir).fsck()["ok"]


# ---- weights -----------------------------------------------------------------------------------------------
arrays = st.one_of(
    st.sampled_from(sorted(DTYPES)).flatmap(
        lambda d: st.integers(0, 6).map(
            lambda n, d=d: np.frombuffer(np.random.default_rng(n).bytes(n * 16), np.uint8)[
                : n * DTYPES[d].itemsize
            ].view(DTYPES[d])
        )
    ),
    st.sampled_from(
        [
            np.array(["a", "b"]),
            np.array([object()]),
            np.arange(6.0)[::2],
            np.arange(4, dtype=">i4"),
            np.float64(3.0),
            np.array(2.5),
            np.zeros((2, 0, 3)),
            np.zeros(3, dtype="V4"),
        ]
    ),
    anything,
)


@FUZZ
@given(st.dictionaries(st.text(max_size=12) | escaping, arrays, max_size=4))
def test_any_weights_are_stored_bit_exact_or_refused(sandbox, weights):
    ok, _ = coral_or_ok(lambda: sandbox.repo.stage_weights(weights))
    sandbox.check_nothing_outside()
    if not ok:
        sandbox.repo._staged.clear()
        return
    done, h = coral_or_ok(lambda: sandbox.repo.commit("fuzz", allow_empty=True))
    if done:
        back = sandbox.repo.load_arrays(h)
        for name, value in weights.items():
            a = np.array(value, order="C")  # (ascontiguousarray would turn 0-d into shape (1,))
            assert (
                back[name].shape == a.shape
                and back[name].tobytes() == a.astype(a.dtype.newbyteorder("<")).tobytes()
            )


# ---- refs --------------------------------------------------------------------------------------------------
@FUZZ
@given(st.text(max_size=30) | escaping)
def test_any_ref_string_resolves_or_gives_a_coral_error(sandbox, ref):
    r = sandbox.repo
    for call in (
        lambda: r.resolve(ref),
        lambda: r.get_weights(ref),
        lambda: r.log(ref),
        lambda: r.diff("main", ref),
        lambda: r.get_weights("main", names=[ref]),
    ):
        coral_or_ok(call)
    made, _ = coral_or_ok(lambda: r.create_branch(ref))
    if made:
        assert (sandbox.repo_dir / ".coral" / "refs" / "heads" / ref).is_file()
        coral_or_ok(lambda: r.switch(ref))
        r.switch("main")
        r.delete_branch(ref)
    tagged, _ = coral_or_ok(lambda: r.tag_version(ref, description=ref))
    if tagged:
        assert (sandbox.repo_dir / ".coral" / "refs" / "tags" / ref).is_file()
        r.delete_tag(ref)
    coral_or_ok(lambda: r.delete_branch(ref))
    sandbox.check_nothing_outside()
    assert r.current_branch == "main" and r.resolve("main") == sandbox.honest


# ---- manifests ---------------------------------------------------------------------------------------------
def _entries(chunk_ids: list[str]) -> st.SearchStrategy[Any]:
    ids = st.sampled_from([*chunk_ids, "ab" * 32, "../" * 3 + "x", "/etc/passwd", "A" * 64]) | anything
    entry = st.fixed_dictionaries(
        {
            "dtype": st.sampled_from([*sorted(DTYPES)[:6], "object", "<f4", ""]) | anything,
            "shape": st.lists(st.integers(-3, 2**45) | anything, max_size=3) | anything,
            "chunks": st.lists(ids, max_size=3) | anything,
        },
        optional={"layer_type": anything, "extra": anything},
    )
    return entry | anything


@FUZZ
@given(data=st.data())
def test_any_planted_manifest_loads_or_gives_a_coral_error(sandbox, data):
    honest = sandbox.repo.get_commit(sandbox.honest)
    chunk_ids = [c for e in honest.tree.values() for c in e.chunks]
    doc = data.draw(
        st.fixed_dictionaries(
            {
                "format": st.just(1) | anything,
                "parents": st.lists(
                    st.sampled_from([sandbox.honest, "0" * 64, "../x"]) | anything, max_size=2
                )
                | anything,
                "message": st.text(max_size=10) | anything,
                "metadata": json_values,
                "time": st.floats() | anything,
                "tree": st.dictionaries(
                    st.sampled_from(["w", "b"]) | st.text(max_size=8) | escaping,
                    _entries(chunk_ids),
                    max_size=3,
                )
                | anything,
            },
        )
    )
    try:
        cid = H.plant_commit(sandbox.repo_dir, doc)
    except (TypeError, ValueError):
        return  # not JSON at all: nothing to plant
    H.write_ref(sandbox.repo_dir, "heads/fuzz", cid)
    with Repository(sandbox.repo_dir) as r:
        coral_or_ok(lambda: r.log("fuzz"))
        coral_or_ok(lambda: {n: w.data for n, w in r.get_weights("fuzz").items()})
        coral_or_ok(lambda: r.load_arrays("fuzz"))
        coral_or_ok(lambda: r.diff("main", "fuzz"))
        coral_or_ok(r.stats)
        report = r.fsck()  # never raises: damage is reported
        assert isinstance(report["ok"], bool)
        assert r.load_arrays(sandbox.honest)["w"].tobytes() == np.arange(3, dtype=np.float64).tobytes()
    sandbox.check_nothing_outside()


@FUZZ
@given(st.binary(max_size=64) | st.text(max_size=40).map(str.encode))
def test_any_planted_ref_file_gives_a_coral_error(sandbox, raw):
    for ref in ("heads/main", "tags/t", "HEAD", "meta/checkpoints/fuzz"):
        H.write_ref(sandbox.repo_dir, ref, raw)
        with Repository(sandbox.repo_dir) as r:
            for call in (
                r.log,
                lambda: r.log("main"),
                lambda: r.resolve("t"),
                r.list_tags,
                r.list_branches,
                lambda: CheckpointManager(r, experiment_name="fuzz"),
            ):
                coral_or_ok(call)
            assert isinstance(r.fsck()["ok"], bool)
            coral_or_ok(r.gc)
            assert r.load_arrays(sandbox.honest)["w"].shape == (3,)  # gc never freed honest history
    H.write_ref(sandbox.repo_dir, "heads/main", sandbox.honest)
    H.write_ref(sandbox.repo_dir, "HEAD", "ref: heads/main")
    sandbox.check_nothing_outside()
