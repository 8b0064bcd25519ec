"""Batch sampling for joint image + video training: every batch holds one modality.

Images and videos cannot share a pixel tensor, so a mixed data set needs batches grouped by modality (the reference
returns two loaders that its training step never consumes, spec §7.2 item 5). `ModalityGroupedBatchSampler` shuffles
each modality, cuts it into batches and interleaves the batches at random, so an epoch visits every example once
and the modalities are mixed in proportion to their sizes.

With `Trainer`, override `get_train_dataloader` (the example scripts do this)::

    class ImageVideoTrainer(Trainer):
        def get_train_dataloader(self):
            sampler = ModalityGroupedBatchSampler.from_lengths(
                [len(image_data), len(video_data)], batch_size=self._train_batch_size, seed=self.args.seed
            )
            loader = DataLoader(
                ConcatDataset([image_data, video_data]),
                batch_sampler=sampler,
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
            )
            return self.accelerator.prepare(loader)  # shards batches across processes; calls set_epoch

Under distributed training Accelerate hands out whole batches to the processes, so every process still sees
single-modality batches. `seeded_rank_batch_sampler` composes the samplers below as `run_pretraining.py` uses them:
each rank slices the same global batches itself, and every example is drawn under a seed of its own, so that a
resumed run continues the uninterrupted one exactly.
"""

from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = [
    "ModalityGroupedBatchSampler",
    "RankSlicedBatchSampler",
    "SeededBatchSampler",
    "SeededDataset",
    "draw_seed",
    "seeded_rank_batch_sampler",
]


class ModalityGroupedBatchSampler(Sampler[list[int]]):
    """Yield batches of indices that all share one group (modality).

    Args:
        groups: the group of each example, e.g. `"image"` / `"video"`, indexed like the data set.
        batch_size: examples per batch.
        shuffle: shuffle within groups and the order of batches (with `seed` + epoch); otherwise groups come in order
            of first appearance, each in index order.
        drop_last: drop each group's last incomplete batch.
        seed: base seed; call `set_epoch` (Trainer/Accelerate do) for a new order every epoch.
    """

    def __init__(
        self,
        groups: Sequence[Hashable],
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        members: dict[Hashable, list[int]] = {}
        for index, group in enumerate(groups):
            members.setdefault(group, []).append(index)
        self.group_indices = {group: torch.tensor(indices) for group, indices in members.items()}

    @classmethod
    def from_lengths(cls, lengths: Sequence[int], batch_size: int, **kwargs) -> "ModalityGroupedBatchSampler":
        """For `ConcatDataset(datasets)`: the i-th data set (of `lengths[i]` examples) is group i."""
        groups = [group for group, length in enumerate(lengths) for _ in range(length)]
        return cls(groups, batch_size, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches = []
        for indices in self.group_indices.values():
            if self.shuffle:
                indices = indices[torch.randperm(len(indices), generator=generator)]
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size].tolist()
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()

    def __len__(self) -> int:
        sizes = [len(indices) for indices in self.group_indices.values()]
        if self.drop_last:
            return sum(size // self.batch_size for size in sizes)
        return sum(-(-size // self.batch_size) for size in sizes)


class RankSlicedBatchSampler(Sampler[list]):
    """This rank's slice of every global batch of `batch_sampler` (whose batches hold `num_replicas` x B indices).

    All ranks walk the same global batches, so at every step they hold the same modality (the cross-rank ITC and MVSC
    gathers need equal shapes: an image has one frame-CLS, a video F), disjoint examples, and the same number of
    batches. The inner sampler is exposed as `batch_sampler`, which is where `Trainer` forwards `set_epoch`.
    """

    def __init__(self, batch_sampler: Sampler[list], num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas}).")
        self.batch_sampler = batch_sampler
        self.num_replicas = num_replicas
        self.rank = rank

    def __iter__(self):
        for batch in self.batch_sampler:
            if len(batch) % self.num_replicas:
                raise ValueError(f"A global batch of {len(batch)} cannot be split over {self.num_replicas} ranks.")
            size = len(batch) // self.num_replicas
            yield batch[self.rank * size : (self.rank + 1) * size]

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


def draw_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys, the same in every process (unlike `hash` of strings)."""
    return (
        int(np.random.SeedSequence([int(key) for key in keys]).generate_state(2, dtype=np.uint32).view(np.uint64)[0])
        >> 1
    )


class SeededBatchSampler(Sampler[list[tuple[int, int]]]):
    """Tags every index of `batch_sampler`'s batches with the seed of that draw: `(index, draw_seed(seed, epoch,
    index))`, for a `SeededDataset`.

    The seed depends only on the run's seed, the epoch and the example, so the random augmentation, frame sampling
    and text masking of a batch do not depend on what ran before it: a resumed run redraws exactly the batches of
    the uninterrupted one, with any number of DataLoader workers, and the data pipeline never touches the global RNG
    that the model's own draws (ITM sampling, patch dropping, dropout) and `Trainer`'s checkpoints use.
    `set_epoch` (which `Trainer` calls) is forwarded to `batch_sampler`.
    """

    def __init__(self, batch_sampler: Sampler[list[int]], seed: int):
        self.batch_sampler = batch_sampler
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def __iter__(self):
        for batch in self.batch_sampler:
            yield [(index, draw_seed(self.seed, self.epoch, index)) for index in batch]

    def __len__(self) -> int:
        return len(self.batch_sampler)


class SeededDataset(Dataset):
    """Reads `dataset[index]` for a key `(index, seed)` under `torch.manual_seed(seed)`, with torch's global RNG
    saved and restored around it, and adds the seed to the example as `sample_seed` (which
    `SCLPretrainingCollator` masks with). Keys come from a `SeededBatchSampler`."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            example = self.dataset[index]
        return {**example, "sample_seed": seed}


def seeded_rank_batch_sampler(
    lengths: Sequence[int], batch_size: int, num_replicas: int = 1, rank: int = 0, *, seed: int = 0
) -> RankSlicedBatchSampler:
    """The exactly resumable pre-training batches of one rank, for `SeededDataset(ConcatDataset(parts))` where part
    i has `lengths[i]` examples (e.g. images, then videos).

    Global batches of `batch_size * num_replicas` indices are drawn from one part each
    (`ModalityGroupedBatchSampler`, shuffled with `seed` + epoch, incomplete batches dropped so that every rank gets
    an equal slice at every step), their indices tagged with per-example seeds (`SeededBatchSampler`), and rank
    `rank` keeps its slice of each (`RankSlicedBatchSampler`). Use it in a plain `DataLoader`: Accelerate would
    shard the already rank-aware batches again.
    """
    global_batch = batch_size * num_replicas
    grouped = ModalityGroupedBatchSampler.from_lengths(lengths, batch_size=global_batch, drop_last=True, seed=seed)
    if len(grouped) == 0:
        raise ValueError(f"No part has enough examples {list(lengths)} for a global batch of {global_batch}.")
    return RankSlicedBatchSampler(SeededBatchSampler(grouped, seed), num_replicas, rank)
