"""The README's preemption example, run as the script a reader would write: SIGTERM mid-epoch -> exit 143 with
one marked checkpoint; the same script run again resumes at the next step and finishes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from preempt_helpers import GUARD_S, preempted_commits, signal_at_step

README = Path(__file__).resolve().parents[2] / "README.md"

PREAMBLE = """
import sys, time
import torch
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
model = torch.nn.Linear(4, 3)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
loader = DataLoader(TensorDataset(torch.randn(24, 4), torch.randint(0, 3, (24,))), batch_size=4, shuffle=True,
                    generator=torch.Generator().manual_seed(1))
SLEEP = float(sys.argv[1])

def train(x, y):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss
"""

STEP = 'loss = train(x, y); print(f"step {step + 1}", flush=True); time.sleep(SLEEP)'


def readme_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    (found,) = [b for b in blocks if "ckpt.should_stop" in b and b.startswith("from coral.integrations.pytorch")]
    return found


def test_readme_preemption_example_stops_with_143_and_the_rerun_resumes(tmp_path: Path) -> None:
    code = readme_block()
    assert code.count("...") == 1
    script = tmp_path / "train.py"
    script.write_text(PREAMBLE + code.replace("...", STEP, 1) + '\nprint("finished", flush=True)\n')
    python = [sys.executable, str(script)]

    proc = subprocess.Popen([*python, "0.05"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = signal_at_step(proc, 9, signal.SIGTERM)  # epoch 1 (6 batches an epoch), 3rd batch: mid-epoch
    assert proc.returncode == 143, "\n".join(lines[-30:])
    assert "finished" not in lines
    marks = preempted_commits(tmp_path / "runs")
    assert len(marks) == 1 and marks[0]["global_step"] >= 9
    saved = marks[0]["global_step"]

    again = subprocess.run([*python, "0"], cwd=tmp_path, capture_output=True, text=True, timeout=GUARD_S)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    steps = [x for x in again.stdout.splitlines() if x.startswith("step ")]
    assert steps[0] == f"step {saved + 1}" and steps[-1] == "step 60"  # 10 epochs x 6 batches, none repeated
    assert len(steps) == 60 - saved

