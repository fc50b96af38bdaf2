"""Utterance datasets, length-bucketed batch sampling and padding into a :class:`Batch`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, Dataset, Sampler

from mohaq.datamodules.phones import IGNORE_INDEX


class Batch(NamedTuple):
    """A padded batch; Lightning moves the tensors to the device, the ids stay as they are.

    Attributes:
        features: ``[B, T, F]`` float32, zeros after each utterance's length.
        targets: ``[B, T]`` long 48-class frame targets, IGNORE_INDEX at padding and ``q``.
        lengths: ``[B]`` long, frames of each utterance.
        utterance_ids: ``<SPEAKER>_<UTT>`` of each row.
    """

    features: Tensor
    targets: Tensor
    lengths: Tensor
    utterance_ids: list[str]


class UtteranceSample(NamedTuple):
    """One dataset item: ``features [T, F]``, ``targets [T]``, id."""

    features: Tensor
    targets: Tensor
    utterance_id: str


class UtteranceDataset(Dataset[UtteranceSample]):
    """Utterances packed in one frame tensor (what the feature cache stores).

    Packing keeps thousands of utterances in two tensors, fast to save, load
    and share with worker processes.

    Args:
        features: ``[sum T_i, F]`` frames of all utterances, back to back.
        targets: ``[sum T_i]`` frame targets.
        lengths: ``[N]`` frames per utterance.
        utterance_ids: ``N`` ids.
        speakers: ``N`` speaker ids.

    Raises:
        ValueError: if the sizes disagree.
    """

    def __init__(
        self,
        features: Tensor,
        targets: Tensor,
        lengths: Tensor,
        utterance_ids: Sequence[str],
        speakers: Sequence[str],
    ) -> None:
        total = int(lengths.sum())
        if features.shape[0] != total or targets.shape[0] != total:
            raise ValueError(
                f"features ({features.shape[0]} frames) and targets ({targets.shape[0]}) must "
                f"hold sum(lengths) = {total} frames"
            )
        if not len(utterance_ids) == len(speakers) == lengths.numel():
            raise ValueError(
                "utterance_ids, speakers and lengths must have one entry per utterance"
            )
        self.features = features
        self.targets = targets
        self.lengths = lengths.long()
        self.utterance_ids = list(utterance_ids)
        self.speakers = list(speakers)
        self._offsets = torch.cat([torch.zeros(1, dtype=torch.long), self.lengths.cumsum(0)])

    @classmethod
    def from_utterances(
        cls,
        features: Sequence[Tensor],
        targets: Sequence[Tensor],
        utterance_ids: Sequence[str],
        speakers: Sequence[str],
    ) -> UtteranceDataset:
        """Packs per-utterance tensors."""
        lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.long)
        num_features = features[0].shape[1] if features else 0
        return cls(
            torch.cat(list(features)) if features else torch.zeros(0, num_features),
            torch.cat(list(targets)) if targets else torch.zeros(0, dtype=torch.int8),
            lengths,
            utterance_ids,
            speakers,
        )

    def subset(self, indices: Sequence[int]) -> UtteranceDataset:
        """A packed copy holding only ``indices``, in that order."""
        items = [self[i] for i in indices]
        return UtteranceDataset.from_utterances(
            [item.features for item in items],
            [item.targets for item in items],
            [item.utterance_id for item in items],
            [self.speakers[i] for i in indices],
        )

    def __len__(self) -> int:
        return self.lengths.numel()

    def __getitem__(self, index: int) -> UtteranceSample:
        start, end = int(self._offsets[index]), int(self._offsets[index + 1])
        return UtteranceSample(
            self.features[start:end], self.targets[start:end], self.utterance_ids[index]
        )


def collate_utterances(samples: Sequence[UtteranceSample]) -> Batch:
    """Pads samples to the longest: features with 0, targets with IGNORE_INDEX."""
    lengths = torch.tensor([s.features.shape[0] for s in samples], dtype=torch.long)
    longest = int(lengths.max()) if len(samples) else 0
    num_features = samples[0].features.shape[1] if samples else 0
    features = torch.zeros(len(samples), longest, num_features, dtype=torch.float32)
    targets = torch.full((len(samples), longest), IGNORE_INDEX, dtype=torch.long)
    for row, sample in enumerate(samples):
        features[row, : lengths[row]] = sample.features
        targets[row, : lengths[row]] = sample.targets
    return Batch(features, targets, lengths, [s.utterance_id for s in samples])


class EpochSampler(Sampler[int]):
    """Indices ``0..num_items-1``, permuted by (seed, epoch) when shuffling.

    Lightning calls ``set_epoch`` on ``dataloader.batch_sampler.sampler`` at
    every epoch, so this is where the epoch lives (as in DistributedSampler,
    which Lightning puts in its place under DDP).

    Args:
        num_items: dataset size.
        shuffle: permute or keep the order.
        seed: the base seed.
    """

    def __init__(self, num_items: int, *, shuffle: bool, seed: int = 0) -> None:
        self.num_items = num_items
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_items))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_items, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_items


class BucketBatchSampler(BatchSampler):
    """Batches of utterances of similar length, reproducible for (seed, epoch).

    The index order comes from ``sampler`` (an :class:`EpochSampler`, or the
    DistributedSampler Lightning injects under DDP: it keeps this class's
    other arguments because this is a BatchSampler). That order is cut into
    chunks of ``chunk_batches * batch_size``, sorted by length inside each
    chunk (longest first), cut into batches, and, with ``shuffle_batches``,
    the batches are permuted so long and short batches mix. Without bucketing
    the order is batched as it comes.

    Args:
        sampler: yields dataset indices; its ``epoch`` (if any) seeds the batch permutation.
        batch_size: utterances per batch.
        drop_last: drop a last incomplete batch.
        lengths: frames of each utterance, indexed like the dataset.
        bucket_by_length: group similar lengths to reduce padding.
        shuffle_batches: permute the batches (training).
        seed: the base seed of the batch permutation.
        chunk_batches: batches per sorted chunk (larger: less padding, less
            randomness); None sorts the whole order (evaluation).

    Raises:
        ValueError: for a batch_size or chunk_batches below 1.
    """

    def __init__(
        self,
        sampler: Sampler[int] | Iterable[int],
        batch_size: int,
        drop_last: bool = False,
        *,
        lengths: Sequence[int],
        bucket_by_length: bool = True,
        shuffle_batches: bool = True,
        seed: int = 0,
        chunk_batches: int | None = 50,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}; allowed: a positive integer")
        if chunk_batches is not None and chunk_batches < 1:
            raise ValueError(
                f"chunk_batches={chunk_batches!r}; allowed: a positive integer or None"
            )
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = [int(length) for length in lengths]
        self.bucket_by_length = bucket_by_length
        self.shuffle_batches = shuffle_batches
        self.seed = seed
        self.chunk_batches = chunk_batches

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch's order (forwarded to the sampler, which Lightning also calls)."""
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def _batches(self) -> list[list[int]]:
        order = list(self.sampler)
        if self.bucket_by_length:
            chunk = (
                len(order) if self.chunk_batches is None else self.chunk_batches * self.batch_size
            )
            bucketed: list[int] = []
            for begin in range(0, len(order), max(chunk, 1)):
                # Stable sort: equal lengths keep the sampler's order.
                bucketed.extend(
                    sorted(order[begin : begin + chunk], key=lambda i: -self.lengths[i])
                )
            order = bucketed
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle_batches:
            epoch = int(getattr(self.sampler, "epoch", 0))
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 1)
            batches = [
                batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()
            ]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())


def bucket_batch_sampler(
    lengths: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool,
    bucket_by_length: bool = True,
    seed: int = 0,
    drop_last: bool = False,
) -> BucketBatchSampler:
    """The batch sampler of a split: shuffled chunks for training, one sorted pass for evaluation.

    Args:
        lengths: frames of each utterance.
        batch_size: utterances per batch.
        shuffle: training order (random, per epoch) or evaluation order (fixed).
        bucket_by_length: group similar lengths.
        seed: base seed of the training order.
        drop_last: drop a last incomplete batch.

    Raises:
        ValueError: for a batch_size below 1.
    """
    return BucketBatchSampler(
        EpochSampler(len(lengths), shuffle=shuffle, seed=seed),
        batch_size,
        drop_last,
        lengths=lengths,
        bucket_by_length=bucket_by_length,
        shuffle_batches=shuffle,
        seed=seed,
        chunk_batches=50 if shuffle else None,
    )
