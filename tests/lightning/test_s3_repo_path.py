"""CoralCallback(repo_path="s3://...") in a real pl.Trainer: checkpoints go straight to moto's real S3 server
(no local repository), and a second fit resumes from there with ``ckpt_path="coral://last"``."""

from __future__ import annotations

import pytorch_lightning as pl
from coral import Repository
from coral_lightning import CoralCallback


def test_callback_repo_path_on_s3_saves_there_and_resumes(app, tmp_path, s3_url) -> None:
    pl.seed_everything(0, verbose=False)
    cb = CoralCallback(repo_path=s3_url, init=True, save_every_n_epochs=1, branch="run")
    train, val = app.loaders()
    app.trainer([cb], tmp_path / "root", 2).fit(app.TinyModule(), train, val)
    cb.manager.wait()
    with Repository(s3_url) as on_s3:
        assert [c.metadata["epoch"] for c in reversed(on_s3.log(branch="run"))] == [1, 2]  # epochs done
        assert on_s3.fsck()["ok"] and on_s3.path is None
        last = on_s3.resolve("run")
    again = CoralCallback(repo_path=s3_url, save_every_n_epochs=1, branch="run")
    module = app.TinyModule()
    trainer = app.trainer([again], tmp_path / "root2", 3)
    trainer.fit(module, train, val, ckpt_path="coral://last")
    again.manager.wait()
    with Repository(s3_url) as on_s3:
        log = list(reversed(on_s3.log(branch="run")))
        assert [c.metadata["epoch"] for c in log] == [1, 2, 3]  # resumed after 2 epochs: none repeated
        assert on_s3.get_commit(log[-1].hash).parents[0] == last
