"""The `coral` command line, driven for real: in-process through `main([...])` and as the installed console
script in subprocesses (exit codes, one-line errors, no tracebacks)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import coral
import ml_dtypes
import numpy as np
import pytest
from coral.cli.history import graph_rows
from coral.cli.main import main
from coral.objects.tensors import chunk_key

CORAL = Path(sys.executable).parent / "coral"


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_json(capsys, *argv: str):
    code, out, err = cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def script(*argv: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CORAL), *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def history(tmp_path):
    """main: c1 -> c3 -> merge(c2); dev: c1 -> c2; c0 (root, pruned) before c1; tag v0 on c1."""
    path = tmp_path / "repo"
    with coral.Repository(path, init=True) as repo:
        base = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, ml_dtypes.bfloat16)}
        repo.stage_weights({"a": base["a"] * 0, "b": base["b"]})
        c0 = repo.commit("root", {"loss": 9.0})
        repo.stage_weights(base)
        c1 = repo.commit(
            "first [bold]checkpoint[/bold]", {"loss": 1.5, "global_step": 10, "metrics": {"acc": 0.5}}
        )
        repo.create_branch("dev")
        repo.switch("dev")
        repo.stage_weights({"a": base["a"] * 2, "b": base["b"], "extra": np.zeros(3, np.int8)})
        c2 = repo.commit("dev work", {"loss": 1.0})
        repo.switch("main")
        repo.stage_weights({"a": base["a"] + 1, "b": base["b"]})
        c3 = repo.commit("main work", {"loss": 1.2, "metrics": {"acc": 0.75}})
        repo.tag_version("v0", "first tag", c1)
        repo.prune(c0)
    return {"path": path, "c0": c0, "c1": c1, "c2": c2, "c3": c3}


# ---- init / status -------------------------------------------------------------------------------------------


def test_init_status_and_log_of_an_empty_repository(tmp_path, capsys):
    code, out, _ = cli(capsys, "-C", str(tmp_path), "init", "proj")
    assert code == 0 and "Initialized empty Coral repository" in out
    assert (tmp_path / "proj" / ".coral").is_dir()
    code, out, _ = cli(capsys, "-C", str(tmp_path / "proj"), "init")
    assert code == 0 and "Reinitialized" in out
    status = cli_json(capsys, "-C", str(tmp_path / "proj"), "status")
    assert status["branch"] == "main" and status["head"] is None and status["num_tensors"] == 0
    code, out, _ = cli(capsys, "-C", str(tmp_path / "proj"), "log")
    assert code == 0 and "No commits yet" in out


def test_status_finds_the_repository_from_a_subfolder(history, capsys):
    sub = history["path"] / "deep" / "er"
    sub.mkdir(parents=True)
    code, out, _ = cli(capsys, "-C", str(sub), "status")
    assert code == 0
    assert "On branch main" in out and history["c3"][:8] in out and "2 tensors" in out
    status = cli_json(capsys, "-C", str(sub), "status")
    assert status["head"] == history["c3"] and status["branches"] == 2 and status["tags"] == 1


# ---- log -----------------------------------------------------------------------------------------------------


def test_log_prints_one_line_per_commit_with_metrics_refs_and_pruned_mark(history, capsys):
    code, out, _ = cli(capsys, "-C", str(history["path"]), "log")
    assert code == 0
    lines = out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == [history[c][:8] for c in ("c3", "c1", "c0")]
    assert "(HEAD -> main)" in lines[0] and "main work" in lines[0] and "loss=1.2 acc=0.75" in lines[0]
    assert "(tag: v0)" in lines[1] and "first [bold]checkpoint[/bold]" in lines[1]  # literal, not rich markup
    assert "step=10 loss=1.5 acc=0.5" in lines[1]
    assert lines[2].endswith("[pruned]") and "[pruned]" not in lines[0] + lines[1]


def test_log_all_graph_draws_branches_and_merges(history, capsys):
    with coral.Repository(history["path"]) as repo:
        merge = repo.merge("dev", on_conflict="theirs")
    code, out, _ = cli(capsys, "-C", str(history["path"]), "log", "--all", "--graph")
    assert code == 0
    rows = []
    for line in out.rstrip().splitlines():
        m = re.match(r"^(.*?)(?: ([0-9a-f]{8}) .*)?$", line)
        rows.append((m.group(1), m.group(2)))
    h = {k: history[k][:8] for k in ("c0", "c1", "c2", "c3")}
    assert rows == [
        ("*", merge[:8]),
        ("|\\", None),
        ("* |", h["c3"]),
        ("| *", h["c2"]),
        ("|/", None),
        ("*", h["c1"]),
        ("*", h["c0"]),
    ], out


def test_log_json_limit_and_ref(history, capsys):
    entries = cli_json(capsys, "-C", str(history["path"]), "log", "--limit", "2")
    assert [e["hash"] for e in entries] == [history["c3"], history["c1"]]
    assert entries[0]["refs"] == ["HEAD -> main"] and entries[1]["refs"] == ["tag: v0"]
    assert entries[0]["metadata"]["metrics"] == {"acc": 0.75}
    dev = cli_json(capsys, "-C", str(history["path"]), "log", "dev")
    assert [e["hash"] for e in dev] == [history["c2"], history["c1"], history["c0"]]
    assert dev[2]["pruned"] is True


@pytest.mark.parametrize(
    "parents, expected",
    [
        # linear history
        ({"c": ["b"], "b": ["a"], "a": []}, ["* c", "* b", "* a"]),
        # merge m of x (first parent) and y, both from a
        ({"m": ["x", "y"], "x": ["a"], "y": ["a"], "a": []}, ["* m", "|\\", "* | x", "| * y", "|/", "* a"]),
        # two unrelated roots
        ({"b": [], "a": []}, ["* b", "* a"]),
        # three branches from one base joining at the base: a long fold uses '_'
        (
            {"m": ["x", "y"], "z": ["a"], "x": ["a"], "y": ["a"], "a": []},
            ["* m", "|\\", "| | * z", "* | | x", "| * | y", "| |/", "|/", "* a"],
        ),
        # a lane joins across another lane ('_'), and a root commit lets the lanes right of it move left
        (
            {"t1": ["a"], "t2": ["z"], "t3": ["a"], "a": [], "z": []},
            ["* t1", "| * t2", "| | * t3", "|_|/", "* | a", " /", "* z"],
        ),
    ],
)
def test_graph_layout(parents, expected):
    order = list(parents)
    rows = graph_rows(order, parents)
    rendered = [g + (" " + c if c else "") for g, c in rows]
    assert rendered == expected


# ---- show / diff ---------------------------------------------------------------------------------------------


def test_show_lists_tensors_with_dtype_shape_sizes_and_metadata(history, capsys):
    code, out, _ = cli(capsys, "-C", str(history["path"]), "show", "v0")
    assert code == 0
    assert f"commit {history['c1']}" in out and "(tag: v0)" in out
    assert "first [bold]checkpoint[/bold]" in out and "global_step: 10" in out and "acc: 0.5" in out
    row_a = next(ln for ln in out.splitlines() if ln.startswith("a "))
    assert row_a.split()[:3] == ["a", "float32", "3x4"] and "48 B" in row_a
    doc = cli_json(capsys, "-C", str(history["path"]), "show", history["c1"][:10])
    assert doc["hash"] == history["c1"] and doc["parents"] == [history["c0"]]
    tensors = {t["name"]: t for t in doc["tensors"]}
    assert tensors["b"]["dtype"] == "bfloat16" and tensors["b"]["shape"] == [5]
    assert tensors["a"]["logical_bytes"] == 48 and tensors["a"]["stored_bytes"] > 0
    assert doc["metadata"]["metrics"] == {"acc": 0.5}


def test_show_marks_pruned_commits(history, capsys):
    doc = cli_json(capsys, "-C", str(history["path"]), "show", history["c0"])
    assert doc["pruned"] is True
    code, out, _ = cli(capsys, "-C", str(history["path"]), "show", history["c0"])
    assert code == 0 and "[pruned]" in out and "pruned by retention" in out


def test_diff_reports_names_and_similarity(history, capsys):
    doc = cli_json(capsys, "-C", str(history["path"]), "diff", "main", "dev")
    assert doc["changed"] == ["a"] and doc["added"] == ["extra"] and doc["removed"] == []
    a1 = (np.arange(12) + 1).astype(np.float64)
    a2 = (np.arange(12) * 2).astype(np.float64)
    stats = doc["stats"]["a"]
    assert stats["cosine_similarity"] == pytest.approx(a1 @ a2 / np.linalg.norm(a1) / np.linalg.norm(a2))
    assert stats["max_abs_diff"] == pytest.approx(np.max(np.abs(a2 - a1)))
    assert stats["relative_l2"] == pytest.approx(np.linalg.norm(a2 - a1) / np.linalg.norm(a1))
    code, out, _ = cli(capsys, "-C", str(history["path"]), "diff", "main", "dev")
    assert code == 0 and "1 changed, 1 added, 0 removed" in out
    assert any(ln.split()[:2] == ["changed", "a"] for ln in out.splitlines())
    code, out, _ = cli(capsys, "-C", str(history["path"]), "diff", "HEAD", "main")
    assert code == 0 and "No differences" in out


# ---- branch / checkout / tag / merge -----------------------------------------------------------------------


def test_branch_create_list_delete_and_checkout(history, capsys):
    p = str(history["path"])
    code, out, _ = cli(capsys, "-C", p, "branch", "exp", "v0")
    assert code == 0 and history["c1"][:8] in out
    branches = {b["name"]: b for b in cli_json(capsys, "-C", p, "branch")}
    assert branches["exp"]["commit"] == history["c1"] and branches["main"]["current"]
    code, out, _ = cli(capsys, "-C", p, "checkout", "exp")
    assert code == 0 and "Switched to branch 'exp'" in out
    code, out, _ = cli(capsys, "-C", p, "branch")
    assert "* exp" in out
    code, out, _ = cli(capsys, "-C", p, "checkout", "-b", "feature", "dev")
    assert code == 0 and cli_json(capsys, "-C", p, "status")["head"] == history["c2"]
    code, out, _ = cli(capsys, "-C", p, "checkout", "v0")
    assert code == 0 and "detached" in out
    assert cli_json(capsys, "-C", p, "status")["detached"] is True
    code, _, _ = cli(capsys, "-C", p, "branch", "-d", "exp")
    assert code == 0 and "exp" not in {b["name"] for b in cli_json(capsys, "-C", p, "branch")}
    code, _, err = cli(capsys, "-C", p, "branch", "main")
    assert_one_line_error(code, err, "already exists")


def test_branch_d_refuses_an_unmerged_branch_and_D_deletes_it(history, capsys):
    p = str(history["path"])
    with coral.Repository(p) as repo:
        repo.switch("lone", create=True)
        repo.stage_weights({"a": np.zeros(2, np.float32)})
        repo.commit("only on lone")
        repo.switch("main")
    code, _, err = cli(capsys, "-C", p, "branch", "-d", "lone")
    assert_one_line_error(code, err, "'lone'", "not merged", "coral branch -D lone")
    assert "lone" in {b["name"] for b in cli_json(capsys, "-C", p, "branch")}
    code, out, _ = cli(capsys, "-C", p, "branch", "-D", "lone")
    assert code == 0 and "Deleted branch lone" in out
    assert "lone" not in {b["name"] for b in cli_json(capsys, "-C", p, "branch")}


def test_tag_create_list_delete_and_releases(history, capsys):
    from coral.training import CheckpointManager, TrainingState

    p = str(history["path"])
    with coral.Repository(p) as repo:
        manager = CheckpointManager(repo, experiment_name="run")
        for step in (1, 2):
            manager.save_checkpoint(
                {"w": np.full(3, step, np.float32)},
                TrainingState(global_step=step, loss=1.0 / step),
                force=True,
            )
        manager.release("1.10.0")
        manager.release("1.2.0")
        manager.release("1.2.0-rc1", commit_hash=manager.last_commit_hash)
    code, out, _ = cli(capsys, "-C", p, "tag", "nightly", "-m", "nightly [build]", "--commit", "dev")
    assert code == 0 and history["c2"][:8] in out
    tags = {t["name"]: t for t in cli_json(capsys, "-C", p, "tag")}
    assert tags["nightly"]["commit"] == history["c2"] and tags["nightly"]["description"] == "nightly [build]"
    assert tags["v1.2.0"]["release"] and not tags["v0"]["release"]
    releases = cli_json(capsys, "-C", p, "tag", "--releases")
    assert [r["name"] for r in releases] == ["v1.2.0-rc1", "v1.2.0", "v1.10.0"]
    code, out, _ = cli(capsys, "-C", p, "tag", "--releases")
    assert code == 0 and "v1.10.0" in out and "nightly" not in out and "v0" not in out
    code, out, _ = cli(capsys, "-C", p, "tag")
    assert "nightly [build]" in out
    code, _, _ = cli(capsys, "-C", p, "tag", "-d", "nightly")
    assert code == 0 and "nightly" not in {t["name"] for t in cli_json(capsys, "-C", p, "tag")}


def test_merge_weighted_and_conflicts(history, capsys):
    p = str(history["path"])
    code, _, err = cli(capsys, "-C", p, "merge", "dev", "--strategy", "weighted", "--weights", "0.25,0.75")
    assert_one_line_error(code, err, "merge conflicts", "extra")
    code, out, _ = cli(
        capsys, "-C", p, "merge", "dev", "--strategy", "weighted", "--weights", "0.25,0.75", "--theirs"
    )
    assert code == 0 and "Merged dev into main (weighted)" in out
    with coral.Repository(p) as repo:
        head = repo.get_commit("HEAD")
        assert head.parents == [history["c3"], history["c2"]]
        got = repo.load_arrays("HEAD")
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert np.array_equal(got["a"], (0.25 * (base + 1) + 0.75 * (base * 2)).astype(np.float32))
    assert np.array_equal(got["extra"], np.zeros(3, np.int8))
    code, _, err = cli(capsys, "-C", p, "merge", "dev", "--weights", "x,y")
    assert_one_line_error(code, err, "--weights")


# ---- export / import ------------------------------------------------------------------------------------------


def test_export_and_import_round_trip(history, tmp_path, capsys):
    p = str(history["path"])
    out_file = tmp_path / "out" / "model.safetensors"
    code, out, _ = cli(capsys, "-C", p, "export", "dev", str(out_file))
    assert code == 0 and "Exported 3 tensors" in out and out_file.is_file()
    doc = cli_json(capsys, "-C", p, "import", str(out_file), "-m", "round trip")
    assert doc["num_tensors"] == 3
    with coral.Repository(p) as repo:
        assert repo.diff(history["c2"], doc["commit"])["identical"]
        assert repo.get_commit(doc["commit"]).message == "round trip"
    other = tmp_path / "other"
    cli(capsys, "-C", str(tmp_path), "init", "other")
    code, out, _ = cli(capsys, "-C", str(other), "import", str(out_file))
    assert code == 0 and "Imported 3 tensors" in out
    entries = cli_json(capsys, "-C", str(other), "log")
    assert entries[0]["message"] == "Import model.safetensors" and entries[0]["metadata"]["loss"] == 1.0


def test_export_weights_only_leaves_out_training_state(tmp_path, capsys):
    from coral.interchange import load_file

    with coral.Repository(tmp_path / "r", init=True) as repo:
        repo.stage_weights(
            {"w": np.ones(2), "optim/state/0/exp_avg": np.zeros(2), "rng/numpy": np.zeros(3, np.uint32)}
        )
        repo.commit("ckpt")
    code, _, _ = cli(
        capsys, "-C", str(tmp_path / "r"), "export", "HEAD", str(tmp_path / "w.safetensors"), "--weights-only"
    )
    assert code == 0 and set(load_file(tmp_path / "w.safetensors")) == {"w"}


def test_import_pt_state_dict_and_refuse_malicious_pickle(history, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    p = str(history["path"])
    torch.save({"fc.weight": torch.ones(2, 2, dtype=torch.bfloat16)}, tmp_path / "model.pt")
    doc = cli_json(capsys, "-C", p, "import", str(tmp_path / "model.pt"))
    with coral.Repository(p) as repo:
        assert repo.get_commit(doc["commit"]).tree["fc.weight"].dtype == "bfloat16"

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"w": torch.ones(1), "x": Payload()}, tmp_path / "evil.pt")
    code, _, err = cli(capsys, "-C", p, "import", str(tmp_path / "evil.pt"))
    assert_one_line_error(code, err, "refused to load", "weights_only=True")
    assert not marker.exists()


def test_export_to_a_format_without_plugin_names_the_package(history, tmp_path, capsys):
    code, _, err = cli(
        capsys, "-C", str(history["path"]), "export", "HEAD", str(tmp_path / "x"), "--format", "pt"
    )
    assert_one_line_error(code, err, "pip install coral-torch")


# ---- gc / fsck / du / repack ----------------------------------------------------------------------------------


def test_gc_frees_pruned_weights_and_du_reports_costs(history, capsys):
    p = str(history["path"])
    before = cli_json(capsys, "-C", p, "du")
    gc = cli_json(capsys, "-C", p, "gc")
    assert gc["objects_removed"] >= 1 and gc["bytes_freed"] > 0
    after = cli_json(capsys, "-C", p, "du")
    assert after["summary"]["stored_bytes"] == before["summary"]["stored_bytes"] - gc["bytes_freed"]
    commits = {c["hash"]: c for c in after["commits"]}
    assert set(commits) == {history[k] for k in ("c0", "c1", "c2", "c3")}
    assert commits[history["c0"]]["pruned"] and commits[history["c0"]]["stored_bytes"] == 0
    # c3 changed only "a": its new bytes are exactly a's stored chunk, "b" is shared with c1
    per_tensor = {t["name"]: t for t in cli_json(capsys, "-C", p, "du", "main")["tensors"]}
    assert (
        per_tensor["b"]["new_bytes"] == 0
        and per_tensor["a"]["new_bytes"] == per_tensor["a"]["stored_bytes"] > 0
    )
    assert commits[history["c3"]]["new_bytes"] == per_tensor["a"]["new_bytes"]
    assert after["summary"]["dedup_ratio"] > 1.0
    code, out, _ = cli(capsys, "-C", p, "du")
    assert code == 0 and "dedup" in out and history["c3"][:8] in out
    code, out, _ = cli(capsys, "-C", p, "du", "main")
    assert code == 0 and any(ln.split()[:3] == ["a", "float32", "3x4"] for ln in out.splitlines())


def test_fsck_names_each_problem_and_exits_1(history, capsys):
    p = str(history["path"])
    report = cli_json(capsys, "-C", p, "fsck")
    assert report["ok"] and report["commits"] == 4
    code, out, _ = cli(capsys, "-C", p, "fsck")
    assert code == 0 and out.startswith("ok:")
    with coral.Repository(p) as repo:  # damage one chunk in place (bit rot, a bad disk)
        chunk = repo.get_commit(history["c2"]).tree["extra"].chunks[0]
        repo.store.put(chunk_key(chunk), b"\x00garbage", overwrite=True)
    res = script("-C", p, "fsck")
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "damaged:" in res.stdout and "'extra'" in res.stdout and chunk in res.stdout, res.stdout
    assert_one_line_error(res.returncode, res.stderr, "damaged")
    res = script("-C", p, "fsck", "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["ok"] is False, (res.stdout, res.stderr)


def test_repack_reports_its_work(history, capsys):
    doc = cli_json(capsys, "-C", str(history["path"]), "repack")
    assert set(doc) == {"chunks", "bytes_saved", "queued_commits"}
    code, out, _ = cli(capsys, "-C", str(history["path"]), "repack")
    assert code == 0 and out.startswith("Re-encoded")


# ---- plugins ---------------------------------------------------------------------------------------------------


def test_plugins_lists_each_plugin_and_its_distribution(capsys, tmp_path):
    rows = {r["module"]: r for r in cli_json(capsys, "-C", str(tmp_path), "plugins")}
    assert rows["coral.store.builtin"]["distribution"] == "coral-core"
    assert "coral_storage_backends" in rows["coral.store.builtin"]["hooks"]
    torch_hooks = rows["coral_torch.hooks"]
    assert torch_hooks["distribution"] == "coral-torch" and "coral_import_file" in torch_hooks["hooks"]
    code, out, _ = cli(capsys, "plugins")
    assert code == 0 and "coral-torch" in out and "coral-core" in out


# ---- errors and the console script ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["show", "nope"], "unknown ref 'nope'"),
        (["diff", "HEAD", "HEAD~9"], "past the first commit"),
        (["checkout", "no-such-branch"], "no-such-branch"),
        (["export", "HEAD", "/proc/definitely/not/writable.safetensors"], "error"),
        (["import", "missing.safetensors"], "no such file"),
        (["log", "--limit", "-3"], "non-negative"),
        (["frobnicate"], "invalid choice"),
        (["merge", "dev", "--strategy", "median"], "invalid choice"),
    ],
)
def test_errors_exit_1_with_one_line(history, capsys, argv, fragment):
    code, _, err = cli(capsys, "-C", str(history["path"]), *argv)
    assert_one_line_error(code, err, fragment)


def test_outside_a_repository_is_a_one_line_error(tmp_path, capsys):
    code, _, err = cli(capsys, "-C", str(tmp_path), "log")
    assert_one_line_error(code, err, "no Coral repository")
    code, _, err = cli(capsys, "-C", str(tmp_path / "missing"), "log")
    assert_one_line_error(code, err, "no such folder")


def test_console_script_exit_codes_and_json(history, tmp_path):
    p = str(history["path"])
    ok = script("log", "--json", cwd=history["path"])
    assert ok.returncode == 0, ok.stderr
    assert [e["hash"] for e in json.loads(ok.stdout)][0] == history["c3"]
    bad = script("-C", p, "show", "nope")
    assert_one_line_error(bad.returncode, bad.stderr, "unknown ref 'nope'")
    assert bad.stdout == ""
    usage = script("-C", p, "log", "--bogus")
    assert_one_line_error(usage.returncode, usage.stderr, "--bogus")
    version = script("--version")
    assert version.returncode == 0 and coral.__version__ in version.stdout


def test_progress_bar_keeps_the_rate_when_the_final_byte_count_differs_from_the_estimate() -> None:
    # the updates a real push made: the estimate (decoded sizes) is a few header bytes under the final
    # count; passing that new total to rich dropped its rate samples and the bar ended on "?" instead of a rate
    import io

    from coral.cli.output import Output
    from rich.console import Console

    out = Output()
    out.err = Console(file=io.StringIO(), force_terminal=True, width=120)
    with out.progress("Pushing to origin") as update:
        for done in (4194336, 8388672, 12583008, 16777344, 20971680):
            update(done, 25165824)
        update(25166016, 25166016)
        update(25166016, 25166016)
    frames = out.err.file.getvalue().split("\r")
    last = [f for f in frames if "25.2/25.2 MB" in f][-1]
    assert re.search(r"[0-9.]+ [kMGTP]?B/s", last), last
