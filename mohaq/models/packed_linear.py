"""Inference matrix products through oneDNN with the weight packed once.

oneDNN (torch's ``mkldnn`` backend) multiplies faster when the weight sits in
its own blocked layout; packing costs one pass over the weight, which pays off
when the same weight serves many calls: a post-training-quantization search
quantizes each weight once per candidate and then runs every batch of the
optimization set through it. :class:`PackedLinear` keeps the packed copy of
the last weight it saw and repacks only when handed a different tensor, or
the same one changed in place.

It packs only where that is possible and useful: no gradient needed, a
float32 CPU tensor, and a torch built with oneDNN. Everywhere else (training,
float64, CUDA) it is ``torch.nn.functional.linear``.
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


def _reorder(weight: Tensor, rows: int) -> Tensor:
    """The weight in oneDNN's blocked layout for products with about ``rows`` rows."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, rows)


class PackedLinear:
    """``F.linear`` that packs its weight once for oneDNN in inference.

    Not a module and holds no parameters: a layer keeps one per product. The
    packed copy is a cache; it is never saved, copied or pickled.

    Args:
        enabled: pack where possible; False always calls ``F.linear``.
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._source: Tensor | None = None
        self._source_key: tuple[Any, ...] | None = None
        self._packed: Tensor | None = None

    def __call__(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        if not self._packable(x, weight, bias):
            return F.linear(x, weight, bias)
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        if rows == 0:
            return F.linear(x, weight, bias)
        packed = self._packed_weight(weight, rows)
        flat = x.reshape(rows, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat, packed, bias, "none", [], "")
        return out.view(*x.shape[:-1], weight.shape[0])

    def _packable(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
        if not (self.enabled and ONEDNN_LINEAR):
            return False
        if torch.is_grad_enabled() and (
            x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
        ):
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
        if self._packed is None or self._source_key != key:
            self._packed = _reorder(weight.detach(), rows)
            self._source, self._source_key = weight, key
        return self._packed

    def clear(self) -> None:
        """Drops the packed copy (it is rebuilt on the next call)."""
        self._source = self._source_key = self._packed = None

    def __deepcopy__(self, memo: dict[int, Any]) -> PackedLinear:
        return PackedLinear(enabled=self.enabled)

    def __copy__(self) -> PackedLinear:
        return PackedLinear(enabled=self.enabled)

    def __getstate__(self) -> dict[str, Any]:
        return {"enabled": self.enabled}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(enabled=state["enabled"])  # type: ignore[misc]
