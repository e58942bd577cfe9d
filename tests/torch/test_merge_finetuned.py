"""The real case for weight-space merges: one base classifier, two copies fine-tuned on different synthetic
tasks on two branches, merged with task arithmetic and TIES; the merge scores above chance on both tasks.

Run with ``-s`` to see the accuracies (the README quotes them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from coral import Repository, greedy_soup
from coral.integrations.pytorch import load, save
from torch import nn

FEATURES, CLASSES, CHANCE = 24, 4, 0.25


def classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, CLASSES))


def task(which: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Task 0 lives on the first half of the features, task 1 on the second; labels from a fixed random
    linear rule per task."""
    g = torch.Generator().manual_seed(seed)
    rule = torch.randn(CLASSES, FEATURES // 2, generator=torch.Generator().manual_seed(100 + which))
    x = torch.zeros(n, FEATURES)
    part = torch.randn(n, FEATURES // 2, generator=g)
    x[:, which * FEATURES // 2 : (which + 1) * FEATURES // 2] = part
    return x, (part @ rule.T).argmax(1)


def fine_tune(model: nn.Module, which: int) -> None:
    torch.manual_seed(1 + which)
    x, y = task(which, 2048, seed=10 + which)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        for i in range(0, len(x), 128):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 128]), y[i : i + 128]).backward()
            opt.step()


@torch.no_grad()
def accuracy(model: nn.Module, which: int) -> float:
    x, y = task(which, 2000, seed=50 + which)
    return float((model(x).argmax(1) == y).float().mean())


def scores(repo: Repository, ref: str) -> tuple[float, float]:
    model = classifier()
    load(model, repo, commit=ref)
    return accuracy(model, 0), accuracy(model, 1)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    repo = Repository(tmp_path_factory.mktemp("merge") / "repo", init=True)
    save(classifier(), repo, "base")
    for which, branch in enumerate(("task-a", "task-b")):
        repo.switch("main")
        repo.switch(branch, create=True)
        model = classifier()
        fine_tune(model, which)
        save(model, repo, f"fine-tuned on task {which}", metadata={"metrics": {"accuracy": accuracy(model, which)}})
    repo.switch("main")
    return repo


def test_task_arithmetic_and_ties_merges_score_above_chance_on_both_tasks(finetuned):
    repo = finetuned
    report = {name: scores(repo, name) for name in ("main", "task-a", "task-b")}
    assert report["task-a"][0] > 0.8 and report["task-b"][1] > 0.8  # each fine-tune learned its task
    for strategy, params in [
        ("average", {}),
        ("task_arithmetic", {}),
        ("ties", {"density": 0.5}),
        ("dare_ties", {"density": 0.5, "seed": 0}),
    ]:
        repo.create_branch(f"m-{strategy}", "task-a")
        repo.switch(f"m-{strategy}")
        merged = repo.merge("task-b", strategy, **params)
        report[strategy] = scores(repo, merged)
        record = repo.get_commit(merged).metadata["merge"]
        assert record["base"] == (None if strategy == "average" else repo.resolve("main"))
    print("\naccuracy (task A, task B):")
    for name, (a, b) in report.items():
        print(f"  {name:16s} {a:.3f} {b:.3f}")
    for strategy in ("task_arithmetic", "ties"):
        a, b = report[strategy]
        assert a > CHANCE + 0.2 and b > CHANCE + 0.2, (strategy, a, b)


def test_greedy_soup_of_the_merges_keeps_what_helps_both_tasks(finetuned):
    repo = finetuned
    repo.switch("soup", create=True)
    model = classifier()

    def evaluate(weights: dict[str, np.ndarray]) -> float:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        return min(accuracy(model, 0), accuracy(model, 1))

    result = greedy_soup(repo, ["task-b", "task-a"], evaluate, metric="accuracy")
    assert result.ingredients[0] in {repo.resolve("task-a"), repo.resolve("task-b")}  # recorded best first
    assert result.score >= max(evaluate(repo.load_arrays(c)) for c in result.ingredients[:1])
    assert repo.get_commit(result.commit).metadata["merge"]["strategy"] == "greedy_soup"
