"""A repository from someone else: no code runs on open/log/load/fsck; escapes, absurd sizes are refused."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import relh_hostile as H
from coral import Repository
from coral.errors import AllocationError, CoralError, CorruptObjectError, InvalidNameError
from coral.objects.tensors import CHUNK_BYTES
from coral.training import CheckpointConfig, CheckpointManager

BAD_NAMES = ["..", "../x", "a/../../b", "/etc/passwd", "/abs", "a\x00b", "\x00", "C:\\windows", "a/../b"]


def _honest_repo(path: Path) -> tuple[str, str]:
    with Repository(path, init=True) as r:
        r.stage_weights({"w": np.arange(8, dtype=np.float32), "b": np.ones(3, np.int64)})
        c1 = r.commit("one")
        r.stage_weights({"w": np.arange(8, dtype=np.float32) * 2, "b": np.ones(3, np.int64)})
        c2 = r.commit("two")
    return c1, c2


def _sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp_path/sandbox/repo`` plus a sibling folder that must stay empty."""
    outside = tmp_path / "sandbox" / "outside"
    outside.mkdir(parents=True)
    return tmp_path / "sandbox" / "repo", outside


def _everything_outside(tmp_path: Path, repo: Path) -> set[str]:
    return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if repo not in (p, *p.parents)}


# ---- no pickle, no code ------------------------------------------------------------------------------------
def test_planted_pickle_payloads_never_run(tmp_path):
    repo, _ = _sandbox(tmp_path)
    c1, _ = _honest_repo(repo)
    marker = tmp_path / "PWNED"
    payload = H.pickle_payload(marker)
    # 1. a commit whose tree names a chunk that is a pickle (stored with a valid seal, as Coral would)
    fake_chunk = "ab" * 32
    with Repository(repo) as r:
        r.store.put(f"chunks/ab/{fake_chunk[2:]}", payload)
    evil = H.plant_commit(
        repo, H.commit_doc({"w": {"dtype": "uint8", "shape": [len(payload)], "chunks": [fake_chunk]}})
    )
    H.write_ref(repo, "heads/evil-chunk", evil)
    # 2. a "commit" that is a pickle, with a branch pointing at it
    H.write_ref(repo, "heads/evil-commit", H.plant_commit(repo, payload))
    # 3. the checkpoint manager's history, a tag, the config and HEAD-adjacent refs hold pickles
    H.write_ref(repo, "meta/checkpoints/exp", payload)
    H.write_ref(repo, "tags/evil", payload)
    H.write_ref(repo, "config", payload)
    # 4. torch-style pickles lying next to the data
    for name in ("model.pt", "optimizer.pt", "state.pkl", ".coral/objects/x.pkl"):
        (repo / name).write_bytes(payload)
    script = Path(H.__file__).resolve()
    res = subprocess.run(
        [sys.executable, str(script), json.dumps({"repo": str(repo), "marker": str(marker)})],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["marker"] is False and not marker.exists()
    assert report["events"] == [], report["events"]
    outcomes = report["outcomes"]
    crashes = {k: v for k, v in outcomes.items() if v.startswith("CRASH")}
    assert crashes == {}, crashes
    # the honest commits still load; the planted ones are refused with Coral errors
    assert outcomes["open"] == "ok" and outcomes[f"load {c1[:12]}"] == "ok"
    assert outcomes[f"load {evil[:12]}"].startswith("CoralError")
    assert outcomes["log evil-commit"] == "CoralError:CorruptObjectError"
    assert outcomes["manager"] == "CoralError:CorruptObjectError"
    assert outcomes["fsck"] == "ok"  # fsck reports damage in its result instead of raising
    with Repository(repo) as r:
        report = r.fsck()
    assert not report["ok"]
    assert any("evil" in e for e in report["errors"]), report["errors"]


def test_no_unpickling_or_eval_anywhere_in_coral():
    import importlib.util
    import re

    import coral

    roots = [Path(coral.__file__).parent]
    for plugin in ("coral_torch", "coral_lightning", "coral_hf", "coral_jax"):
        spec = importlib.util.find_spec(plugin)
        if spec is not None and spec.origin:
            roots.append(Path(spec.origin).parent)
    offenders = []
    for root in roots:
        for p in root.rglob("*.py"):
            text = p.read_text()
            for m in re.finditer(
                r"\b(pickle\.loads?|Unpickler|eval|exec|marshal\.loads?|yaml\.load)\("
                r"|allow_pickle\s*=\s*True",
                text,
            ):
                offenders.append(f"{p.name}: {m.group(0)}")
            for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
                if "weights_only=True" not in m.group(1):
                    offenders.append(f"{p.name}: {m.group(0)}")
    assert offenders == []


# ---- names that escape -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BAD_NAMES)
def test_escaping_names_are_refused_by_the_api(tmp_path, name):
    repo, _ = _sandbox(tmp_path)
    _honest_repo(repo)
    before = _everything_outside(tmp_path, repo)
    with Repository(repo) as r:
        for call in (
            lambda: r.create_branch(name),
            lambda: r.tag_version(name),
            lambda: r.delete_branch(name),
            lambda: r.stage_weights({name: np.zeros(2)}),
        ):
            with pytest.raises(InvalidNameError):
                call()
        for call in (
            lambda: r.switch(name),
            lambda: r.resolve(name),
            lambda: r.get_weights(name),
            lambda: r.log(name),
            lambda: r.get_weights("main", names=[name]),
        ):
            with pytest.raises(CoralError):
                call()
    with pytest.raises(CoralError):
        CheckpointManager(Repository(repo), experiment_name=name)
    assert _everything_outside(tmp_path, repo) == before


@pytest.mark.parametrize(
    "value",
    [
        "../../../../etc/passwd",
        "/etc/passwd",
        "ab\x00cd",
        "x" * 64,
        "ref: heads/../../x",
        "0" * 63 + "\n",
        "\xff\xfe" + "a" * 62,
    ],
)
@pytest.mark.parametrize("ref", ["heads/main", "HEAD", "tags/v1"])
def test_planted_refs_with_escapes_are_refused(tmp_path, ref, value):
    repo, _ = _sandbox(tmp_path)
    honest = _honest_repo(repo)
    before = _everything_outside(tmp_path, repo)
    content = json.dumps({"commit": value}) if ref.startswith("tags/") else value
    H.write_ref(repo, ref, content)
    target = "v1" if ref.startswith("tags/") else ("HEAD" if ref == "HEAD" else "main")
    with Repository(repo) as r:
        for call in (lambda: r.resolve(target), lambda: r.get_weights(target), lambda: r.log(target)):
            with pytest.raises(CoralError):
                call()
        report = r.fsck()
        assert not report["ok"], report
        try:
            r.gc()  # may refuse; must never delete history that a damaged ref hides
        except CoralError:
            pass
    with Repository(repo) as r:
        for c in honest:
            assert r.load_arrays(c)["w"].shape == (8,)
    assert _everything_outside(tmp_path, repo) == before


@pytest.mark.parametrize(
    "entry",
    [
        {"../../evil": {"dtype": "float32", "shape": [1], "chunks": ["ab" * 32]}},
        {"/etc/passwd": {"dtype": "float32", "shape": [1], "chunks": ["ab" * 32]}},
        {"a\x00b": {"dtype": "float32", "shape": [1], "chunks": ["ab" * 32]}},
        {"w": {"dtype": "float32", "shape": [1], "chunks": ["../../../../../../etc/passwd"]}},
        {"w": {"dtype": "float32", "shape": [1], "chunks": ["/etc/passwd"]}},
        {"w": {"dtype": "float32", "shape": [1], "chunks": ["ab" * 31 + "\x00\x00"]}},
    ],
    ids=["dotdot-name", "abs-name", "nul-name", "dotdot-chunk", "abs-chunk", "nul-chunk"],
)
def test_planted_manifests_with_escapes_are_refused(tmp_path, entry):
    repo, _ = _sandbox(tmp_path)
    c1, _ = _honest_repo(repo)
    evil = H.plant_commit(repo, H.commit_doc(entry, parents=[c1]))
    H.write_ref(repo, "heads/main", evil)
    with Repository(repo) as r:
        for call in (lambda: r.log(), lambda: r.get_weights("main"), lambda: r.load_arrays(evil)):
            with pytest.raises(CorruptObjectError) as err:
                call()
            assert evil in str(err.value) or "manifest" in str(err.value)
        report = r.fsck()
        assert not report["ok"] and any(evil in e for e in report["errors"]), report["errors"]


ABSURD = [[10**30], [-1], [2**40, 2**40], [1] * 65, ["x"], [1.5e300], "abc", [2**63], [[1]], [None]]


@pytest.mark.parametrize("shape", ABSURD, ids=[str(i) for i in range(len(ABSURD))])
def test_absurd_shapes_are_refused_before_any_allocation(tmp_path, shape):
    repo, _ = _sandbox(tmp_path)
    c1, _ = _honest_repo(repo)
    evil = H.plant_commit(
        repo, H.commit_doc({"w": {"dtype": "float64", "shape": shape, "chunks": ["ab" * 32]}}, parents=[c1])
    )
    H.write_ref(repo, "heads/main", evil)
    tracemalloc.start()
    try:
        with Repository(repo) as r:
            for call in (lambda: r.log(), lambda: r.get_weights("main"), lambda: r.load_arrays("main")):
                with pytest.raises(CorruptObjectError, match="manifest|unreadable commit"):
                    call()
            assert not r.fsck()["ok"]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, f"peak {peak} bytes while refusing shape {shape!r}"


@pytest.mark.parametrize("chunks", [0, 1, 3], ids=["too-few-0", "too-few-1", "too-many"])
def test_manifest_sizes_that_disagree_with_the_shape_are_refused(tmp_path, chunks):
    repo, _ = _sandbox(tmp_path)
    _honest_repo(repo)
    shape = [CHUNK_BYTES // 8 + 1] if chunks != 3 else [4]  # 2 chunks needed, or 1
    evil = H.plant_commit(
        repo, H.commit_doc({"w": {"dtype": "float64", "shape": shape, "chunks": ["ab" * 32] * chunks}})
    )
    H.write_ref(repo, "heads/evil", evil)
    with Repository(repo) as r, pytest.raises(CorruptObjectError, match="chunks for"):
        r.get_weights("evil")


_BIG_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, resource.RLIM_INFINITY))
from coral import Repository
from coral.errors import AllocationError
try:
    Repository(sys.argv[1]).load_arrays("evil")
    print("loaded")
except AllocationError as exc:
    print("AllocationError", exc)
"""


def test_a_consistent_but_huge_manifest_gives_a_coral_error_not_a_crash(tmp_path):
    # 64 GiB of zeros is 16384 references to one 4 MiB chunk of zeros: a "zip bomb" of a manifest
    repo, _ = _sandbox(tmp_path)
    _honest_repo(repo)
    with Repository(repo) as r:
        r.stage_weights({"z": np.zeros(CHUNK_BYTES, np.uint8)})
        zero = r.commit("zeros")
        zero_chunk = r.get_commit(zero).tree["z"].chunks[0]
    n = 16384
    evil = H.plant_commit(
        repo, H.commit_doc({"z": {"dtype": "uint8", "shape": [n * CHUNK_BYTES], "chunks": [zero_chunk] * n}})
    )
    H.write_ref(repo, "heads/evil", evil)
    res = subprocess.run(
        [sys.executable, "-c", _BIG_CHILD, str(repo)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("AllocationError") and "'z'" in res.stdout, res.stdout
    assert issubclass(AllocationError, MemoryError)


# ---- symlinks planted in the repository --------------------------------------------------------------------
def test_symlinked_store_folders_pointing_outside_are_refused(tmp_path):
    repo, outside = _sandbox(tmp_path)
    _honest_repo(repo)
    tmp = repo / ".coral" / "tmp"
    tmp.rmdir()
    tmp.symlink_to(outside, target_is_directory=True)
    (outside / ".put-victim").write_text("precious")
    with pytest.raises(CorruptObjectError, match="outside the repository"):
        Repository(repo)
    assert (outside / ".put-victim").read_text() == "precious"


def test_symlinked_fanout_folders_never_receive_writes(tmp_path):
    repo, outside = _sandbox(tmp_path)
    _honest_repo(repo)
    chunks = repo / ".coral" / "objects" / "chunks"
    for i in range(256):  # every fan-out folder a new chunk could land in (those holding no chunk yet)
        d = chunks / f"{i:02x}"
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
        if not d.exists():
            d.symlink_to(outside, target_is_directory=True)
    victim = outside / ("cd" * 31)
    victim.write_text("precious")
    with Repository(repo) as r:
        with pytest.raises(CorruptObjectError, match="outside the repository"):
            r.stage_weights({"new": np.random.default_rng(1).standard_normal(64)})
        r.gc()
    assert sorted(p.name for p in outside.iterdir()) == [victim.name] and victim.read_text() == "precious"


def test_symlinked_ref_and_lock_files_are_refused(tmp_path):
    repo, outside = _sandbox(tmp_path)
    _honest_repo(repo)
    secret = outside / "secret"
    secret.write_text("0" * 64)
    link = repo / ".coral" / "refs" / "heads" / "linked"
    link.symlink_to(secret)
    lock = repo / ".coral" / "locks" / "gc.lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(outside / "created-by-lock")
    with Repository(repo) as r:
        assert "linked" not in r.list_branches()  # a symlinked ref is ignored, not followed
        with pytest.raises(CorruptObjectError, match="symlink"):
            r.gc()
    assert not (outside / "created-by-lock").exists() and secret.read_text() == "0" * 64


def test_manager_state_from_a_hostile_history_document_is_refused(tmp_path):
    repo, _ = _sandbox(tmp_path)
    _honest_repo(repo)
    H.write_ref(repo, "meta/checkpoints/exp", "{not json")
    with pytest.raises(CorruptObjectError, match="meta/checkpoints/exp"):
        CheckpointManager(Repository(repo), CheckpointConfig(), experiment_name="exp")
