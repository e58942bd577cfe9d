"""Merging a commit HEAD already contains creates nothing, as git says 'Already up to date'."""

import numpy as np
from coral import Repository


def test_merge_of_an_ancestor_or_same_commit_is_up_to_date(tmp_path):
    repo = Repository(tmp_path, init=True)
    repo.stage_weights({"w": np.ones(3, np.float32)})
    first = repo.commit("one")
    repo.create_branch("finetune")
    repo.switch("finetune")
    assert repo.merge("main") == first and len(repo.log()) == 1
    repo.stage_weights({"w": np.full(3, 2, np.float32)})
    second = repo.commit("two")
    assert repo.merge("main") == second and len(repo.log()) == 2
