from __future__ import annotations

import pytest
import torch

from mohaq.quant.adaround import AdaRoundSettings, adaround, output_error, rectified_sigmoid
from mohaq.quant.functional import fake_quantize

FAST = AdaRoundSettings(iterations=300, learning_rate=0.05)


def test_rectified_sigmoid_reaches_zero_and_one() -> None:
    h = rectified_sigmoid(torch.tensor([-10.0, 0.0, 10.0]))
    assert h.tolist() == [0.0, pytest.approx(0.5), 1.0]


def test_correlated_inputs_round_one_weight_up() -> None:
    # Weights 0.45 and 0.35 on the grid of step 1, and inputs always equal
    # (x1 = x2): nearest rounding gives (0, 0) and an output error of (0.8 x)^2;
    # rounding the first up gives (0.2 x)^2, the best the grid allows.
    weight = torch.tensor([[0.45, 0.35]])
    second_moment = torch.ones(2, 2)
    learned = adaround(weight, torch.tensor(1.0), 4, second_moment, FAST)
    assert learned.reshape(-1).tolist() == [1.0, 0.0]
    assert output_error(weight, learned, second_moment) == pytest.approx(0.04 / 0.64)
    nearest = fake_quantize(weight, 1.0, 4)
    assert output_error(weight, nearest, second_moment) == pytest.approx(1.0)


def test_uncorrelated_unit_inputs_keep_nearest_rounding() -> None:
    # With E[x x^T] = I the output error is the weight error: nearest is optimal.
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 6, generator=generator)
    scale = weight.abs().max() / 7
    learned = adaround(weight, scale, 4, torch.eye(6), FAST)
    torch.testing.assert_close(learned, fake_quantize(weight, scale, 4))


def test_learned_rounding_stays_on_the_grid_and_beats_nearest() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2000, 16, generator=generator) @ torch.randn(16, 16, generator=generator)
    second_moment = x.T @ x / x.shape[0]
    weight = torch.randn(32, 16, generator=generator) * 0.2
    scale = (weight.abs().amax(dim=1, keepdim=True) / 7).clamp_min(1e-6)  # per output channel
    learned = adaround(weight, scale, 4, second_moment, FAST)
    levels = learned / scale
    torch.testing.assert_close(levels, levels.round())
    assert levels.round().min() >= -8 and levels.round().max() <= 7
    # Each weight moves by less than a step from its float value.
    assert ((learned - weight).abs() <= scale + 1e-6).all()
    nearest = fake_quantize(weight, scale, 4)
    assert output_error(weight, learned, second_moment) < 0.8 * output_error(
        weight, nearest, second_moment
    )


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"second_moment must be \(3, 3\)"):
        adaround(torch.zeros(2, 3), torch.tensor(1.0), 4, torch.eye(2))
    with pytest.raises(ValueError, match="2-D weight"):
        adaround(torch.zeros(3), torch.tensor(1.0), 4, torch.eye(3))
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        AdaRoundSettings(iterations=0)


def test_runs_inside_no_grad() -> None:
    with torch.no_grad():
        learned = adaround(
            torch.tensor([[0.45, 0.35]]), torch.tensor(1.0), 4, torch.ones(2, 2), FAST
        )
    assert learned.reshape(-1).tolist() == [1.0, 0.0]
