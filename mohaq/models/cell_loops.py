"""The GRU and LSTM per-step loops, scripted, with quantization points inside.

The input products of all steps are computed before the loop in one matrix
product; what remains per step is the recurrent product (one ``baddbmm`` for
both directions) and the gates. Run eagerly, each of those small operations
costs a trip through Python; scripted, the loop runs without it.

Every quantization point inside the loop (the recurrent state ``h``, the
cell state ``c``, and at operator granularity every operator's output) has
an index into four parallel lists, built by :func:`loop_quantization` from
the layer's quantizers:

- mode ``OFF``: float, the value passes unchanged;
- ``FIXED``: fake quantization with a fixed (calibrated) scale;
- ``DYNAMIC``: the scale is ``max|x|`` of this step's value (a quantizer
  with no calibration yet, as :class:`mohaq.quant.quantizer.FakeQuantizer`
  does per call);
- ``RECORD``: calibration; the value passes unchanged and is recorded, and
  the caller observes every step's values as one utterance.

Fake quantization is ``clamp(round(x / scale), low, high) * scale`` with the
straight-through gradient of :func:`mohaq.quant.functional.fake_quantize`
(1 inside the integer range, 0 where clamped).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mohaq.models.scripting import script
from mohaq.quant.functional import MIN_THRESHOLD, qmax, qmin
from mohaq.quant.quantizer import FakeQuantizer

OFF, FIXED, DYNAMIC, RECORD = 0, 1, 2, 3
assert MIN_THRESHOLD == 1e-12  # written out in _point

# Point order inside each loop.
GRU_LOOP_POINTS: tuple[str, ...] = ("h", "hh", "r", "z", "n", "rhn", "zh", "zn")
LSTM_LOOP_POINTS: tuple[str, ...] = ("h", "c", "hh", "i", "f", "g", "o", "fc", "ig", "tanh_c", "oc")


def loop_quantization(
    quantizers: Sequence[FakeQuantizer | None], like: Tensor
) -> tuple[list[int], Tensor, list[float], list[float]]:
    """Modes, scales (a tensor like ``like``), lows and highs of the loop's points.

    ``None`` stands for a point the layer does not have (float).
    """
    modes, scales, lows, highs = [], [], [], []
    for quantizer in quantizers:
        mode, scale, low, high = OFF, 1.0, 0.0, 0.0
        if quantizer is not None and quantizer.observing:
            mode = RECORD
        elif quantizer is not None and quantizer.bits is not None:
            bits = quantizer.bits
            low, high = float(qmin(bits)), float(qmax(bits))
            if quantizer.has_calibration:
                params = quantizer.quant_params()
                assert params is not None
                mode, scale = FIXED, float(params[0])
            else:
                mode = DYNAMIC
        modes.append(mode)
        scales.append(scale)
        lows.append(low)
        highs.append(high)
    return modes, torch.tensor(scales, dtype=like.dtype, device=like.device), lows, highs


def observe_records(
    quantizers: Sequence[FakeQuantizer | None], records: list[list[Tensor]]
) -> None:
    """Hands each recording quantizer its per-step values, stacked: one utterance."""
    for quantizer, values in zip(quantizers, records, strict=True):
        if quantizer is not None and values:
            quantizer(torch.stack(values))


def _point(
    x: Tensor,
    index: int,
    modes: list[int],
    scales: Tensor,
    lows: list[float],
    highs: list[float],
    grad: bool,
    records: list[list[Tensor]],
) -> Tensor:
    # TorchScript reads no global ints: 0 OFF, 1 FIXED, 2 DYNAMIC, 3 RECORD.
    mode = modes[index]
    if mode == 0:
        return x
    if mode == 3:
        records[index].append(x.detach())
        return x
    if mode == 2:
        scale = torch.clamp_min(x.detach().abs().max(), 1e-12) / highs[index]
    else:
        scale = scales[index]
    levels = torch.round(x / scale)
    clamped = torch.clamp(levels, lows[index], highs[index])
    quantized = clamped * scale
    if grad:
        # Straight-through: the rounding has no gradient, x's term adds 1
        # inside the integer range and 0 where clamped; its value is exactly 0.
        return quantized + (x - x.detach()) * (levels == clamped).to(x.dtype)
    return quantized


def _new_records(count: int) -> list[list[Tensor]]:
    records: list[list[Tensor]] = []
    for _ in range(count):
        records.append(torch.jit.annotate(list[Tensor], []))
    return records


@script
def gru_loop(
    ih: Tensor,
    w_hh_t: Tensor,
    b_hh: Tensor,
    valid: Tensor | None,
    modes: list[int],
    scales: Tensor,
    lows: list[float],
    highs: list[float],
    grad: bool,
) -> tuple[Tensor, list[list[Tensor]]]:
    """GRU steps over ``ih`` ``(T, D, B, 3H)`` (bias and ``ih`` point applied).

    Args:
        ih: the input products of every step, direction 1 reversed within lengths.
        w_hh_t: ``(D, H, 3H)``, the recurrent weights transposed.
        b_hh: ``(D, 1, 3H)``.
        valid: ``(T, 1, B, 1)`` bool, False at padded steps (the state is
            carried, the output is zero); None when nothing is padded.
        modes, scales, lows, highs: the points of :data:`GRU_LOOP_POINTS`.
        grad: build the straight-through gradient of quantized points.

    Returns:
        The outputs ``(T, D, B, H)`` and the recorded values per point.
    """
    hidden = w_hh_t.shape[1]
    records = _new_records(len(modes))
    h = ih.new_zeros(ih.shape[1], ih.shape[2], hidden)
    outputs: list[Tensor] = []
    for t in range(ih.shape[0]):
        h_in = _point(h, 0, modes, scales, lows, highs, grad, records)
        hh = _point(torch.baddbmm(b_hh, h_in, w_hh_t), 1, modes, scales, lows, highs, grad, records)
        x = ih[t]
        # r and z in one sigmoid; each is its own point.
        rz = torch.sigmoid(x[..., : 2 * hidden] + hh[..., : 2 * hidden])
        r = _point(rz[..., :hidden], 2, modes, scales, lows, highs, grad, records)
        z = _point(rz[..., hidden:], 3, modes, scales, lows, highs, grad, records)
        rhn = _point(r * hh[..., 2 * hidden :], 5, modes, scales, lows, highs, grad, records)
        n = _point(torch.tanh(x[..., 2 * hidden :] + rhn), 4, modes, scales, lows, highs, grad,
                   records)  # fmt: skip
        zn = _point((1.0 - z) * n, 7, modes, scales, lows, highs, grad, records)
        zh = _point(z * h_in, 6, modes, scales, lows, highs, grad, records)
        h_new = zn + zh
        if valid is None:
            h = h_new
            outputs.append(h_new)
        else:
            step_valid = valid[t]
            h = torch.where(step_valid, h_new, h)
            outputs.append(torch.where(step_valid, h_new, torch.zeros_like(h_new)))
    return torch.stack(outputs), records


@script
def lstm_loop(
    ih: Tensor,
    w_hh_t: Tensor,
    b_hh: Tensor,
    valid: Tensor | None,
    modes: list[int],
    scales: Tensor,
    lows: list[float],
    highs: list[float],
    grad: bool,
) -> tuple[Tensor, list[list[Tensor]]]:
    """LSTM steps over ``ih`` ``(T, D, B, 4H)``; as :func:`gru_loop`, with the
    points of :data:`LSTM_LOOP_POINTS`."""
    hidden = w_hh_t.shape[1]
    records = _new_records(len(modes))
    h = ih.new_zeros(ih.shape[1], ih.shape[2], hidden)
    c = torch.zeros_like(h)
    outputs: list[Tensor] = []
    for t in range(ih.shape[0]):
        h_in = _point(h, 0, modes, scales, lows, highs, grad, records)
        hh = _point(torch.baddbmm(b_hh, h_in, w_hh_t), 2, modes, scales, lows, highs, grad, records)
        gates = ih[t] + hh
        # i, f and o in one sigmoid (g's share of it is unused); each is its own point.
        sig = torch.sigmoid(gates)
        i = _point(sig[..., :hidden], 3, modes, scales, lows, highs, grad, records)
        f = _point(sig[..., hidden : 2 * hidden], 4, modes, scales, lows, highs, grad, records)
        g = _point(torch.tanh(gates[..., 2 * hidden : 3 * hidden]), 5, modes, scales, lows, highs,
                   grad, records)  # fmt: skip
        o = _point(sig[..., 3 * hidden :], 6, modes, scales, lows, highs, grad, records)
        fc = _point(f * c, 7, modes, scales, lows, highs, grad, records)
        ig = _point(i * g, 8, modes, scales, lows, highs, grad, records)
        c_new = _point(fc + ig, 1, modes, scales, lows, highs, grad, records)
        tanh_c = _point(torch.tanh(c_new), 9, modes, scales, lows, highs, grad, records)
        h_new = _point(o * tanh_c, 10, modes, scales, lows, highs, grad, records)
        if valid is None:
            c, h = c_new, h_new
            outputs.append(h_new)
        else:
            step_valid = valid[t]
            c = torch.where(step_valid, c_new, c)
            h = torch.where(step_valid, h_new, h)
            outputs.append(torch.where(step_valid, h_new, torch.zeros_like(h_new)))
    return torch.stack(outputs), records
