"""Helpers for the preemption tests: start a real training process, signal it mid-run, read what it saved."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
#: a hang guard for the child processes, well above preemption_deadline (90 s); not a speed target
GUARD_S = 240


def start(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``script`` (in this folder) with this interpreter; stdout is read line by line."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.Popen(
        [sys.executable, str(HERE / script), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=full_env,
    )


def signal_at_step(proc: subprocess.Popen[str], step: int, signum: int, target: int | None = None) -> list[str]:
    """Read stdout until the line ``step <step>``, send ``signum`` to ``target`` (default: proc), read the rest."""
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.strip() == f"step {step}":
            os.kill(target if target is not None else proc.pid, signum)
            break
    else:
        proc.wait(GUARD_S)
        pytest.fail(f"never reached step {step}:\n" + "\n".join(lines[-40:]))
    out, _ = proc.communicate(timeout=GUARD_S)
    return lines + out.splitlines()


def run(script: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """Run ``script`` to the end; fail with its output if it does not exit 0."""
    proc = start(script, *args, env=env)
    out, _ = proc.communicate(timeout=GUARD_S)
    assert proc.returncode == 0, out[-4000:]
    return out.splitlines()


def stopped_step(lines: list[str]) -> int:
    """The step of the ``stopped at step N`` line a preempted run prints."""
    for line in lines:
        m = re.fullmatch(r"stopped at step (\d+)", line.strip())
        if m:
            return int(m.group(1))
    raise AssertionError("no 'stopped at step' line:\n" + "\n".join(lines[-40:]))


def commits(repo_path: Path) -> list[Any]:
    """Every commit on the repository's current branch, newest first (CommitInfo: hash, message, metadata)."""
    from coral import Repository

    return list(Repository(repo_path).log())


def preempted_commits(repo_path: Path) -> list[dict[str, Any]]:
    """The metadata of every commit on the current branch that carries the ``preempted`` mark."""
    return [c.metadata for c in commits(repo_path) if (c.metadata or {}).get("preempted")]


@contextlib.contextmanager
def frozen_s3_remote(local: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new repository at ``local`` whose remote ``origin`` lives on a moto S3 server that is then frozen
    (SIGSTOP): every request to it hangs, as on a dead link. Yields the remote's URL."""
    from coral import Repository
    from coral.testing.s3 import create_bucket, free_port, s3_environment

    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for var, value in s3_environment(endpoint).items():
            monkeypatch.setenv(var, value)
        for _ in range(600):  # until the server answers
            try:
                bucket = create_bucket(endpoint)
                break
            except Exception:
                assert moto.poll() is None, "moto server did not start"
                time.sleep(0.1)
        url = f"s3://{bucket}/repo"
        Repository(url, init=True).close()
        with Repository(local, init=True) as repo:
            repo.add_remote("origin", url)
        os.kill(moto.pid, signal.SIGSTOP)
        yield url
    finally:
        os.kill(moto.pid, signal.SIGCONT)
        moto.terminate()
        moto.wait(30)
