"""Padding collate, packed datasets and the length-bucketed batch sampler."""

from __future__ import annotations

import pytest
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device
from torch.utils.data import DistributedSampler

from mohaq.datamodules.batching import (
    Batch,
    BucketBatchSampler,
    EpochSampler,
    UtteranceDataset,
    UtteranceSample,
    bucket_batch_sampler,
    collate_utterances,
)
from mohaq.datamodules.phones import IGNORE_INDEX


def _sample(length: int, utterance_id: str) -> UtteranceSample:
    features = torch.arange(length * 3, dtype=torch.float16).reshape(length, 3) + 1
    return UtteranceSample(features, torch.full((length,), 7, dtype=torch.int8), utterance_id)


def test_collate_pads_features_with_zero_and_targets_with_ignore_index() -> None:
    batch = collate_utterances([_sample(4, "A_SI1"), _sample(2, "B_SI2"), _sample(3, "C_SX3")])
    assert isinstance(batch, Batch)
    assert batch.features.shape == (3, 4, 3) and batch.features.dtype == torch.float32
    assert batch.targets.shape == (3, 4) and batch.targets.dtype == torch.long
    assert batch.lengths.tolist() == [4, 2, 3] and batch.lengths.dtype == torch.long
    assert batch.utterance_ids == ["A_SI1", "B_SI2", "C_SX3"]
    assert batch.targets.tolist() == [
        [7] * 4,
        [7, 7, IGNORE_INDEX, IGNORE_INDEX],
        [7, 7, 7, IGNORE_INDEX],
    ]
    assert (batch.features[1, 2:] == 0).all() and (batch.features[1, :2] != 0).all()
    # Positional access, as the LightningModule reads it.
    assert batch[0] is batch.features and batch[2] is batch.lengths


def test_batch_survives_lightning_device_transfer() -> None:
    moved = move_data_to_device(collate_utterances([_sample(2, "A_SI1")]), torch.device("cpu"))
    assert isinstance(moved, Batch) and moved.utterance_ids == ["A_SI1"]


def test_packed_dataset_round_trip_and_subset() -> None:
    samples = [_sample(n, f"S{n}") for n in (3, 1, 4)]
    dataset = UtteranceDataset.from_utterances(
        [s.features for s in samples],
        [s.targets for s in samples],
        [s.utterance_id for s in samples],
        ["X", "X", "Y"],
    )
    assert len(dataset) == 3 and dataset.features.shape == (8, 3)
    torch.testing.assert_close(dataset[2].features, samples[2].features)
    subset = dataset.subset([2, 0])
    assert subset.utterance_ids == ["S4", "S3"] and subset.speakers == ["Y", "X"]
    assert subset.lengths.tolist() == [4, 3]
    with pytest.raises(ValueError, match="sum\\(lengths\\) = 9"):
        UtteranceDataset(
            dataset.features, dataset.targets, torch.tensor([3, 2, 4]), ["a"] * 3, ["b"] * 3
        )


def _lengths(count: int = 400) -> list[int]:
    return torch.randint(50, 500, (count,), generator=torch.Generator().manual_seed(1)).tolist()


@pytest.mark.parametrize("bucket", [True, False])
def test_every_utterance_once_per_epoch(bucket: bool) -> None:
    sampler = bucket_batch_sampler(_lengths(103), 8, shuffle=True, bucket_by_length=bucket)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 13
    assert sorted(i for b in batches for i in b) == list(range(103))


def test_order_is_fixed_by_seed_and_epoch() -> None:
    lengths = _lengths()

    def epoch_batches(seed: int, epoch: int, through_sampler: bool = False) -> list[list[int]]:
        batch_sampler = bucket_batch_sampler(lengths, 8, shuffle=True, seed=seed)
        # Lightning calls set_epoch on batch_sampler.sampler; direct callers use the batch sampler.
        (batch_sampler.sampler if through_sampler else batch_sampler).set_epoch(epoch)
        return list(batch_sampler)

    assert epoch_batches(0, 0) == epoch_batches(0, 0)
    assert epoch_batches(0, 3) == epoch_batches(0, 3, through_sampler=True)
    assert epoch_batches(0, 0) != epoch_batches(0, 1)
    assert epoch_batches(0, 0) != epoch_batches(1, 0)


def _padding(lengths: list[int], batches: list[list[int]]) -> int:
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_bucketing_reduces_padding() -> None:
    lengths = _lengths()
    order = EpochSampler(len(lengths), shuffle=True)
    bucketed = BucketBatchSampler(order, 8, lengths=lengths, chunk_batches=10)
    plain = BucketBatchSampler(order, 8, lengths=lengths, bucket_by_length=False)
    assert _padding(lengths, list(bucketed)) < _padding(lengths, list(plain)) / 5


def test_distributed_sampler_can_replace_the_index_order() -> None:
    # What Lightning does under DDP: same batch sampler arguments, a sharded sampler.
    lengths = _lengths(40)
    shards = [
        list(
            BucketBatchSampler(
                DistributedSampler(range(40), num_replicas=2, rank=rank, seed=0), 4, lengths=lengths
            )
        )
        for rank in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 5
    assert sorted(i for shard in shards for b in shard for i in b) == list(range(40))


def test_evaluation_order_and_drop_last() -> None:
    lengths = [5, 9, 1, 7, 3]
    assert list(bucket_batch_sampler(lengths, 2, shuffle=False)) == [[1, 3], [0, 4], [2]]
    assert list(bucket_batch_sampler(lengths, 2, shuffle=False, bucket_by_length=False)) == [
        [0, 1],
        [2, 3],
        [4],
    ]
    dropped = bucket_batch_sampler(lengths, 2, shuffle=True, drop_last=True)
    assert len(dropped) == 2 and all(len(b) == 2 for b in dropped)


def test_bad_sampler_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size=0"):
        bucket_batch_sampler([1], 0, shuffle=True)
    with pytest.raises(ValueError, match="chunk_batches=0"):
        BucketBatchSampler(range(1), 1, lengths=[1], chunk_batches=0)
