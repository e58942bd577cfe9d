"""Data order: DataLoader generators through the data-state hooks, ResumableLoader mid-epoch replay."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from coral.errors import InvalidArgumentError
from coral.training import capture_data_state, restore_data_state
from coral_torch import ResumableLoader
from coral_torch.data import GeneratorSource, as_data_source, loader_generators
from torch.utils.data import DataLoader, Dataset, TensorDataset


class NoisyDataset(Dataset):
    """Every item draws from the global torch RNG, like a random augmentation."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i)]) + torch.rand(1)


def loader(seed: int | None = 7, dataset=None) -> DataLoader:
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(dataset or TensorDataset(torch.arange(40.0)), batch_size=6, shuffle=True, generator=g)


def batches(it) -> list[torch.Tensor]:
    return [b[0] if isinstance(b, (list, tuple)) else b for b in it]


def test_dataloader_hook_restores_the_next_epoch_order():
    a = loader()
    batches(a)  # epoch 0
    state = capture_data_state(a)
    epoch1 = batches(a)
    b = loader(seed=999)
    restore_data_state(b, state)
    assert all(torch.equal(x, y) for x, y in zip(batches(b), epoch1, strict=True))


def test_generator_source_and_generator_roles():
    g = torch.Generator().manual_seed(3)
    state = capture_data_state(as_data_source(g))
    want = torch.rand(3, generator=g)
    restore_data_state(as_data_source(g), state)
    assert torch.equal(torch.rand(3, generator=g), want)
    assert isinstance(as_data_source({"g": g})["g"], GeneratorSource)
    g2 = torch.Generator()
    sampler = torch.utils.data.RandomSampler(range(10), generator=g2)
    dl = DataLoader(list(range(10)), sampler=sampler, generator=g)
    assert loader_generators(dl) == {"loader": g, "sampler": g2}


@pytest.mark.parametrize("seed", [7, None], ids=["generator", "global-rng"])
def test_resumable_loader_replays_to_the_batch_after_the_checkpoint(seed):
    torch.manual_seed(0)
    first = ResumableLoader(loader(seed, NoisyDataset()))
    batches(first)  # a full epoch first: the state must not depend on starting fresh
    it = iter(first)
    head = [next(it) for _ in range(3)]
    assert first.batches_seen == 3
    state = first.get_state()
    rng = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    rest = list(it)  # the uninterrupted run
    assert len(head) + len(rest) == len(first) and first.batches_seen == 0
    after_epoch = torch.rand(2)

    torch.manual_seed(1234)  # a new process: other RNG, other loader seed
    second = ResumableLoader(loader(None if seed is None else 555, NoisyDataset()))
    second.set_state(state)
    assert second.batches_seen == 3 and second.get_state()["batches"] == 3
    torch.set_rng_state(rng[0])  # what the checkpoint's RNG restore does
    random.setstate(rng[1])
    np.random.set_state(rng[2])
    got = list(second)
    assert len(got) == len(rest)
    assert all(torch.equal(x, y) for x, y in zip(got, rest, strict=True))  # same order and same random "augmentation"
    assert torch.equal(torch.rand(2), after_epoch)


def test_resumable_loader_between_epochs_restores_the_generator():
    a = ResumableLoader(loader())
    batches(a)
    state = a.get_state()
    assert state["batches"] == 0 and state["epoch_start"] is None
    expected = batches(a)
    b = ResumableLoader(loader(seed=1))
    b.set_state(state)
    assert all(torch.equal(x, y) for x, y in zip(batches(b), expected, strict=True))


def test_resumable_loader_rejects_what_it_cannot_restore():
    with pytest.raises(InvalidArgumentError):
        ResumableLoader([1, 2, 3])
    ds = TensorDataset(torch.arange(4.0))
    with pytest.raises(InvalidArgumentError, match="persistent_workers"):
        ResumableLoader(DataLoader(ds, num_workers=1, persistent_workers=True))
    r = ResumableLoader(loader())
    with pytest.raises(InvalidArgumentError):
        r.set_state({"nope": 1})
    assert len(r) == 7 and r.batch_size == 6  # attributes pass through to the DataLoader
