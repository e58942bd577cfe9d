"""`coral report -o report.html` opened in real headless Chromium: the page renders offline, the DOM holds
one curve per (metric, branch), a dot per commit and a bar per commit, and a screenshot is not blank."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from coral import Repository
from coral.cli.main import main
from coral.training import CheckpointConfig, CheckpointManager, TrainingState


def chromium() -> str:
    """The Chromium binary; installed with apt when missing (as .ci/run does), else the test is skipped."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && apt-get install -y -qq chromium", shell=True, capture_output=True,
                       timeout=900, check=False)
        found = shutil.which("chromium")
    if not found:
        pytest.skip("headless Chromium is not installed and could not be installed (apt-get install chromium)")
    return found


def run_chromium(binary: str, *args: str, home: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={home / 'profile'}"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "HOME": str(home)})


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def train(repo: Repository, experiment: str, losses: list[float]) -> None:
    manager = CheckpointManager(repo, CheckpointConfig(save_every_n_epochs=1, save_on_best_metric="loss"),
                                experiment_name=experiment, hparams={"run": experiment})
    rng = np.random.default_rng(len(losses))
    for epoch, loss in enumerate(losses):
        state = TrainingState(epoch=epoch, global_step=(epoch + 1) * 5, loss=loss, metrics={"accuracy": 1 - loss})
        manager.save_checkpoint({"w": rng.standard_normal((32, 32)).astype(np.float32)}, state)


def test_report_renders_in_headless_chromium(tmp_path):
    binary = chromium()
    path = tmp_path / "repo"
    with Repository(path, init=True) as repo:
        train(repo, "main-run", [0.9, 0.7, 0.5, 0.45])
        repo.create_branch("wide", repo.head_commit())
        repo.checkout("wide")
        train(repo, "wide-run", [0.6, 0.35, 0.3])
        commits = len(repo.log("main")) + 3
    report = tmp_path / "report.html"
    assert main(["-C", str(path), "report", "-o", str(report)]) == 0
    page = report.read_text()
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    assert "<script" not in page and "<link" not in page  # self-contained: nothing to fetch

    dom = run_chromium(binary, "--dump-dom", report.as_uri(), home=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert len(re.findall(r'<polyline class="curve"', html)) == 4  # loss and accuracy on two branches
    assert len(re.findall(r'<circle class="best"', html)) == 4
    assert len(re.findall(r'<circle class="commit"', html)) == commits
    assert len(re.findall(r'<rect class="bar"', html)) == commits
    assert len(re.findall(r"<svg", html)) == 4  # two charts, the graph, the storage bars

    shot = tmp_path / "report.png"
    done = run_chromium(binary, f"--screenshot={shot}", "--window-size=1200,1400", report.as_uri(), home=tmp_path)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    assert png_size(shot) == (1200, 1400)
    assert shot.stat().st_size > 20_000  # curves, text and bars; a blank page compresses to a few KB
