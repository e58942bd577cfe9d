"""Refs that cannot lose history (issue 34): reflog, REF@{N}, validated refs, repair, gc keeping the reflog's reach."""

from __future__ import annotations

import json

import numpy as np
import pytest
from coral import Repository
from coral.cli.main import main
from coral.errors import CorruptRefError, RefNotFoundError
from coral.training import CheckpointConfig, CheckpointManager, TrainingState


def w(i: int) -> dict[str, np.ndarray]:
    return {"w": np.full(64, i, np.float32)}


@pytest.fixture
def repo(tmp_path):
    with Repository(tmp_path / "r", init=True) as r:
        yield r


@pytest.fixture
def three(repo):
    """main: c0 -> c1 -> c2."""
    commits = [repo.commit_weights(w(i), f"c{i}") for i in range(3)]
    repo.wait()  # background packing done: snapshots see only what a test writes
    return repo, commits


def ref_file(repo: Repository, ref: str):
    return repo.path / ".coral" / "refs" / ref


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# ---- the reflog ----------------------------------------------------------------------------------------------


def test_every_update_is_logged_with_old_new_time_and_reason(three):
    repo, (c0, c1, c2) = three
    repo.create_branch("exp", start=c1)
    repo.switch("exp")
    c3 = repo.commit_weights(w(3), "on exp")
    repo.switch("main")
    repo.merge("exp", message="merge exp")
    merged = repo.head_commit()
    repo.tag_version("v1", commit_ref=c0)
    repo.move_tag("best-run", c1, "best loss=1")
    repo.move_tag("best-run", c2, "best loss=0.5")
    repo.delete_branch("exp")  # merged into main: -d is enough
    repo.reset_branch("main", c2)
    main_log = repo.reflog("main")
    assert [(e["old"], e["new"]) for e in main_log] == [(merged, c2), (c2, merged), (c1, c2), (c0, c1), (None, c0)]
    assert [e["reason"].split(":")[0] for e in main_log] == ["reset", "commit (merge)", "commit", "commit", "commit"]
    assert all(isinstance(e["time"], float) for e in main_log)
    assert [(e["old"], e["new"], e["reason"].split(":")[0]) for e in repo.reflog("exp")] == [
        (c3, None, "branch"), (c1, c3, "commit"), (None, c1, "branch")]
    assert [e["new"] for e in repo.reflog("best-run")] == [c2, c1]
    assert repo.reflog("v1")[0]["new"] == c0
    head = repo.reflog("HEAD")
    assert [e["new"] for e in head] == ["ref: heads/main", "ref: heads/exp"]
    assert head[1]["commit"] == c1 and "switch" in head[1]["reason"]


def test_ref_at_n_resolves_like_git(three):
    repo, (c0, c1, c2) = three
    assert repo.resolve("main@{0}") == c2 and repo.resolve("main@{1}") == c1 and repo.resolve("main@{2}") == c0
    assert repo.resolve("main@{1}~1") == c0
    assert repo.load_arrays("main@{2}")["w"][0] == 0
    with pytest.raises(RefNotFoundError, match="only 3 entries"):
        repo.resolve("main@{3}")


def test_retention_moving_a_best_tag_is_logged(repo):
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1, save_on_best_metric="loss"),
                          experiment_name="e")
    hashes = [m.save_checkpoint(w(i), TrainingState(global_step=i + 1, loss=1.0 / (i + 1))) for i in range(3)]
    assert [e["new"] for e in repo.reflog("best-e")] == hashes[::-1]


# ---- a way back -------------------------------------------------------------------------------------------------


def test_deleted_branch_comes_back_through_its_reflog_even_after_gc(three):
    repo, (c0, _c1, _c2) = three
    repo.create_branch("exp", start=c0)
    repo.switch("exp")
    lost = repo.commit_weights(w(9), "only on exp")
    repo.switch("main")
    repo.delete_branch("exp", force=True)
    repo.gc()
    assert repo.reflog("exp")[0]["new"] is None
    assert repo.reset_branch("exp", "exp@{1}") == lost
    assert repo.load_arrays("exp")["w"][0] == 9
    assert repo.reflog("exp")[0]["reason"].startswith("reset")


def test_commit_dropped_by_a_mistaken_reset_survives_gc_until_the_reflog_expires(three):
    repo, (c0, _c1, c2) = three
    repo.reset_branch("main", c0)  # the mistake: c1 and c2 are on no branch now
    assert repo.gc()["objects_removed"] == 0
    assert repo.fsck()["unreferenced_objects"] == 0  # the reflog still reaches them
    assert repo.resolve("main@{1}") == c2
    repo.reset_branch("main", "main@{1}")
    assert repo.load_arrays("main")["w"][0] == 2 and [c.message for c in repo.log()] == ["c2", "c1", "c0"]
    repo.reset_branch("main", c0)
    result = repo.gc(expire_reflog="now")
    assert result["objects_removed"] > 0 and result["reflog_entries_expired"] > 0
    with pytest.raises(RefNotFoundError):
        repo.get_commit(c2)
    assert repo.reflog("main")[0]["new"] == c0  # the newest entry (the ref's value) is always kept
    with pytest.raises(RefNotFoundError, match="only 1 entries"):
        repo.resolve("main@{1}")


def test_reflog_expiry_is_configurable(three):
    repo, (c0, _c1, c2) = three
    repo.reset_branch("main", c0)
    raw = repo.store.get_ref("config")
    repo.store.compare_and_swap("config", raw, json.dumps({**json.loads(raw), "reflog_expire": "now"}))
    repo.gc()
    with pytest.raises(RefNotFoundError):
        repo.get_commit(c2)


# ---- no writes on top of damage ----------------------------------------------------------------------------------

DAMAGE = {
    "garbage": "garbage-not-a-hash",
    "empty": "",
    "path": "../../../etc/passwd",
    "missing-commit": "ab" * 32,
}


def _snapshot(repo: Repository) -> dict[str, bytes]:
    root = repo.path / ".coral"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and "locks" not in p.parts}


@pytest.mark.parametrize("content", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_branch_stops_every_command_and_nothing_is_written(three, content, capsys):
    repo, (c0, c1, c2) = three
    repo.create_branch("other", start=c1)
    ref_file(repo, "heads/main").write_text(content)
    before = _snapshot(repo)
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1), experiment_name="t")
    calls = {
        "log": lambda: repo.log(),
        "commit": lambda: repo.commit_weights(w(5), "on top of damage"),
        "stage+commit": lambda: (repo.stage_weights(w(6)), repo.commit("x")),
        "switch": lambda: repo.switch("main"),
        "merge": lambda: repo.merge("other"),
        "gc": lambda: repo.gc(expire_reflog="now"),
        "resolve": lambda: repo.resolve("main"),
        "manager": lambda: m.save_checkpoint(w(7), TrainingState(global_step=1), force=True),
    }
    for name, call in calls.items():
        with pytest.raises(CorruptRefError) as err:
            call()
        assert "heads/main" in str(err.value) and repr(content)[1:-1][:20] in str(err.value), name
        assert err.value.ref == "heads/main" and err.value.content == content
    repo.staging.clear()
    after = _snapshot(repo)
    assert {k: v for k, v in after.items() if not k.startswith(("tmp", "objects/chunks"))} == {
        k: v for k, v in before.items() if not k.startswith(("tmp", "objects/chunks"))}
    p = str(repo.path)
    for argv in (["log"], ["status"]):
        code, out, err = cli(capsys, "-C", p, *argv)
        assert code == 1 and "damaged ref heads/main" in err and "No commits yet" not in out
    report = repo.fsck()
    assert not report["ok"]
    damage = report["damaged_refs"][0]
    assert damage["ref"] == "heads/main" and damage["last_good"] == c2
    assert damage["restore"] == f"coral branch --force main {c2}"
    code, out, _ = cli(capsys, "-C", p, "fsck")
    assert code == 1 and f"restore with: coral branch --force main {c2}" in out
    code, out, _ = cli(capsys, "-C", p, "branch", "--force", "main", c2)
    assert code == 0 and repo.log()[0].hash == c2 and repo.fsck()["ok"]
    assert repo.reflog("main")[0]["reason"].startswith("reset") and repo.reflog("main")[0]["old"] == content.strip()


def test_corrupt_ref_error_is_exported_where_the_other_ref_errors_are():
    import coral

    assert coral.CorruptRefError is CorruptRefError and issubclass(CorruptRefError, coral.CoralError)


def test_a_ref_with_blanks_around_it_reads_as_its_value(three):
    repo, (_c0, _c1, c2) = three
    ref_file(repo, "heads/main").write_text(f"  {c2}\n")
    assert repo.resolve("main") == c2 and repo.log()[0].hash == c2
    c3 = repo.commit_weights(w(3), "after a hand edit")
    assert repo.get_commit(c3).parents == [c2]
    assert ref_file(repo, "heads/main").read_text() == c3
    assert repo.fsck()["ok"]


def test_a_damaged_head_or_tag_is_named_by_fsck(three):
    repo, (c0, _c1, c2) = three
    repo.tag_version("v1", commit_ref=c0)
    ref_file(repo, "tags/v1").write_text("{not json")
    ref_file(repo, "HEAD").write_text("ref: heads/../../x")
    report = repo.fsck()
    refs = {d["ref"]: d for d in report["damaged_refs"]}
    assert refs["tags/v1"]["last_good"] == c0 and "coral tag -d v1" in refs["tags/v1"]["restore"]
    assert "HEAD" in refs
    with pytest.raises(CorruptRefError, match="HEAD"):
        repo.log()
    with pytest.raises(CorruptRefError):
        repo.gc()


def test_repairing_a_damaged_branch_keeps_its_history_before_the_damage(three, capsys):
    repo, (c0, c1, c2) = three
    repo.reset_branch("main", c0)  # a mistake: c1 and c2 are reachable only through the reflog
    ref_file(repo, "heads/main").write_text("garbage-not-a-hash")
    code, out, _ = cli(capsys, "-C", str(repo.path), "branch", "--force", "main", c0)
    assert code == 0
    assert [e["new"] for e in repo.reflog("main")] == [c0, c0, c2, c1, c0]
    assert repo.gc()["objects_removed"] == 0
    repo.reset_branch("main", "main@{2}")
    assert repo.resolve("main") == c2 and repo.get_weights("main")["w"].data[0] == 2


# ---- CLI ---------------------------------------------------------------------------------------------------------


def test_cli_reflog_branch_force_and_gc_expire(three, capsys):
    repo, (c0, _c1, c2) = three
    p = str(repo.path)
    code, out, _ = cli(capsys, "-C", p, "reflog", "main")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and lines[0].startswith(c2[:8]) and "main@{0}" in lines[0]
    code, out, _ = cli(capsys, "-C", p, "branch", "--force", "main", c0)
    assert code == 0 and repo.resolve("main") == c0
    code, out, _ = cli(capsys, "-C", p, "reflog", "main", "--json")
    assert json.loads(out)[1]["new"] == c2
    code, out, _ = cli(capsys, "-C", p, "gc", "--expire-reflog=now")
    assert code == 0
    with pytest.raises(RefNotFoundError):
        repo.get_commit(c2)
    code, _, err = cli(capsys, "-C", p, "gc", "--expire-reflog=soon")
    assert code == 1 and "expire_reflog" in err


def test_fsck_names_a_damaged_reflog_entry_and_readers_skip_it(three):
    repo, (c0, _c1, c2) = three
    entry = sorted((repo.path / ".coral" / "objects" / "reflog" / "heads" / "main").iterdir())[1]
    entry.write_bytes(entry.read_bytes()[:-3])
    report = repo.fsck()
    assert not report["ok"] and any(entry.name in e for e in report["errors"])
    assert [e["new"] for e in repo.reflog("main")] == [c2, c0]  # the hole is skipped, not the history before it
    assert repo.log()[0].hash == c2 and repo.resolve("main@{0}") == c2
