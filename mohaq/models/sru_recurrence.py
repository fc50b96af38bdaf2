"""The SRU's element-wise recurrence as one fused operation.

Everything in an SRU layer except this recurrence is a matrix product over all
time steps at once. The recurrence itself is element-wise, and running it as a
Python loop of small tensor operations would dominate the run time (and
autograd would record ~15 nodes per step). Here both the forward and the
backward pass are TorchScript loops over time, joined by a custom
autograd.Function, so each step is a handful of fused element-wise kernels and
the backward pass is written by hand instead of replayed from a tape.

The recurrent state can be fake-quantized inside the loop (symmetric, given
scale and bits). Its gradient is straight-through (identity), like the
quantizers' estimator inside the clipping range.

Shapes: time-major, ``(T, B, D, H)`` with D the directions; per-direction
vectors are ``(D, H)``. Padding is handled with a ``(T, B, 1, 1)`` mask: at a
padded step the state is carried unchanged and the output is zero. A backward
direction is run by the caller on sequences reversed within their lengths.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.jit.script
def _forward_loop(
    candidate: Tensor,
    forget_in: Tensor,
    reset_in: Tensor,
    highway: Tensor,
    v_forget: Tensor,
    v_reset: Tensor,
    b_forget: Tensor,
    b_reset: Tensor,
    mask: Tensor,
    c0: Tensor,
    scale: float,
    qmin: float,
    qmax: float,
    quantize: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    steps = candidate.shape[0]
    h = torch.empty_like(candidate)
    c_all = torch.empty_like(candidate)
    f_all = torch.empty_like(candidate)
    r_all = torch.empty_like(candidate)
    c_prev = c0
    for t in range(steps):
        f = torch.sigmoid(forget_in[t] + v_forget * c_prev + b_forget)
        r = torch.sigmoid(reset_in[t] + v_reset * c_prev + b_reset)
        c_new = f * c_prev + (1.0 - f) * candidate[t]
        if quantize:
            c_new = torch.clamp(torch.round(c_new / scale), qmin, qmax) * scale
        m = mask[t]
        c = m * c_new + (1.0 - m) * c_prev
        h[t] = m * (r * c + (1.0 - r) * highway[t])
        c_all[t] = c
        f_all[t] = f
        r_all[t] = r
        c_prev = c
    return h, c_all, f_all, r_all


@torch.jit.script
def _backward_loop(
    grad_h: Tensor,
    grad_c_last: Tensor,
    candidate: Tensor,
    highway: Tensor,
    v_forget: Tensor,
    v_reset: Tensor,
    mask: Tensor,
    c0: Tensor,
    c_all: Tensor,
    f_all: Tensor,
    r_all: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    steps = candidate.shape[0]
    d_candidate = torch.empty_like(candidate)
    d_forget_in = torch.empty_like(candidate)
    d_reset_in = torch.empty_like(candidate)
    d_highway = torch.empty_like(candidate)
    d_v_forget = torch.zeros_like(c0)
    d_v_reset = torch.zeros_like(c0)
    carry = grad_c_last
    for i in range(steps):
        t = steps - 1 - i
        m = mask[t]
        c = c_all[t]
        f = f_all[t]
        r = r_all[t]
        c_prev = c_all[t - 1] if t > 0 else c0
        dh = grad_h[t] * m
        d_reset = dh * (c - highway[t])
        d_highway[t] = dh * (1.0 - r)
        d_c = carry + dh * r
        # c = m * q(c_new) + (1 - m) * c_prev; q is straight-through.
        d_c_new = d_c * m
        d_c_prev = d_c * (1.0 - m)
        d_f = d_c_new * (c_prev - candidate[t])
        d_candidate[t] = d_c_new * (1.0 - f)
        d_c_prev = d_c_prev + d_c_new * f
        d_pre_f = d_f * f * (1.0 - f)
        d_pre_r = d_reset * r * (1.0 - r)
        d_forget_in[t] = d_pre_f
        d_reset_in[t] = d_pre_r
        d_v_forget = d_v_forget + d_pre_f * c_prev
        d_v_reset = d_v_reset + d_pre_r * c_prev
        carry = d_c_prev + d_pre_f * v_forget + d_pre_r * v_reset
    return (
        d_candidate, d_forget_in, d_reset_in, d_highway,
        d_v_forget, d_v_reset, d_forget_in, d_reset_in, carry,
    )  # fmt: skip


class SRURecurrence(torch.autograd.Function):
    """Fused SRU recurrence; see the module docstring for shapes."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        candidate: Tensor,
        forget_in: Tensor,
        reset_in: Tensor,
        highway: Tensor,
        v_forget: Tensor,
        v_reset: Tensor,
        b_forget: Tensor,
        b_reset: Tensor,
        mask: Tensor,
        c0: Tensor,
        scale: float,
        bits: int,
    ) -> tuple[Tensor, Tensor]:
        quantize = bits > 0
        qmax = float(2 ** (bits - 1) - 1) if quantize else 0.0
        qmin = -qmax - 1.0 if quantize else 0.0
        h, c_all, f_all, r_all = _forward_loop(
            candidate, forget_in, reset_in, highway, v_forget, v_reset, b_forget, b_reset,
            mask, c0, float(scale), qmin, qmax, quantize,
        )  # fmt: skip
        ctx.save_for_backward(candidate, highway, v_forget, v_reset, mask, c0, c_all, f_all, r_all)
        return h, c_all

    @staticmethod
    def backward(ctx, grad_h: Tensor, grad_c_all: Tensor):  # type: ignore[override]
        candidate, highway, v_forget, v_reset, mask, c0, c_all, f_all, r_all = ctx.saved_tensors
        if grad_c_all is not None and grad_c_all.abs().sum() > 0:
            raise RuntimeError("gradients through the returned states are not supported")
        grad_c_last = torch.zeros_like(c0)
        (d_candidate, d_forget_in, d_reset_in, d_highway, d_v_forget, d_v_reset,
         d_pre_f, d_pre_r, d_c0) = _backward_loop(
            grad_h.contiguous(), grad_c_last, candidate, highway, v_forget, v_reset, mask, c0,
            c_all, f_all, r_all,
        )  # fmt: skip
        # v and b are per (direction, unit): sum over batch, and over time for b.
        d_v_forget = d_v_forget.sum(0)
        d_v_reset = d_v_reset.sum(0)
        d_b_forget = d_pre_f.sum((0, 1))
        d_b_reset = d_pre_r.sum((0, 1))
        return (
            d_candidate, d_forget_in, d_reset_in, d_highway, d_v_forget, d_v_reset,
            d_b_forget, d_b_reset, None, d_c0, None, None,
        )  # fmt: skip


def sru_recurrence(
    candidate: Tensor,
    forget_in: Tensor,
    reset_in: Tensor,
    highway: Tensor,
    v_forget: Tensor,
    v_reset: Tensor,
    b_forget: Tensor,
    b_reset: Tensor,
    mask: Tensor,
    c0: Tensor | None = None,
    state_quant: tuple[Tensor, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Runs the recurrence; returns (h, c) for every step, both ``(T, B, D, H)``.

    Args:
        candidate, forget_in, reset_in, highway: ``(T, B, D, H)`` inputs: W x,
            the forget and reset gate pre-activations from the matrix product,
            and the (scaled) highway term.
        v_forget, v_reset, b_forget, b_reset: ``(D, H)`` recurrent vectors and biases.
        mask: ``(T, B, 1, 1)``, 1 at valid steps, 0 at padding.
        c0: initial state ``(B, D, H)``; zeros if None.
        state_quant: ``(scale, bits)`` to fake-quantize the state at every step.
    """
    if c0 is None:
        c0 = candidate.new_zeros(candidate.shape[1:])
    scale, bits = (float(state_quant[0]), int(state_quant[1])) if state_quant else (1.0, 0)
    h, c_all = SRURecurrence.apply(
        candidate.contiguous(), forget_in.contiguous(), reset_in.contiguous(),
        highway.contiguous(), v_forget, v_reset, b_forget, b_reset, mask, c0, scale, bits,
    )  # fmt: skip
    return h, c_all
