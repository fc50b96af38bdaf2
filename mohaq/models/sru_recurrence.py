"""The SRU's element-wise recurrence as one fused operation.

Everything in an SRU layer except this recurrence is a matrix product over all
time steps at once. What is truly sequential is small, and it is kept small:

- Forward: only the state needs a loop, ``f_t = sigmoid(F_t + v_f * c_{t-1})``
  and ``c_t = lerp(U_t, c_{t-1}, f_t)`` (plus the in-loop state quantization
  and the padding mask): 4 to 8 element-wise kernels per step in a
  TorchScript loop. The reset gate, the output and everything the backward
  pass needs are recomputed from the stored states with whole-sequence
  tensor operations.
- Backward: the gradient of the state obeys a *linear* recurrence,
  ``dc_t = G_t + A_{t+1} * dc_{t+1}``, where ``G`` (gradient reaching c_t from
  h_t and from r_{t+1}) and ``A`` (d c_{t+1} / d c_t along the state path)
  are computed for all steps at once. The loop is one in-place ``addcmul`` per
  step; every parameter gradient is then a whole-sequence product and sum.

Both directions run in the same call: tensors are direction-major,
``(D, T, B, H)``, and the caller hands each direction its inputs in the order
that direction runs (direction 1 reversed in time). With a padding mask, a
masked step carries the state unchanged: a reversed direction therefore
starts from the initial state at its sequence's last valid frame, so
padding never leaks into it. Outputs at masked steps are meaningless and
the caller zeroes them.

State quantization: when given ``(scale, bits)``, the new state is
fake-quantized at every step, ``clamp(round(c / scale), -2^(b-1),
2^(b-1) - 1) * scale``, with the straight-through estimator of
:func:`mohaq.quant.functional.fake_quantize` (gradient 1 inside the integer
range, 0 where clamped).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mohaq.models.native import KERNEL_CHOICES, KernelChoice
from mohaq.models.scripting import script


@script
def _state_loop(
    candidate: Tensor,
    forget: Tensor,
    v_forget: Tensor,
    mask: Tensor,
    c0: Tensor,
    scale: float,
    qmin: float,
    qmax: float,
    quantize: bool,
    masked: bool,
) -> Tensor:
    """States ``c_1..c_T`` as ``(D, T, B, H)``; ``forget`` already holds ``+ b_f``."""
    steps = candidate.shape[1]
    states = torch.empty_like(forget)
    c = c0
    for t in range(steps):
        f = torch.sigmoid(torch.addcmul(forget[:, t], v_forget, c))
        c_new = torch.lerp(candidate[:, t], c, f)
        if quantize:
            c_new = torch.clamp(torch.round(c_new / scale), qmin, qmax) * scale
        if masked:
            c_new = torch.where(mask[:, t], c_new, c)
        states[:, t] = c_new
        c = c_new
    return states


@script
def _linear_backward_scan(grad: Tensor, decay: Tensor) -> Tensor:
    """In place: ``grad[:, t] += decay[:, t + 1] * grad[:, t + 1]`` for t = T-2 .. 0."""
    steps = grad.shape[1]
    for i in range(steps - 1):
        t = steps - 2 - i
        grad[:, t].addcmul_(decay[:, t + 1], grad[:, t + 1])
    return grad


def _previous_states(c0: Tensor, states: Tensor) -> Tensor:
    """``c_{t-1}`` for every step: ``(D, T, B, H)`` from c0 ``(D, B, H)`` and the states."""
    return torch.cat((c0.unsqueeze(1), states[:, :-1]), dim=1)


class SRURecurrence(torch.autograd.Function):
    """Fused SRU recurrence; see the module docstring. Use :func:`sru_recurrence`."""

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
        mask: Tensor | None,
        c0: Tensor,
        scale: float,
        bits: int,
    ) -> tuple[Tensor, Tensor]:
        quantize = bits > 0
        qmax = float(2 ** (bits - 1) - 1) if quantize else 0.0
        qmin = -qmax - 1.0 if quantize else 0.0
        directions = candidate.shape[0]
        vector = (directions, 1, 1, -1)  # (D, H) -> broadcastable over (D, T, B, H)
        forget = forget_in + b_forget.view(vector)
        masked = mask is not None
        step_mask = mask if mask is not None else forget.new_ones(1, 1, 1, 1, dtype=torch.bool)
        states = _state_loop(
            candidate, forget, v_forget.view(directions, 1, -1), step_mask, c0,
            float(scale), qmin, qmax, quantize, masked,
        )  # fmt: skip
        previous = _previous_states(c0, states)
        reset = torch.sigmoid(
            torch.addcmul(reset_in + b_reset.view(vector), v_reset.view(vector), previous)
        )
        h = torch.lerp(highway, states, reset)
        ctx.save_for_backward(candidate, forget, reset_in, highway, v_forget, v_reset, b_reset,
                              step_mask, c0, states)  # fmt: skip
        ctx.masked, ctx.quantize, ctx.scale, ctx.qmin, ctx.qmax = (
            masked,
            quantize,
            scale,
            qmin,
            qmax,
        )
        ctx.mark_non_differentiable(states)
        return h, states

    @staticmethod
    def backward(ctx, grad_h: Tensor, grad_states: Tensor | None):  # type: ignore[override]
        (candidate, forget, reset_in, highway, v_forget, v_reset, b_reset, step_mask, c0,
         states) = ctx.saved_tensors  # fmt: skip
        directions = candidate.shape[0]
        vector = (directions, 1, 1, -1)
        v_f, v_r = v_forget.view(vector), v_reset.view(vector)
        previous = _previous_states(c0, states)
        f = torch.sigmoid(torch.addcmul(forget, v_f, previous))
        r = torch.sigmoid(torch.addcmul(reset_in + b_reset.view(vector), v_r, previous))
        # Reset gate: h = r * c + (1 - r) * highway.
        d_reset_pre = grad_h * (states - highway) * r * (1.0 - r)
        d_highway = grad_h * (1.0 - r)
        # G_t: what reaches c_t from h_t and from r_{t+1} (r_{t+1} reads c_t).
        grad = grad_h * r
        grad[:, :-1].addcmul_(d_reset_pre[:, 1:], v_r)
        # State path: c_t = m * q(lerp(U_t, c_{t-1}, f_t)) + (1 - m) * c_{t-1}.
        slope = (previous - candidate) * f * (1.0 - f)  # d c_new / d (forget pre-activation)
        through = torch.ones_like(f) if not ctx.quantize else _inside_range(
            torch.lerp(candidate, previous, f), ctx.scale, ctx.qmin, ctx.qmax
        )  # fmt: skip
        if ctx.masked:
            through = through * step_mask
        decay = through * (f + slope * v_f)
        if ctx.masked:
            decay = decay + (~step_mask).to(decay.dtype)
        grad = _linear_backward_scan(grad, decay)  # now dL/dc_t, all steps
        d_c0 = decay[:, 0] * grad[:, 0] + d_reset_pre[:, 0] * v_r[:, 0]
        d_new = grad * through
        d_forget_pre = d_new * slope
        d_candidate = d_new * (1.0 - f)
        over_time_batch = (1, 2)
        return (
            d_candidate,
            d_forget_pre,
            d_reset_pre,
            d_highway,
            (d_forget_pre * previous).sum(over_time_batch),
            (d_reset_pre * previous).sum(over_time_batch),
            d_forget_pre.sum(over_time_batch),
            d_reset_pre.sum(over_time_batch),
            None,
            d_c0,
            None,
            None,
        )


def _inside_range(value: Tensor, scale: float, qmin: float, qmax: float) -> Tensor:
    """1 where ``round(value / scale)`` lies in ``[qmin, qmax]`` (the STE passes), else 0."""
    levels = torch.round(value / scale)
    return ((levels >= qmin) & (levels <= qmax)).to(value.dtype)


def sru_recurrence(
    candidate: Tensor,
    forget_in: Tensor,
    reset_in: Tensor,
    highway: Tensor,
    v_forget: Tensor,
    v_reset: Tensor,
    b_forget: Tensor,
    b_reset: Tensor,
    mask: Tensor | None = None,
    c0: Tensor | None = None,
    state_quant: tuple[Tensor | float, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Runs the SRU recurrence of every direction; returns ``(h, c)``, both ``(D, T, B, H)``.

    ``h_t = r_t * c_t + (1 - r_t) * highway_t`` with ``f_t = sigmoid(F_t + v_f *
    c_{t-1} + b_f)``, ``r_t = sigmoid(R_t + v_r * c_{t-1} + b_r)`` and
    ``c_t = f_t * c_{t-1} + (1 - f_t) * U_t``.

    Args:
        candidate: ``U``, ``(D, T, B, H)``, each direction in its running order.
        forget_in: ``F``, the forget gate's product, ``(D, T, B, H)``.
        reset_in: ``R``, the reset (highway) gate's product, ``(D, T, B, H)``.
        highway: the (already scaled) highway term, ``(D, T, B, H)``.
        v_forget, v_reset, b_forget, b_reset: ``(D, H)``.
        mask: bool ``(D, T, B, 1)``, False at padded steps (state carried
            unchanged); None when nothing is padded (faster).
        c0: initial state ``(D, B, H)``; zeros if None.
        state_quant: ``(scale, bits)`` to fake-quantize the state at every step.

    Returns:
        ``h`` (differentiable) and the states ``c`` (not differentiable: a
        gradient through them raises).
    """
    if c0 is None:
        c0 = candidate.new_zeros(candidate.shape[0], candidate.shape[2], candidate.shape[3])
    scale, bits = (float(state_quant[0]), int(state_quant[1])) if state_quant else (1.0, 0)
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    return SRURecurrence.apply(
        candidate, forget_in, reset_in, highway, v_forget, v_reset, b_forget, b_reset, mask, c0,
        scale, bits,
    )  # fmt: skip


def sru_layer_recurrence(
    u: Tensor,
    highway: Tensor | None,
    v_forget: Tensor,
    v_reset: Tensor,
    b_forget: Tensor,
    b_reset: Tensor,
    lengths: Tensor,
    *,
    alpha: float,
    state_quant: tuple[Tensor | float, int] | None = None,
    keep_states: bool = False,
    kernel: KernelChoice = "auto",
) -> tuple[Tensor, Tensor | None]:
    """An SRU layer's recurrence on its batch-first product; both directions.

    Args:
        u: the product ``W x``, ``(B, T, D, M, H)``: candidate, forget, reset
            and, with ``M = 4``, the highway matrix.
        highway: the highway source ``(B, T, D*H)`` when ``M = 3`` (direction
            ``d`` reads its slice ``d``); None reads ``U``'s 4th matrix.
        v_forget, v_reset, b_forget, b_reset: ``(D, H)``.
        lengths: valid frames per sequence ``(B,)``; direction 1 starts at
            each sequence's last valid frame.
        alpha: the highway scale.
        state_quant: ``(scale, bits)`` to fake-quantize the state at every step.
        keep_states: also return the states ``(B, T, D, H)`` (for calibration).
        kernel: ``"cpu"`` the compiled CPU kernel (:mod:`mohaq.models.sru_cpu`),
            ``"script"`` the TorchScript loop of :func:`sru_recurrence` (any
            device), ``"auto"`` the CPU kernel where it can run, else torch.

    Returns:
        ``h`` as ``(B, T, D*H)``, zero at padded frames, and the states (values
        at padded frames unspecified) or None.

    Raises:
        ValueError: on an unknown ``kernel``, or ``"cpu"`` where it cannot run.
    """
    if kernel not in KERNEL_CHOICES:
        raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
    from mohaq.models.sru_cpu import cpu_kernel_available, sru_cpu_recurrence

    tensors = (u, highway, v_forget, v_reset, b_forget, b_reset)
    use_cpu = kernel != "script" and cpu_kernel_available(*tensors)
    if kernel == "cpu" and not use_cpu:
        raise ValueError(
            "kernel 'cpu' needs CPU float32/float64 tensors and a C++ compiler; "
            "use 'auto' or 'script'"
        )
    if use_cpu:
        return sru_cpu_recurrence(
            u, highway, v_forget, v_reset, b_forget, b_reset, lengths, alpha=alpha,
            state_quant=state_quant, keep_states=keep_states,
        )  # fmt: skip
    return _torch_layer_recurrence(
        u, highway, (v_forget, v_reset, b_forget, b_reset), lengths, alpha, state_quant,
        keep_states,
    )  # fmt: skip


def _by_direction(batch_major: Tensor) -> Tensor:
    """``(B, T, D, ...)`` -> direction-major time-major ``(D, T, B, ...)``, direction 1
    reversed over the whole padded length (its masked steps keep the state at zero)."""
    time_major = batch_major.transpose(0, 1)
    forward = time_major[:, :, 0]
    if batch_major.shape[2] == 1:
        return forward.unsqueeze(0)
    return torch.stack((forward, time_major[:, :, 1].flip(0)))


def _torch_layer_recurrence(
    u: Tensor,
    highway: Tensor | None,
    vectors: tuple[Tensor, Tensor, Tensor, Tensor],
    lengths: Tensor,
    alpha: float,
    state_quant: tuple[Tensor | float, int] | None,
    keep_states: bool,
) -> tuple[Tensor, Tensor | None]:
    batch, steps, directions, _, hidden = u.shape
    gates = _by_direction(u)  # (D, T, B, M, H)
    source = gates[..., 3, :] if highway is None else _by_direction(
        highway.unflatten(-1, (directions, hidden))
    )  # fmt: skip
    valid = torch.arange(steps, device=u.device)[None, :] < lengths.to(u.device)[:, None]
    padded = bool((~valid).any())
    mask = _by_direction(valid.unsqueeze(-1).unsqueeze(-1).expand(-1, -1, directions, 1))
    h, states = sru_recurrence(
        gates[..., 0, :], gates[..., 1, :], gates[..., 2, :], source * alpha, *vectors,
        mask if padded else None, state_quant=state_quant,
    )  # fmt: skip

    def batch_major(direction_major: Tensor) -> Tensor:  # (D, T, B, H) -> (B, T, D, H)
        if directions == 2:
            direction_major = torch.stack((direction_major[0], direction_major[1].flip(0)))
        return direction_major.permute(2, 1, 0, 3)

    out = batch_major(h).reshape(batch, steps, directions * hidden)
    if padded:
        out = out * valid.unsqueeze(-1).to(out.dtype)
    return out, batch_major(states) if keep_states else None
