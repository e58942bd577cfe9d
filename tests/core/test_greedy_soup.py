"""greedy_soup: candidates tried best first by their recorded metric, kept only if the soup does not get
worse, committed with the ingredients as parents; bad input refused before anything is written."""

from __future__ import annotations

import coral
import numpy as np
import pytest
from coral import Repository, greedy_soup
from coral.errors import InvalidArgumentError, MergeConflictError

TARGET = np.array([1.0, 1.0])


def closeness(weights):
    return -float(np.sum((weights["w"].astype(np.float64) - TARGET) ** 2))


@pytest.fixture
def candidates(tmp_path):
    repo = Repository(tmp_path / "repo", init=True)
    repo.stage_weights({"w": np.zeros(2), "step": np.array([0])})
    repo.commit("base")
    made = {}
    for name, w, acc, loss in [("c1", [1, 1.5], 0.9, 0.1), ("c2", [1, 0.5], 0.8, 0.2), ("c3", [5, 5], 0.7, 0.3)]:
        repo.create_branch(name, "main")
        repo.switch(name)
        repo.stage_weights({"w": np.array(w, np.float64), "step": np.array([int(name[1])])})
        made[name] = repo.commit(name, {"loss": loss, "metrics": {"acc": acc}})
    repo.switch("main")
    return repo, made


def test_greedy_soup_orders_by_metric_and_keeps_only_what_helps(candidates):
    repo, made = candidates
    seen = []
    base = repo.head_commit()

    def evaluate(weights):
        seen.append(weights["w"].tolist())
        return closeness(weights)

    result = coral.greedy_soup(repo, ["c3", "c2", "c1"], evaluate, metric="acc")
    assert result.ingredients == [made["c1"], made["c2"]] and result.rejected == [made["c3"]]
    assert seen == [[1, 1.5], [1, 1], [7 / 3, 7 / 3]]  # c1 alone, c1+c2, c1+c2+c3 (rejected: worse)
    assert result.score == 0.0 and result.weights["w"].tolist() == [1, 1]
    commit = repo.get_commit(result.commit)
    assert commit.parents == [base, made["c1"], made["c2"]]
    assert repo.head_commit() == result.commit and repo.current_branch == "main"
    assert repo.load_arrays(result.commit)["w"].tolist() == [1, 1]
    assert repo.load_arrays(result.commit)["step"].tolist() == [1]  # integers from the best candidate
    record = commit.metadata["merge"]
    assert record["strategy"] == "greedy_soup" and record["ingredients"] == [made["c1"], made["c2"]]
    assert record["rejected"] == [made["c3"]] and record["metric"] == "acc"
    assert record["non_float_from"] == {"step": made["c1"]}


def test_lower_is_better_metric_and_given_order_without_metric(candidates):
    repo, made = candidates
    by_loss = greedy_soup(repo, ["c2", "c3", "c1"], closeness, metric="loss", higher_is_better=False, commit=False)
    assert by_loss.ingredients[0] == made["c1"] and by_loss.commit is None
    given = greedy_soup(repo, ["c2", "c1"], closeness, commit=False)
    assert given.ingredients == [made["c2"], made["c1"]]  # c2 alone scores -0.25; with c1: 0 (better)
    assert len(repo.log()) == 1  # commit=False wrote nothing


def test_the_same_soup_twice_gives_the_same_weights(candidates):
    repo, _ = candidates
    a = greedy_soup(repo, ["c1", "c2", "c3"], closeness)
    chunks = set(repo.store.list("chunks/"))
    b = greedy_soup(repo, ["c1", "c2", "c3"], closeness)
    assert repo.get_commit(a.commit).tree == repo.get_commit(b.commit).tree
    assert set(repo.store.list("chunks/")) == chunks


@pytest.mark.parametrize(
    "args,kwargs,error,fragment",
    [
        ([[]], {}, InvalidArgumentError, "candidates"),
        (["c1"], {}, InvalidArgumentError, "candidates"),
        ([["c1", "main"]], {"metric": "acc"}, InvalidArgumentError, "recorded no numeric value"),
        ([["c1", "c2"]], {"evaluate": lambda w: float("nan")}, InvalidArgumentError, "non-finite"),
        ([["c1", "c2"]], {"evaluate": lambda w: "good"}, InvalidArgumentError, "must return a number"),
        ([["c1", "c2"]], {"evaluate": 3}, InvalidArgumentError, "callable"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(candidates, args, kwargs, error, fragment):
    repo, _ = candidates
    commits = set(repo.store.list("commits/"))
    evaluate = kwargs.pop("evaluate", closeness)
    with pytest.raises(error, match=fragment):
        greedy_soup(repo, *args, evaluate, **kwargs)
    assert set(repo.store.list("commits/")) == commits


def test_candidates_of_different_shapes_conflict(candidates):
    repo, made = candidates
    repo.switch("c4", create=True)
    repo.stage_weights({"w": np.zeros(3), "step": np.array([0])})
    repo.commit("c4")
    with pytest.raises(MergeConflictError, match="w"):
        greedy_soup(repo, ["c1", "c4"], closeness)
