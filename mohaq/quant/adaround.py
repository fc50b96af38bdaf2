"""AdaRound: learned rounding of a weight matrix (Nagel et al., ICML 2020).

Rounding every weight to its nearest grid point minimizes the weight error, not
the error of the layer's output. AdaRound chooses, per weight, whether to round
down or up so that the product's output on calibration data stays close to the
float one:

    minimize  ||(W_q - W) X||^2 / ||W X||^2  +  lambda * mean(1 - |2 h(V) - 1|^beta)
    W_q = scale * clamp(floor(W / scale) + h(V), qmin, qmax)
    h(V) = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)

with ``zeta = 1.1``, ``gamma = -0.1`` (the rectified sigmoid) and ``beta``
annealed linearly from 20 to 2 after a warm-up without the regularizer, which drives
every ``h`` to 0 or 1. The result is rounded hard (``h >= 0.5``).

The reconstruction term needs the inputs only through their second moment
``G = X X^T / N`` (``in x in``): ``||dW X||^2 / N = trace(dW G dW^T)``. One
pass over the calibration data collects ``G``; each iteration then costs
``out x in x in`` whatever the number of frames. ``G`` is of the float inputs,
so the result depends only on the weight, its scale and bit width: it can be
computed once per (point, bit width) and combined freely in a search.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mohaq.quant.functional import fake_quantize, qmax, qmin

ZETA = 1.1
GAMMA = -0.1


@dataclass(frozen=True)
class AdaRoundSettings:
    """Optimization settings of AdaRound.

    Attributes:
        iterations: Adam steps per (weight, bit width).
        learning_rate: Adam's learning rate on ``V``.
        regularization: ``lambda``, the weight of the rounding regularizer
            (relative to the output error normalized by the float output energy).
        warmup: share of the iterations without the regularizer.
        beta_start, beta_end: the annealing range of ``beta``.
    """

    iterations: int = 1000
    learning_rate: float = 1e-2
    regularization: float = 0.01
    warmup: float = 0.2
    beta_start: float = 20.0
    beta_end: float = 2.0

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.regularization < 0:
            raise ValueError(f"regularization must be >= 0, got {self.regularization}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")
        if not self.beta_start >= self.beta_end > 0:
            raise ValueError(
                f"beta_start >= beta_end > 0 is required, got {self.beta_start}, {self.beta_end}"
            )


def rectified_sigmoid(v: Tensor) -> Tensor:
    """``h(V)``: the sigmoid stretched to ``(gamma, zeta)`` and clipped to [0, 1]."""
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def _initial_v(remainder: Tensor) -> Tensor:
    """``V`` with ``h(V)`` equal to ``remainder`` (in [0, 1)): starts at the float weight."""
    inside = ((remainder - GAMMA) / (ZETA - GAMMA)).clamp(1e-4, 1 - 1e-4)
    return torch.log(inside / (1 - inside))


def output_error(weight: Tensor, quantized: Tensor, second_moment: Tensor) -> float:
    """``trace(dW G dW^T) / trace(W G W^T)``: the mean squared output error relative to
    the float output energy, for inputs with second moment ``G``."""
    delta = (quantized - weight).double()
    g = second_moment.double()
    w = weight.double()
    energy = float(((w @ g) * w).sum())
    return float(((delta @ g) * delta).sum()) / max(energy, 1e-30)


def adaround(
    weight: Tensor,
    scale: Tensor,
    bits: int,
    second_moment: Tensor,
    settings: AdaRoundSettings | None = None,
) -> Tensor:
    """The weight on the ``bits``-bit symmetric grid of ``scale`` with learned rounding.

    Args:
        weight: ``(out, in)``.
        scale: a scalar, or ``(out, 1)`` for one scale per output channel.
        bits: the grid's bit width.
        second_moment: ``G = E[x x^T]``, ``(in, in)``, of the product's inputs.
        settings: optimization settings (default :class:`AdaRoundSettings`).

    Returns:
        The quantized weight (``scale * integer``), shape ``(out, in)``; never
        worse on the reconstruction objective than rounding to nearest (that
        is returned if the learned rounding ends up worse).

    Raises:
        ValueError: for mismatched shapes.
    """
    settings = settings or AdaRoundSettings()
    if weight.dim() != 2:
        raise ValueError(f"adaround needs a 2-D weight (out, in), got shape {tuple(weight.shape)}")
    if second_moment.shape != (weight.shape[1], weight.shape[1]):
        raise ValueError(
            f"second_moment must be ({weight.shape[1]}, {weight.shape[1]}) for a weight with "
            f"{weight.shape[1]} inputs, got {tuple(second_moment.shape)}"
        )
    low, high = float(qmin(bits)), float(qmax(bits))
    with torch.no_grad():
        w = weight.detach().to(torch.float32)
        s = torch.as_tensor(scale, dtype=torch.float32, device=w.device)
        if s.dim() == 1:
            s = s.reshape(-1, 1)
        g = second_moment.detach().to(device=w.device, dtype=torch.float32)
        scaled = w / s
        floor = torch.floor(scaled)
        nearest = fake_quantize(w, s, bits)
        energy = max(float(((w @ g) * w).sum()), 1e-30)
    # Callers may be inside no_grad (a PTQ evaluation computes it on first use).
    with torch.enable_grad():
        v = _initial_v(scaled - floor).requires_grad_(True)
        optimizer = torch.optim.Adam([v], lr=settings.learning_rate)
        warmup = int(settings.warmup * settings.iterations)
        annealed = max(1, settings.iterations - warmup)
        for step in range(settings.iterations):
            h = rectified_sigmoid(v)
            soft = s * torch.clamp(floor + h, low, high)
            delta = soft - w
            loss = ((delta @ g) * delta).sum() / energy
            if step >= warmup and settings.regularization > 0:
                progress = (step - warmup) / annealed
                beta = settings.beta_end + (settings.beta_start - settings.beta_end) * (
                    1 - progress
                )
                regularizer = (1 - (2 * h - 1).abs().pow(beta)).mean()
                loss = loss + settings.regularization * regularizer
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        learned = s * torch.clamp(floor + (rectified_sigmoid(v) >= 0.5).to(w.dtype), low, high)
        if output_error(w, learned, g) > output_error(w, nearest, g):
            learned = nearest
    return learned.to(weight.dtype)
