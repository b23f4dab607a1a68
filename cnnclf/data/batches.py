"""Mini-batches as index slices of tensors already in memory (a DataLoader would fetch and collate each sample
in Python, which dominates small nets); an epoch's order is a pure function of (seed, epoch), so a resumed run
sees exactly the batches it would have seen."""

from collections.abc import Iterator

import torch
from torch import Tensor


class EpochOrder:
    """The sample order of one epoch, a seeded shuffle or the natural order; in distributed runs each process
    takes every ``world_size``-th index. Lightning calls ``set_epoch`` with the epoch it restores on resume."""

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                 drop_uneven: bool = False) -> None:
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        # Training processes must step in lock-step: each gets the same number of samples.
        self.usable = size - size % world_size if drop_uneven else size
        self.size, self.epoch = size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> Tensor:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        return order[: self.usable][self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(range(self.rank, self.usable, self.world_size))


class TensorBatches:
    """``(images, targets)`` mini-batches sliced from in-memory tensors in ``sampler`` order. Stateful for
    Lightning: a checkpoint records how far into the epoch the batches had gone, and a resumed run starts there;
    ``stop`` makes the next batch asked for a KeyboardInterrupt, between two whole steps."""

    batch_sampler = None  # Lightning inspects loaders for one; batches here are slices, not sampled lists

    def __init__(self, images: Tensor, targets: Tensor, batch_size: int, sampler: EpochOrder,
                 drop_last: bool = False) -> None:
        self.images, self.targets = images, targets
        self.batch_size, self.sampler, self.drop_last = batch_size, sampler, drop_last
        self.batches_taken = 0
        self.resume_at: dict | None = None
        self.stop = False  # set by a Ctrl-C: the next batch asked for is not handed out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches_taken": self.batches_taken}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_at = state

    def __len__(self) -> int:
        count = len(self.sampler)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.sampler.indices().to(self.images.device)
        first = 0
        if self.resume_at is not None and self.resume_at["epoch"] == self.sampler.epoch:
            first = self.resume_at["batches_taken"]
        self.resume_at, self.batches_taken = None, first
        for batch in range(first, len(self)):
            if self.stop:
                self.stop = False
                raise KeyboardInterrupt
            # Lightning does not fetch ahead from a loader with a length, so when a checkpoint is
            # taken every batch handed out has been trained on: the count is where to resume.
            self.batches_taken = batch + 1
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            yield self.images[index], self.targets[index]
