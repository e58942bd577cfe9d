"""`coral merge` with the new strategies and flags, `coral show` of the record, "Already up to date", and the
detached-HEAD warnings (at the merge, and when checking out away from it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from coral import Repository
from coral.cli.main import main


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def repo_path(tmp_path):
    path = tmp_path / "repo"
    with Repository(path, init=True) as repo:
        repo.stage_weights({"embed": np.zeros(4), "w": np.array([10.0, 20, 30, 40]), "step": np.array([1])})
        repo.commit("base")
        repo.switch("dev", create=True)
        repo.stage_weights({"embed": np.ones(4), "w": np.array([11.0, 20, 34, 40]), "step": np.array([7])})
        repo.commit("dev")
        repo.switch("main")
        repo.stage_weights({"embed": np.full(4, 2.0), "w": np.array([10.0, 23, 30, 38]), "step": np.array([5])})
        repo.commit("main")
    return str(path)


def test_merge_ties_with_per_tensor_side_and_show_prints_the_record(repo_path, capsys):
    code, out, err = cli(
        capsys, "-C", repo_path, "merge", "dev", "--strategy", "ties", "--density", "0.5",
        "--per-tensor", "emb*=theirs",
    )
    assert code == 0, err
    assert "Merged dev into main (ties)" in out and "integer/bool tensors taken from ours: step" in out
    with Repository(repo_path) as repo:
        got = repo.load_arrays("HEAD")
        base = repo.log()[-1].hash
    assert got["embed"].tolist() == [1, 1, 1, 1]  # theirs
    assert got["w"].tolist() == [11, 23, 34, 38]  # density 0.5 keeps 2 of 4 of (0, 3, 0, -2) and (1, 0, 4, 0)
    assert got["step"].tolist() == [5]
    code, out, _ = cli(capsys, "-C", repo_path, "show")
    assert code == 0
    for fragment in ("strategy: ties", "density: 0.5", f"base: {base}", "emb*: theirs", "step: ours", "seed: None"):
        assert fragment in out, (fragment, out)
    doc = json.loads(cli(capsys, "-C", repo_path, "show", "--json")[1])
    assert doc["metadata"]["merge"]["params"] == {"density": 0.5}


def test_merge_dare_with_seed_is_repeatable_and_an_unseeded_one_prints_its_seed(repo_path, capsys):
    dare = ["merge", "dev", "--strategy", "dare", "--density", "0.5"]
    code, out, err = cli(capsys, "-C", repo_path, *dare, "--seed", "3")
    assert code == 0 and "--seed" not in out, err
    with Repository(repo_path) as repo:
        first = repo.load_arrays("HEAD")["w"]
        assert repo.get_commit("HEAD").metadata["merge"]["seed"] == 3
        repo.create_branch("b2", "HEAD~1")
    cli(capsys, "-C", repo_path, "checkout", "b2")
    code, out, _ = cli(capsys, "-C", repo_path, *dare, "--seed", "3")
    with Repository(repo_path) as repo:
        assert repo.load_arrays("HEAD")["w"].tobytes() == first.tobytes()
        repo.create_branch("b3", "HEAD~1")
    cli(capsys, "-C", repo_path, "checkout", "b3")
    code, out, _ = cli(capsys, "-C", repo_path, "merge", "dev", "--strategy", "dare_ties", "--density", "0.5")
    assert code == 0 and "pass --seed" in out


def test_merge_slerp_and_weights_flags(repo_path, capsys):
    code, out, err = cli(
        capsys, "-C", repo_path, "merge", "dev", "--strategy", "slerp", "--t", "0", "--per-tensor", "step=theirs"
    )
    assert code == 0, err
    with Repository(repo_path) as repo:
        got = repo.load_arrays("HEAD")
        record = repo.get_commit("HEAD").metadata["merge"]
    np.testing.assert_allclose(got["w"], [10, 23, 30, 38])
    assert got["step"].tolist() == [7] and record["params"] == {"t": 0.0} and record["base"] is None


@pytest.mark.parametrize(
    "argv,fragments",
    [
        (["--strategy", "ties"], ["density", "ties needs"]),
        (["--strategy", "ties", "--density", "0"], ["density=0.0", "(0, 1]"]),
        (["--strategy", "dare", "--density", "1.01"], ["density=1.01"]),
        (["--strategy", "slerp"], ["t=None", "slerp needs"]),
        (["--strategy", "median"], ["invalid choice"]),
        (["--per-tensor", "embed"], ["--per-tensor", "GLOB=STRATEGY"]),
        (["--per-tensor", "embed=best"], ["per_tensor['embed']", "best"]),
        (["--per-tensor", "nothing*=ours"], ["nothing*", "matches no tensor"]),
        (["--density", "0.5"], ["density=0.5", "not used by average"]),
        (["--strategy", "ties", "--density", "0.5", "--seed", "1"], ["seed=1", "not used by ties"]),
    ],
)
def test_bad_merge_flags_are_one_line_and_write_nothing(repo_path, capsys, argv, fragments):
    with Repository(repo_path) as repo:
        head, commits = repo.head_commit(), set(repo.store.list("commits/"))
    code, _, err = cli(capsys, "-C", repo_path, "merge", "dev", *argv)
    one_line_error(code, err, *fragments)
    with Repository(repo_path) as repo:
        assert repo.head_commit() == head and set(repo.store.list("commits/")) == commits


def test_merge_of_an_already_merged_ref_says_already_up_to_date(repo_path, capsys):
    assert cli(capsys, "-C", repo_path, "merge", "dev")[0] == 0
    with Repository(repo_path) as repo:
        head, n = repo.head_commit(), len(repo.log())
    code, out, _ = cli(capsys, "-C", repo_path, "merge", "dev")
    assert code == 0 and "Already up to date" in out and "Merged" not in out and head[:8] not in out
    code, out, _ = cli(capsys, "-C", repo_path, "merge", "HEAD~1")
    assert code == 0 and "Already up to date" in out
    with Repository(repo_path) as repo:
        assert repo.head_commit() == head and len(repo.log()) == n


def test_merge_on_a_detached_head_warns_and_checkout_away_warns_again(repo_path, capsys):
    with Repository(repo_path) as repo:
        main_head = repo.head_commit()
    cli(capsys, "-C", repo_path, "checkout", main_head)
    code, out, err = cli(capsys, "-C", repo_path, "merge", "dev")
    assert code == 0 and "Merged dev into HEAD" in out
    assert "detached" in err and "lost on the next checkout" in err and "coral branch" in err
    with Repository(repo_path) as repo:
        merged = repo.head_commit()
    code, out, err = cli(capsys, "-C", repo_path, "checkout", "main")
    assert code == 0 and "leaving commit" in err and merged[:8] in err
    # a detached HEAD on a tagged/branch commit is left without a word
    cli(capsys, "-C", repo_path, "checkout", main_head)
    code, _, err = cli(capsys, "-C", repo_path, "checkout", "dev")
    assert code == 0 and "leaving" not in err
