"""Utterance datasets, length-bucketed batch sampling and padding into a :class:`Batch`."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

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
            raise ValueError("utterance_ids, speakers and lengths must have one entry per utterance")
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


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of utterances of similar length, reproducible for (seed, epoch).

    Shuffled: the utterances are permuted, cut into chunks of
    ``chunk_batches * batch_size``, sorted by length inside each chunk, cut
    into batches, and the batches are permuted (so long and short batches
    mix). Not shuffled: the whole set sorted by length (longest first) when
    bucketing, else in order. Without bucketing and with shuffle, it is a
    plain random batching.

    Args:
        lengths: frames of each utterance.
        batch_size: utterances per batch.
        shuffle: permute (training) or not (evaluation).
        bucket_by_length: group similar lengths to reduce padding.
        seed: the base seed; the permutation uses (seed, epoch).
        drop_last: drop a last incomplete batch.
        chunk_batches: batches per sorted chunk; larger means less padding, less randomness.

    Raises:
        ValueError: for a batch_size or chunk_batches below 1.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool,
        bucket_by_length: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        chunk_batches: int = 50,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; allowed: a positive integer")
        if chunk_batches < 1:
            raise ValueError(f"chunk_batches={chunk_batches}; allowed: a positive integer")
        self.lengths = [int(length) for length in lengths]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.bucket_by_length = bucket_by_length
        self.seed = seed
        self.drop_last = drop_last
        self.chunk_batches = chunk_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch's permutation (Lightning calls this every epoch)."""
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        count = len(self.lengths)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(count, generator=generator).tolist() if self.shuffle else list(range(count))
        if self.bucket_by_length:
            chunk = self.chunk_batches * self.batch_size if self.shuffle else max(count, 1)
            bucketed: list[int] = []
            for begin in range(0, count, chunk):
                part = order[begin : begin + chunk]
                # Stable sort: equal lengths keep the random order.
                bucketed.extend(sorted(part, key=lambda i: -self.lengths[i]))
            order = bucketed
        batches = [order[i : i + self.batch_size] for i in range(0, count, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.lengths) // self.batch_size
        return math.ceil(len(self.lengths) / self.batch_size)
