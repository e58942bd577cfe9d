"""docs/cli.md's Python example, run as written: a doc that drifts from the API fails here."""

from __future__ import annotations

import re
from pathlib import Path

import coral
import numpy as np

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_interchange_example_of_docs_cli_runs_as_written(tmp_path, monkeypatch):
    block = re.search(r"## Interchange from Python.*?```python\n(.*?)```", DOC.read_text(), re.S)
    assert block, "docs/cli.md lost its interchange example"
    monkeypatch.chdir(tmp_path)
    repo = coral.Repository("my-model", init=True)
    repo.commit_weights({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "trained")
    before = set(repo.store.list("chunks/"))
    scope: dict = {}
    exec(compile(block.group(1), str(DOC), "exec"), scope)
    assert set(coral.Repository("my-model").store.list("chunks/")) == before  # the round trip stored nothing new
    assert scope["arrays"]["w"].tobytes() == np.arange(6, dtype=np.float32).tobytes()
