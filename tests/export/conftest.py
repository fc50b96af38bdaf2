"""Tiny calibrated, fake-quantized acoustic models for the export tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from mohaq.models.acoustic import AcousticModel
from mohaq.quant import BitAssignment, apply_bit_assignment, calibrate_activations

FEATURES, CLASSES = 5, 6


def make_model(
    cell: str = "sru",
    granularity: str = "layer",
    bits: int | Callable[[str], int] = 8,
    *,
    projection: int | None = 4,
    hidden: int = 8,
    seed: int = 0,
    clipping: str = "minmax",
    bidirectional: bool = True,
) -> AcousticModel:
    """A 2-layer bidirectional model with random weights, calibrated on random utterances.

    Activations clip at min-max by default: MMSE calibration (the toolkit's
    default, exercised by the CLI tests) costs seconds per model on 2 cores.
    """
    torch.manual_seed(seed)
    model = AcousticModel(
        num_features=FEATURES, num_classes=CLASSES, cell=cell, hidden_size=hidden, num_layers=2,
        projection_size=projection, granularity=granularity, dropout=0.0,
        activation_clipping=clipping, bidirectional=bidirectional,
    )  # fmt: skip
    model.eval()
    generator = torch.Generator().manual_seed(seed + 1)
    batches = []
    for length in torch.randint(6, 15, (10,), generator=generator).tolist():
        batches.append(
            (torch.randn(1, length, FEATURES, generator=generator), torch.tensor([length]))
        )
    calibrate_activations(model, batches, lambda m, b: m(b[0], b[1]))
    names = model.workload().names
    chosen = {name: bits if isinstance(bits, int) else bits(name) for name in names}
    apply_bit_assignment(model, BitAssignment(chosen))
    return model


def example_batch(seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Three padded utterances of lengths 14, 9 and 5."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(3, 14, FEATURES, generator=generator), torch.tensor([14, 9, 5])


def valid_frames(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    return torch.arange(steps)[None, :] < lengths[:, None]


@pytest.fixture
def model_factory() -> Callable[..., AcousticModel]:
    return make_model
