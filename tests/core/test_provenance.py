"""Provenance in checkpoint commits (versions, device, host, command, git commit + dirty flag, hparams) and the
commands that show it: `show`, `diff --config`, `log --metrics`, `plot` (terminal), `compare`; an old
repository (commits without provenance) still shows, plots, compares and reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from coral import Repository
from coral.cli.main import main
from coral.errors import InvalidArgumentError
from coral.training import CheckpointConfig, CheckpointManager, TrainingState, git_info, read_provenance
from coral.training.provenance import Provenance, optimizer_hparams_from_state

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="the git command is not installed")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def train(repo_path: Path, experiment: str, losses: list[float], hparams: dict | None = None) -> list[str]:
    """A tiny numpy 'training run' through CheckpointManager: one checkpoint per epoch."""
    with Repository(repo_path, init=not (repo_path / ".coral").exists()) as repo:
        manager = CheckpointManager(repo, CheckpointConfig(save_every_n_epochs=1, save_on_best_metric="loss"),
                                    experiment_name=experiment, hparams=hparams)
        rng = np.random.default_rng(0)
        hashes = []
        for epoch, loss in enumerate(losses):
            weights = {"w": rng.standard_normal((4, 4)).astype(np.float32)}
            state = TrainingState(epoch=epoch, global_step=(epoch + 1) * 10, loss=loss,
                                  metrics={"accuracy": 1.0 - loss / 2})
            hashes.append(manager.save_checkpoint(weights, state))
        return hashes


# ---- what is recorded ---------------------------------------------------------------------------------------


def test_checkpoint_records_environment_and_hparams(tmp_path):
    (c,) = train(tmp_path / "repo", "run", [0.5], hparams={"lr": 0.01, "layers": (2, 3), "path": tmp_path})
    with Repository(tmp_path / "repo") as repo:
        prov = read_provenance(repo.get_commit(c).metadata)
    assert prov is not None
    versions = prov["versions"]
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert versions["numpy"] == np.__version__
    assert "coral" in versions
    assert prov["device"]["type"] in ("cpu", "cuda", "gpu", "tpu")
    assert prov["device"]["name"] and prov["device"]["count"] >= 1
    assert prov["host"] and prov["command"] == [str(a) for a in sys.argv]
    assert prov["hparams"] == {"lr": 0.01, "layers": [2, 3], "path": str(tmp_path)}


def test_optimizer_param_groups_in_the_state_become_hparams(tmp_path):
    state = {"param_groups": [{"lr": 0.1, "betas": (0.9, 0.99), "weight_decay": 0.01, "params": [0, 1]}]}
    assert optimizer_hparams_from_state(state) == {"lr": 0.1, "betas": [0.9, 0.99], "weight_decay": 0.01}
    with Repository(tmp_path / "repo", init=True) as repo:
        manager = CheckpointManager(repo, experiment_name="opt", hparams={"batch_size": 8})
        c = manager.save_checkpoint({"w": np.ones(3, np.float32)}, TrainingState(epoch=0, global_step=1,
                                    optimizer_state=state), force=True)
        hparams = read_provenance(repo.get_commit(c).metadata)["hparams"]
    assert hparams == {"batch_size": 8, "optimizer": {"lr": 0.1, "betas": [0.9, 0.99], "weight_decay": 0.01}}


def test_bad_hparams_is_one_clear_error(tmp_path):
    with Repository(tmp_path / "repo", init=True) as repo:
        with pytest.raises(InvalidArgumentError, match="hparams"):
            CheckpointManager(repo, experiment_name="x", hparams=[("lr", 0.1)])


def test_provenance_can_be_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv("CORAL_PROVENANCE", "0")
    (c,) = train(tmp_path / "repo", "off", [0.5])
    with Repository(tmp_path / "repo") as repo:
        assert read_provenance(repo.get_commit(c).metadata) is None
    assert Provenance().capture() == {}


SCRIPT = """
import sys
import numpy as np
from coral import Repository
from coral.training import CheckpointManager, TrainingState
with Repository(sys.argv[1], init=True) as repo:
    m = CheckpointManager(repo, experiment_name="git-run", hparams={"lr": 0.001})
    print(m.save_checkpoint({"w": np.zeros(2, np.float32)}, TrainingState(epoch=0, global_step=1), force=True))
"""


def run_script(folder: Path, repo_path: Path) -> dict:
    script = folder / "train.py"
    done = subprocess.run([sys.executable, str(script), str(repo_path)], capture_output=True, text=True,
                          cwd=repo_path.parent, timeout=120)
    assert done.returncode == 0, done.stderr
    with Repository(repo_path) as repo:
        return read_provenance(repo.get_commit(done.stdout.strip().splitlines()[-1]).metadata)


@needs_git
def test_git_commit_and_dirty_flag_of_the_training_code(tmp_path):
    code = tmp_path / "project" / "src"
    code.mkdir(parents=True)
    (code / "train.py").write_text(textwrap.dedent(SCRIPT))
    project = code.parent
    git(project, "init", "-q")
    git(project, "add", "src/train.py")
    git(project, "commit", "-q", "-m", "training code")
    head = git(project, "rev-parse", "HEAD")
    elsewhere = tmp_path / "runs"
    elsewhere.mkdir()

    clean = run_script(code, elsewhere / "clean")  # found by walking up from the script's folder, not the cwd
    assert clean["git"]["commit"] == head
    assert clean["git"]["dirty"] is False
    assert Path(clean["git"]["root"]) == project.resolve()
    assert clean["hparams"] == {"lr": 0.001}

    (code / "train.py").write_text(textwrap.dedent(SCRIPT) + "# an edit not committed\n")
    dirty = run_script(code, elsewhere / "dirty")
    assert dirty["git"]["commit"] == head and dirty["git"]["dirty"] is True

    info = git_info(code / "train.py")
    assert info is not None and info["commit"] == head and info["dirty"] is True


def test_no_git_work_tree_means_no_git_field(tmp_path):
    code = tmp_path / "plain"
    code.mkdir()
    (code / "train.py").write_text(textwrap.dedent(SCRIPT))
    if git_info(code) is not None:
        pytest.skip("the temporary folder lies inside a git work tree")
    prov = run_script(code, tmp_path / "repo")
    assert "git" not in prov
    assert prov["versions"]["numpy"] == np.__version__


def test_no_git_command_is_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    (tmp_path / ".git").mkdir()
    assert git_info(tmp_path) is None


# ---- what is shown --------------------------------------------------------------------------------------------


@pytest.fixture
def two_runs(tmp_path):
    path = tmp_path / "repo"
    a = train(path, "a", [0.9, 0.6, 0.4, 0.3], hparams={"lr": 0.01, "batch_size": 32})
    with Repository(path) as repo:
        repo.create_branch("b", a[0])
        repo.checkout("b")
    b = train(path, "b", [0.8, 0.5, 0.2], hparams={"lr": 0.03, "batch_size": 32})
    return path, a, b


def test_show_prints_a_provenance_block(two_runs, capsys):
    path, a, _ = two_runs
    code, out, err = cli(capsys, "-C", str(path), "show", a[-1])
    assert code == 0, err
    block = out.split("Provenance:", 1)[1]
    assert "versions:" in block and f"numpy {np.__version__}" in block
    assert "device:" in block and "host:" in block and "command:" in block
    assert "lr" in block and "0.01" in block and "batch_size" in block
    assert "provenance:" not in out  # shown once, in the readable block, not again as raw metadata


def test_diff_config_names_what_changed(two_runs, capsys):
    path, a, b = two_runs
    code, out, err = cli(capsys, "-C", str(path), "diff", a[-1], b[-1], "--config")
    assert code == 0, err
    assert "changed" in out  # the weight diff is still there
    config = out.split("Config (hyperparameters and environment):", 1)[1]
    row = next(line for line in config.splitlines() if line.startswith("hparams.lr"))
    assert row.split()[1:] == ["0.01", "0.03"]
    assert "batch_size" not in config  # unchanged keys stay out
    code, out, err = cli(capsys, "-C", str(path), "diff", a[-1], b[-1], "--config", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["config"]["changed"] == {"hparams.lr": [0.01, 0.03]}
    assert doc["config"]["added"] == {} and doc["config"]["removed"] == {}
    assert "changed" in doc and "stats" in doc


def test_diff_config_of_identical_configs(two_runs, capsys):
    path, a, _ = two_runs
    code, out, err = cli(capsys, "-C", str(path), "diff", a[0], a[1], "--config")
    assert code == 0, err
    assert "Config: hyperparameters and environment identical." in out


def test_log_metrics_sparklines(two_runs, capsys):
    path, a, _ = two_runs
    code, out, err = cli(capsys, "-C", str(path), "log", "main", "--metrics")
    assert code == 0, err
    loss = next(line for line in out.splitlines() if line.startswith("loss "))
    assert "█▄▂▁" in loss and "0.9 -> 0.3" in loss and "4 points" in loss
    assert any(line.startswith("accuracy ") for line in out.splitlines())
    code, out, err = cli(capsys, "-C", str(path), "log", "main", "--metrics", "--json")
    doc = json.loads(out)
    assert [r["metric"] for r in doc["metrics"]][:2] == ["loss", "accuracy"]
    assert doc["metrics"][0]["values"] == [0.9, 0.6, 0.4, 0.3] and len(doc["commits"]) == 4


def test_plot_in_the_terminal_one_marker_per_branch(two_runs, capsys):
    path, _, _ = two_runs
    code, out, err = cli(capsys, "-C", str(path), "plot", "loss", "accuracy", "--branch", "main", "b")
    assert code == 0, err
    assert out.count("\nloss\n") + out.startswith("loss\n") == 1 and "accuracy" in out
    assert "• main (best 0.3 @ step 40, 4 points)" in out
    assert "+ b (best 0.2 @ step 30, 4 points)" in out  # the fork point counts on both
    assert "*" in out and "step 10" in out
    code, out, err = cli(capsys, "-C", str(path), "plot", "loss", "--branch", "main", "--json")
    assert [p["value"] for p in json.loads(out)["loss"]["main"]] == [0.9, 0.6, 0.4, 0.3]


def test_plot_errors_are_one_line(two_runs, capsys):
    path, _, _ = two_runs
    code, out, err = cli(capsys, "-C", str(path), "plot", "loss", "--branch", "nope")
    assert code == 1 and err.startswith("error: ") and "nope" in err
    code, out, err = cli(capsys, "-C", str(path), "plot", "loss", "-o", str(path / "x.png"), "--size", "big")
    assert code == 1 and "--size" in err and "big" in err
    assert not (path / "x.png").exists()


def test_plot_without_matplotlib_names_the_extra(two_runs, capsys, monkeypatch):
    path, _, _ = two_runs
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an environment without the extra looks like
    code, out, err = cli(capsys, "-C", str(path), "plot", "loss", "-o", str(path / "x.png"))
    assert code == 1 and "pip install 'coral-core[plot]'" in err and len(err.strip().splitlines()) == 1


def test_compare_side_by_side(two_runs, capsys):
    path, a, b = two_runs
    code, out, err = cli(capsys, "-C", str(path), "compare", a[-1], b[-1], a[0])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[1:] == [a[-1][:8], b[-1][:8], a[0][:8]]
    assert next(line for line in lines if line.startswith("loss")).split()[1:] == ["0.3", "0.2", "*", "0.9"]
    assert next(line for line in lines if line.startswith("step")).split()[1:] == ["40", "30", "10"]
    assert next(line for line in lines if line.startswith("hparams.lr")).split()[1:] == ["0.01", "0.03", "0.01"]
    assert not any(line.startswith("hparams.batch_size") for line in lines)
    assert any(line.startswith("stored") for line in lines)
    code, out, err = cli(capsys, "-C", str(path), "compare", a[-1], b[-1], "--json")
    doc = json.loads(out)
    assert doc["differing_hparams"] == ["lr"] and doc["commits"][1]["metrics"]["loss"] == 0.2
    code, out, err = cli(capsys, "-C", str(path), "compare", a[-1])
    assert code == 1 and "at least two" in err


# ---- a repository written before provenance existed -------------------------------------------------------------


@pytest.fixture
def old_repo(tmp_path):
    """Commits as Coral wrote them before this change: metrics in metadata, no provenance."""
    path = tmp_path / "old"
    hashes = []
    with Repository(path, init=True) as repo:
        for step, loss in ((10, 1.0), (20, 0.7), (30, 0.5)):
            meta = {"epoch": step // 10, "global_step": step, "loss": loss, "metrics": {"acc": 0.5 + loss / 10}}
            hashes.append(repo.commit_weights({"w": np.full(4, loss, np.float32)}, f"step {step}", meta))
    return path, hashes


def test_old_repository_still_shows_diffs_plots_compares_and_reports(old_repo, capsys, tmp_path):
    path, hashes = old_repo
    code, out, err = cli(capsys, "-C", str(path), "show", hashes[-1])
    assert code == 0 and "Provenance:" not in out and "global_step: 30" in out, err
    code, out, err = cli(capsys, "-C", str(path), "diff", hashes[0], hashes[-1], "--config")
    assert code == 0 and "neither commit records provenance" in out, err
    code, out, err = cli(capsys, "-C", str(path), "log", "--metrics")
    assert code == 0 and "3 points" in out, err
    code, out, err = cli(capsys, "-C", str(path), "plot", "loss", "acc")
    assert code == 0 and "3 points" in out and "best 0.5 @ step 30" in out, err
    code, out, err = cli(capsys, "-C", str(path), "compare", hashes[0], hashes[-1])
    assert code == 0 and "hyperparameters: none recorded" in out, err
    report = tmp_path / "old.html"
    code, out, err = cli(capsys, "-C", str(path), "report", "-o", str(report))
    assert code == 0, err
    page = report.read_text()
    assert page.count('class="curve"') == 2 and page.count('class="commit"') == 3


def test_plot_counts_pruned_checkpoints(tmp_path, capsys):
    path = tmp_path / "repo"
    with Repository(path, init=True) as repo:
        cfg = CheckpointConfig(save_every_n_epochs=1, keep_last_n_checkpoints=1)
        manager = CheckpointManager(repo, cfg, experiment_name="pruned")
        for epoch, loss in enumerate([0.9, 0.5, 0.7]):
            manager.save_checkpoint({"w": np.full(3, loss, np.float32)},
                                    TrainingState(epoch=epoch, global_step=epoch + 1, loss=loss))
        assert sum(h["pruned"] for h in manager.checkpoint_history) == 2
    code, out, err = cli(capsys, "-C", str(path), "plot", "loss", "--json")
    points = json.loads(out)["loss"]["main"]
    assert [p["value"] for p in points] == [0.9, 0.5, 0.7]
    assert [p["pruned"] for p in points] == [True, True, False]
