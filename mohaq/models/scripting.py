"""TorchScript compilation of the recurrent layers' per-step loops."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

_Function = TypeVar("_Function", bound=Callable[..., object])


def script(function: _Function) -> _Function:
    """TorchScript-compiles a loop, or returns it as plain Python if scripting is unavailable.

    A scripted loop runs each step's operations without returning to Python,
    several times faster than an eager loop for the small per-step tensors of
    a recurrence. torch 2.13 deprecates ``torch.jit.script`` in favour of
    torch.compile, which cannot yet compile these loops without unrolling
    them; the warning is silenced here because users cannot act on it.
    """
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return torch.jit.script(function)
        except Exception:  # noqa: BLE001 - any scripting failure falls back to eager
            return function
