"""CoralTrainerCallback(repo_path="s3://...") on a real transformers.Trainer: the checkpoints land on moto's real
S3 server directly (no local repository) and load back from there."""

from __future__ import annotations

from coral import Repository


def test_callback_repo_path_on_s3_commits_there(tmp_path, tiny, s3_url):
    spec = {"repo": s3_url, "output_dir": str(tmp_path / "out"), "max_steps": 4,
            "callback": {"save_every_n_steps": 2}}
    _, cb, model = tiny.run(spec)
    cb.manager.wait()
    with Repository(s3_url) as on_s3:
        assert on_s3.path is None and len(on_s3.log()) == 2 and on_s3.fsck()["ok"]
        arrays = on_s3.load_arrays()
    want = {n: p.detach().numpy() for n, p in model.state_dict().items()}
    common = [n for n in want if n in arrays]
    assert common and all(arrays[n].tobytes() == want[n].tobytes() for n in common)
