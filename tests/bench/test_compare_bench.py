"""bench/compare.py end to end at --quick size: the real PyTorch loop with torch.save and Coral's Checkpointer,
each cell in its own process, and the marked section written into a copy of BENCHMARKS.md (no timings checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_the_marked_section(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nkept text\n")
    cmd = [sys.executable, str(ROOT / "bench" / "compare.py"), "--quick", "--frameworks", "torch", "--cases",
           "fp32", "--only", "torch.save,coral", "--output", str(doc), "--workdir", str(tmp_path / "work")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nkept text\n")
    assert text.count("<!-- bench/compare.py: begin") == 1 and text.count("<!-- bench/compare.py: end -->") == 1
    assert "Errors:" not in text, text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "Coral" in line]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[-2:] == ["yes", "yes"]  # restore and resumed run bit-exact
    assert "| restore best (" in text and "Best = the checkpoint with the lowest loss" in text


def test_section_is_replaced_not_appended(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import compare

    doc = tmp_path / "B.md"
    doc.write_text("# B\n\nbefore\n")
    compare.write_section(doc, f"{compare.BEGIN}\nfirst\n{compare.END}")
    doc.write_text(doc.read_text() + "\nafter\n")
    compare.write_section(doc, f"{compare.BEGIN}\nsecond\n{compare.END}")
    text = doc.read_text()
    assert "first" not in text and "second" in text and text.count(compare.BEGIN) == 1
    assert text.startswith("# B\n\nbefore\n") and text.endswith("\nafter\n")


def test_best_is_the_lowest_held_out_loss_and_a_restore_already_timed_is_reused() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import compare

    train = {"val": {"10": 0.9, "20": 0.5, "30": 0.5, "40": 0.7}}
    assert compare.best_step(train) == 20  # the first of equals
    assert compare.best_step({}) is None
    run = {"train": train, "latest": {"step": 40, "restore_s": 1.0, "digest": "a"},
           "older": {"step": 20, "restore_s": 2.0, "digest": "b"}}
    spec = {"fw": "lightning", "alt": "modelcheckpoint"}
    assert compare.restore_best(spec, run, 1.0) == {"step": 20, "restore_s": 2.0, "digest": "b", "same_as": "older"}
    assert compare.same_note(["older", "older"]) == " (= checkpoint 5)" and compare.same_note([None]) == ""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cases", "nope"], "--cases: unknown case 'nope'"),
        (["--frameworks", "jax", "--cases", "bf16"], "--cases: 'bf16' has no job for --frameworks 'jax'"),
        (["--every", "0"], "--every: must be at least 1, got 0"),
        (["--batch", "-3"], "--batch: must be at least 1, got -3"),
        (["--frameworks", "torch", "--only", "nope"], "--only: 'nope' is not an alternative of --frameworks torch"),
    ],
)
def test_bad_input_is_one_line_and_leaves_the_table_alone(tmp_path: Path, args: list[str], says: str) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "compare.py"), *args, "--output", str(doc)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("compare.py: error: ")
    assert doc.read_text() == "# Benchmarks\n"
