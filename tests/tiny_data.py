"""A tiny in-memory DataModule for LightningModule and callback tests.

Frames of class k are drawn around a class-specific mean, so a small model can
learn them and a quantized one measurably degrades.
"""

from __future__ import annotations

from typing import NamedTuple

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


class TinyBatch(NamedTuple):
    features: Tensor
    targets: Tensor
    lengths: Tensor


class _Utterances(Dataset):
    def __init__(self, count: int, num_features: int, num_classes: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        means = torch.randn(num_classes, num_features, generator=torch.Generator().manual_seed(99))
        self.items = []
        for _ in range(count):
            length = int(torch.randint(12, 24, (1,), generator=generator))
            # Phones last several frames, as real ones do.
            labels = torch.randint(0, num_classes, (length // 4 + 1,), generator=generator)
            labels = labels.repeat_interleave(4)[:length]
            features = means[labels] + 0.3 * torch.randn(length, num_features, generator=generator)
            self.items.append((features, labels))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.items[index]


def collate(items: list[tuple[Tensor, Tensor]]) -> TinyBatch:
    lengths = torch.tensor([len(features) for features, _ in items])
    features = torch.nn.utils.rnn.pad_sequence([f for f, _ in items], batch_first=True)
    targets = torch.nn.utils.rnn.pad_sequence(
        [t for _, t in items], batch_first=True, padding_value=-100
    )
    return TinyBatch(features, targets, lengths)


class TinyDataModule(pl.LightningDataModule):
    def __init__(self, num_features: int = 5, num_classes: int = 6, utterances: int = 24) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_classes = num_classes
        self.scoring_map = list(range(num_classes))
        self.train_set = _Utterances(utterances, num_features, num_classes, seed=1)
        self.dev_set = _Utterances(utterances // 2, num_features, num_classes, seed=2)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=4, shuffle=True, collate_fn=collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dev_set, batch_size=4, collate_fn=collate)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def optimization_dataloader(self, batch_size: int | None = None) -> DataLoader:
        return DataLoader(self.dev_set, batch_size=batch_size or 1, collate_fn=collate)
