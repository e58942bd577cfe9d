"""Provenance from a real pl.Trainer run: the LightningModule's hparams, the optimizer's lr and Lightning's version."""

from __future__ import annotations

import pytorch_lightning as pl
from coral import Repository
from coral.training import read_provenance
from coral_lightning import CoralCallback


def test_lightning_checkpoint_records_module_and_optimizer_hparams(app, tmp_path) -> None:
    pl.seed_everything(0, verbose=False)
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, save_every_n_epochs=1, branch="prov")
    train, val = app.loaders()
    app.trainer([cb], tmp_path / "root", 1).fit(app.TinyModule(lr=0.02), train, val)
    repo = Repository(tmp_path / "r")
    prov = read_provenance(repo.get_commit("prov").metadata)
    assert prov["versions"]["pytorch_lightning"] == pl.__version__
    assert prov["versions"]["torch"]
    hp = prov["hparams"]
    assert {"lr": 0.02, "hidden": 8, "gamma": 0.7}.items() <= hp.items()
    assert hp["optimizer"]["name"] == "Adam" and hp["optimizer"]["betas"] == [0.9, 0.999]
    assert min(abs(hp["optimizer"]["lr"] - v) for v in (0.02, 0.014)) < 1e-9  # before or after StepLR's step
