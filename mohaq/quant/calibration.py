"""Activation calibration: MOHAQ's per-utterance thresholds, recorded in float.

MOHAQ fixes each activation threshold before quantized inference: it runs the
optimization set one utterance at a time, picks a threshold per utterance and
keeps the median. Here every activation and state quantizer records a
histogram of ``|x|`` per utterance; :meth:`FakeQuantizer.threshold_for` turns
them into the median threshold for whatever bit width is applied later, so
one calibration serves every candidate of a search.

Calibration runs the model in float: every quantizer, weights included, is
switched off while observing, so each layer sees the statistics of the float
network (post-training calibration). Bits are restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from mohaq.quant.quantizer import STATIC_ROLES, FakeQuantizer


def all_quantizers(model: nn.Module) -> list[FakeQuantizer]:
    """Every FakeQuantizer in ``model``, in module order."""
    return [module for module in model.modules() if isinstance(module, FakeQuantizer)]


def activation_quantizers(model: nn.Module) -> list[FakeQuantizer]:
    """The quantizers that need calibration (roles ``activation`` and ``state``)."""
    return [q for q in all_quantizers(model) if q.role not in STATIC_ROLES]


@contextmanager
def observing(model: nn.Module, *, reset: bool = True) -> Iterator[list[FakeQuantizer]]:
    """Puts ``model`` in calibration mode for the duration of the block.

    Inside the block the model is in eval mode, every quantizer is float and the
    activation and state quantizers record one utterance per forward call.
    Training flags, bits and observing flags are restored on exit.

    Args:
        model: the model to calibrate.
        reset: forget earlier calibration data first (a fresh calibration).

    Yields:
        The activation and state quantizers that observe.
    """
    quantizers = all_quantizers(model)
    observers = [q for q in quantizers if q.role not in STATIC_ROLES]
    training = {module: module.training for module in model.modules()}
    saved = [(q, q.bits, q.observing) for q in quantizers]
    try:
        model.eval()
        for quantizer in quantizers:
            quantizer.bits = None
        for quantizer in observers:
            if reset:
                quantizer.reset_calibration()
            quantizer.observing = True
        yield observers
    finally:
        for quantizer, bits, was_observing in saved:
            quantizer.bits = bits
            quantizer.observing = was_observing
        for module, mode in training.items():
            module.training = mode


def calibrate_activations(
    model: nn.Module,
    batches: Iterable[Any],
    forward: Callable[[nn.Module, Any], Any],
    *,
    max_utterances: int | None = None,
) -> int:
    """Records activation statistics of ``model`` over ``batches``, in float.

    Earlier calibration data is replaced. Each batch must hold one utterance
    (build the loader with batch size 1): a quantizer records one histogram per
    forward call.

    Args:
        model: the model whose activation and state quantizers are calibrated.
        batches: the calibration batches (MOHAQ: the optimization set).
        forward: runs the model on one batch, e.g. ``lambda m, b: m(b[0], b[1])``.
        max_utterances: stop after this many batches; None for all.

    Returns:
        The number of utterances observed.

    Raises:
        ValueError: if ``max_utterances`` is below 1.
    """
    if max_utterances is not None and max_utterances < 1:
        raise ValueError(f"max_utterances must be >= 1 or None, got {max_utterances}")
    count = 0
    with observing(model), torch.no_grad():
        for batch in batches:
            if max_utterances is not None and count >= max_utterances:
                break
            forward(model, batch)
            count += 1
    return count
