"""Provenance from a real (tiny) PyTorch run through Checkpointer: torch's version, the device, the user's hparams
and the optimizer's lr/betas/weight decay; `coral plot -o` draws the run's curves as a PNG of the asked size."""

from __future__ import annotations

import struct

import pytest
import torch
from coral import Repository
from coral.cli.main import main
from coral.integrations.pytorch import Checkpointer
from coral.training import read_provenance
from torch import nn


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


def run(path, experiment: str, lr: float, epochs: int = 4) -> list[str]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.85, 0.98), weight_decay=0.02)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    hashes = []
    with Checkpointer(model, path, experiment, optimizer=opt, on_best="loss", every_n_epochs=1,
                      hparams={"hidden": 8, "epochs": epochs}) as ckpt:
        for epoch in range(epochs):
            for i in range(0, 64, 16):
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x[i:i + 16]), y[i:i + 16])
                loss.backward()
                opt.step()
            with torch.no_grad():
                full = nn.functional.mse_loss(model(x), y).item()
            hashes.append(ckpt.log(epoch, step=(epoch + 1) * 4, loss=full, val_loss=full * 1.1))
    return [h for h in hashes if h]


def test_checkpointer_records_torch_provenance(tmp_path):
    hashes = run(tmp_path / "repo", "adamw", lr=0.01)
    with Repository(tmp_path / "repo") as repo:
        prov = read_provenance(repo.get_commit(hashes[-1]).metadata)
    assert prov["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    if torch.cuda.is_available():
        assert prov["device"] == {"type": "cuda", "name": torch.cuda.get_device_name(0),
                                  "count": torch.cuda.device_count()}
    else:
        assert prov["device"]["type"] == "cpu"
    hp = prov["hparams"]
    assert hp["hidden"] == 8 and hp["epochs"] == 4
    assert hp["optimizer"] == {"name": "AdamW", "lr": 0.01, "betas": [0.85, 0.98], "weight_decay": 0.02,
                               "eps": 1e-08, "amsgrad": False}


def test_plot_png_of_a_real_run_has_the_requested_size(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="coral-core[plot] is not installed")
    repo = tmp_path / "repo"
    run(repo, "lr-small", lr=0.01)
    with Repository(repo) as r:
        r.create_branch("high-lr", r.log("main")[-1].commit_hash)
        r.checkout("high-lr")
    run(repo, "lr-high", lr=0.05)
    out = tmp_path / "curve.png"
    code = main(["-C", str(repo), "plot", "loss", "val_loss", "--branch", "main", "high-lr",
                 "-o", str(out), "--size", "640x480"])
    assert code == 0, capsys.readouterr().err
    assert png_size(out) == (640, 480)
    assert out.stat().st_size > 10_000  # two panels with lines, not an empty canvas
    assert "wrote" in capsys.readouterr().out

    code = main(["-C", str(repo), "diff", "main", "high-lr", "--config"])
    text = capsys.readouterr().out
    assert code == 0 and "hparams.optimizer.lr" in text and "0.01" in text and "0.05" in text
