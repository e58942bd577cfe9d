"""Provenance from a real transformers.Trainer run: TrainingArguments' hyperparameters, the optimizer's lr,
and transformers' version."""

from __future__ import annotations

import transformers
from coral import Repository
from coral.training import read_provenance


def test_hf_checkpoint_records_training_arguments(tmp_path, tiny):
    spec = {"repo": str(tmp_path / "repo"), "output_dir": str(tmp_path / "out"), "max_steps": 2,
            "callback": {"save_every_n_steps": 2}}
    tiny.run(spec)
    repo = Repository(tmp_path / "repo")
    prov = read_provenance(repo.get_commit("HEAD").metadata)
    assert prov["versions"]["transformers"] == transformers.__version__
    hp = prov["hparams"]
    assert hp["learning_rate"] == 1e-3 and hp["max_steps"] == 2
    assert {"adam_beta1", "weight_decay", "per_device_train_batch_size", "seed"} <= set(hp)
    assert hp["optimizer"]["name"] and hp["optimizer"]["lr"] >= 0
