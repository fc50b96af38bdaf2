"""Matrix products through oneDNN, the weight packed once for inference.

On the CPU, oneDNN (torch's ``mkldnn`` backend) multiplies float32 matrices
faster than the MKL path ``F.linear`` takes on some processors (AMD's among
them): ``benchmarks/bench_recurrence.py`` compares both. In inference it is
faster still when the weight sits in oneDNN's blocked layout; packing costs
one pass over the weight, which pays off when the same weight serves many
calls: a post-training-quantization search quantizes each weight once per
candidate and then runs every batch of the optimization set through it.
:class:`PackedLinear` keeps the packed copy of the last weight it saw and
repacks only when handed a different tensor, or the same one changed in
place. In training (a gradient needed) the three products of the forward and
backward passes go through oneDNN with the weight as it is, for weights of at
least ``TRAINING_ONEDNN_MIN_WEIGHT`` elements (smaller ones train faster by MKL).

Only float32 CPU tensors, with a torch built with oneDNN, take this path;
everything else (float64, CUDA) is ``torch.nn.functional.linear``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _onednn_linear_available() -> bool:
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


ONEDNN_LINEAR = _onednn_linear_available()
# In training, oneDNN's plain (unpacked) products beat MKL's only for large
# weights on the machines measured (bench_recurrence.py: the SRU's
# forward+backward with 1.1M- and 3.6M-element weights is 1.3x faster through
# oneDNN; with 65K and 196K elements it is 1.2x slower). Smaller weights train
# through F.linear.
TRAINING_ONEDNN_MIN_WEIGHT = 1 << 19


def _reorder(weight: Tensor, rows: int) -> Tensor:
    """The weight in oneDNN's blocked layout for products with about ``rows`` rows."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, rows)


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight.T + bias`` by oneDNN; ``weight`` plain ``(N, K)`` or packed."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` on 2-D float32 CPU tensors, all three products by oneDNN."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _linear(grad, weight.t().contiguous(), None)
        if ctx.needs_input_grad[1]:
            grad_weight = _linear(grad.t().contiguous(), x.t().contiguous(), None)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_x, grad_weight, grad_bias


class PackedLinear:
    """``F.linear`` that packs its weight once for oneDNN in inference.

    Not a module and holds no parameters: a layer keeps one per product. The
    packed copies are a cache; they are never saved, copied or pickled. Up to
    ``capacity`` weights stay packed (the least recently used is dropped), so
    a search alternating a weight's bit widths packs each quantized copy once.

    Args:
        enabled: pack where possible; False always calls ``F.linear``.
        capacity: packed weights kept (a weight's bit widths and its float copy).
    """

    def __init__(self, *, enabled: bool = True, capacity: int = 6) -> None:
        self.enabled = enabled
        self.capacity = capacity
        # key -> (source held so its memory is not reused, packed copy)
        self._packed: dict[tuple[Any, ...], tuple[Tensor, Tensor]] = {}

    def __call__(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        if not self._onednn(x, weight, bias) or rows == 0:
            return F.linear(x, weight, bias)
        # oneDNN runs strided operands (a GRU's W_ih, a slice of [W_ih | W_hh])
        # through its slow reference kernel: hand it contiguous ones.
        flat = x.reshape(rows, x.shape[-1]).contiguous()
        tensors = (x, weight) if bias is None else (x, weight, bias)
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            if weight.numel() < TRAINING_ONEDNN_MIN_WEIGHT:
                return F.linear(x, weight, bias)
            out = _OneDNNLinear.apply(flat, weight.contiguous(), bias)
        else:
            out = _linear(flat, self._packed_weight(weight, rows), bias)
        return out.view(*x.shape[:-1], weight.shape[0])

    def _onednn(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
        if not (self.enabled and ONEDNN_LINEAR):
            return False
        tensors = (x, weight) if bias is None else (x, weight, bias)
        return all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)

    def _packed_weight(self, weight: Tensor, rows: int) -> Tensor:
        # The memory and version of the weight identify it: holding the last
        # source keeps its memory from being reused by another tensor, and a
        # slice taken anew each call (a GRU's W_ih) still hits. Inference
        # tensors have no version counter; the quantizers' cached outputs
        # never change in place.
        version = None if weight.is_inference() else weight._version
        key = (weight.data_ptr(), version, weight.shape, weight.stride(), weight.dtype)
        entry = self._packed.pop(key, None)
        if entry is None:
            entry = (weight, _reorder(weight.detach().contiguous(), rows))
            while len(self._packed) >= self.capacity:
                self._packed.pop(next(iter(self._packed)))
        self._packed[key] = entry  # most recently used last
        return entry[1]

    def clear(self) -> None:
        """Drops the packed copies (rebuilt on the next calls)."""
        self._packed.clear()

    def __deepcopy__(self, memo: dict[int, Any]) -> PackedLinear:
        return PackedLinear(enabled=self.enabled, capacity=self.capacity)

    def __copy__(self) -> PackedLinear:
        return PackedLinear(enabled=self.enabled, capacity=self.capacity)

    def __getstate__(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "capacity": self.capacity}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(enabled=state["enabled"], capacity=state.get("capacity", 6))  # type: ignore[misc]
