from __future__ import annotations

import pytest
import torch
from torch import nn

import mohaq.quant.quantizer as quantizer_module
from mohaq.quant.clipping import abs_histogram, mmse_threshold, mmse_threshold_from_histogram
from mohaq.quant.functional import fake_quantize, fake_quantize_asymmetric, scale_for
from mohaq.quant.quantizer import CALIBRATION_BINS, FakeQuantizer


def test_float_quantizer_returns_the_same_object() -> None:
    for role in ("weight", "activation", "state", "fixed"):
        quantizer = FakeQuantizer("p", role=role)  # type: ignore[arg-type]
        x = torch.randn(3, 4)
        assert quantizer(x) is x
        assert quantizer.quant_params(x) is None


@pytest.mark.parametrize("bits", [1, 17, 8.0, True])
def test_bits_setter_validates(bits: object) -> None:
    with pytest.raises(ValueError, match=r"'l0\.weight'.*2 to 16"):
        FakeQuantizer("l0.weight").bits = bits  # type: ignore[assignment]


def test_constructor_names_bad_arguments() -> None:
    with pytest.raises(ValueError, match="role must be one of weight, activation, state, fixed"):
        FakeQuantizer(role="bias")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clipping must be one of minmax, mmse, percentile"):
        FakeQuantizer(clipping="kl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="per_channel.*activation"):
        FakeQuantizer(per_channel=True)


def test_weight_quantizer_uses_the_mmse_threshold_of_the_weight() -> None:
    weight = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    quantizer = FakeQuantizer("w", role="weight")
    quantizer.bits = 4
    expected = fake_quantize(weight, scale_for(mmse_threshold(weight, 4), 4), 4)
    torch.testing.assert_close(quantizer(weight), expected)


def test_weight_threshold_and_output_are_cached_until_the_weight_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = quantizer_module.estimate_threshold

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(quantizer_module, "estimate_threshold", counting)
    layer = nn.Linear(8, 4)
    quantizer = FakeQuantizer("w", role="weight")
    quantizer.bits = 8
    with torch.no_grad():
        first = quantizer(layer.weight)
        assert quantizer(layer.weight) is first  # the quantized tensor itself is reused
        assert len(calls) == 1
        layer.weight.mul_(2)  # an in-place update bumps the version
        second = quantizer(layer.weight)
    assert len(calls) == 2
    torch.testing.assert_close(second, 2 * first)
    quantizer.bits = 4
    with torch.no_grad():
        quantizer(layer.weight)
    assert len(calls) == 3


def test_weight_cache_keeps_every_bit_width_until_the_weight_or_a_setting_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = quantizer_module.estimate_threshold

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(quantizer_module, "estimate_threshold", counting)
    torch.manual_seed(0)
    layer = nn.Linear(16, 8)
    quantizer = FakeQuantizer("w", role="weight")
    uncached = {}
    for bits in (2, 4, 8):
        fresh = FakeQuantizer("w", role="weight")
        fresh.bits = bits
        uncached[bits] = fresh(layer.weight.detach().clone())
    calls.clear()
    seen = {}
    with torch.no_grad():
        for bits in (8, 4, 2, 8, 2, 4):  # a search revisiting (point, bits) pairs
            quantizer.bits = bits
            out = quantizer(layer.weight)
            if bits in seen:
                assert out is seen[bits]  # nothing quantized again
            seen[bits] = out
            assert torch.equal(out, uncached[bits])  # identical to an uncached result
    assert len(calls) == 3
    with torch.no_grad():
        layer.weight.add_(0.5)  # a training step: every bit width is stale
        quantizer.bits = 8
        moved = quantizer(layer.weight)
    assert len(calls) == 4 and moved is not seen[8]
    expected = fake_quantize(
        layer.weight, scale_for(mmse_threshold(layer.weight.detach(), 8), 8), 8
    )
    torch.testing.assert_close(moved, expected)
    # A setting that changes the result, even set directly, is part of the key.
    quantizer.per_channel = True
    with torch.no_grad():
        per_row = quantizer(layer.weight)
    assert len(calls) == 5 and not torch.equal(per_row, moved)


def test_weight_gradient_is_straight_through_in_training() -> None:
    weight = nn.Parameter(torch.tensor([0.1, -0.4, 0.7, -0.8]))
    quantizer = FakeQuantizer("w", role="weight", clipping="minmax")
    quantizer.bits = 8
    out = quantizer(weight)
    assert out.requires_grad
    out.sum().backward()
    assert weight.grad is not None
    assert weight.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_per_channel_weight_has_one_scale_per_row() -> None:
    weight = torch.tensor([[1.0, -0.6], [10.0, 4.0]])
    quantizer = FakeQuantizer("w", role="weight", clipping="minmax", per_channel=True)
    quantizer.bits = 2  # grid -2..1: each row's max maps to 1 step
    assert quantizer(weight).tolist() == [[1.0, -1.0], [10.0, 0.0]]
    params = quantizer.quant_params(weight)
    assert params is not None
    scale, bits = params
    assert bits == 2
    assert scale.shape == (2, 1)
    assert scale.flatten().tolist() == [1.0, 10.0]


def test_uncalibrated_activation_uses_the_batch_max() -> None:
    quantizer = FakeQuantizer("a")
    quantizer.bits = 4
    x = torch.tensor([0.0, 1.0, -3.5, 7.0])
    # threshold 7 -> scale 1 at 4 bits
    assert quantizer(x).tolist() == [0.0, 1.0, -4.0, 7.0]
    assert quantizer.quant_params(x) == (torch.tensor(1.0), 4)
    with pytest.raises(RuntimeError, match="not calibrated"):
        quantizer.quant_params()


def test_calibrated_state_quantizer_gives_params_without_x() -> None:
    quantizer = FakeQuantizer("s", role="state", clipping="minmax")
    quantizer.observing = True
    quantizer(torch.tensor([7.0, -1.0]))
    quantizer.observing = False
    quantizer.bits = 4
    params = quantizer.quant_params()
    assert params is not None
    assert params[0].item() == pytest.approx(1.0)
    assert params[1] == 4


def test_observing_records_and_passes_the_input_through() -> None:
    quantizer = FakeQuantizer("a")
    quantizer.bits = 2
    quantizer.observing = True
    x = torch.randn(5)
    assert quantizer(x) is x
    assert quantizer.num_observed == 1
    assert quantizer.quant_params(x) is None


def test_extra_repr_names_point_role_bits_and_clipping() -> None:
    quantizer = FakeQuantizer("sru0.weight", role="weight", clipping="mmse")
    quantizer.bits = 8
    assert "point='sru0.weight', role=weight, bits=8, clipping=mmse" in repr(quantizer)


def test_inference_mode_forward_works_and_inference_inputs_are_not_cached() -> None:
    layer = nn.Linear(4, 4)
    quantizer = FakeQuantizer("w", role="weight")
    quantizer.bits = 4
    with torch.inference_mode():
        first = quantizer(layer.weight)
        assert quantizer(layer.weight) is first
        computed = layer.weight * 2  # an inference tensor: no version counter
        out = quantizer(computed)
        torch.testing.assert_close(out, 2 * first)
        assert quantizer(computed) is not out
    # outside inference mode the cached inference tensor is not handed out
    with torch.no_grad():
        assert quantizer(layer.weight) is not first


def _observed(quantizer: FakeQuantizer, utterances: list[torch.Tensor]) -> FakeQuantizer:
    quantizer.observing = True
    for utterance in utterances:
        quantizer(utterance)
    quantizer.observing = False
    return quantizer


def test_pooled_statistic_is_one_threshold_over_all_utterances() -> None:
    # Maxima 1, 2 and 10: the median of per-utterance maxima is 2, the pooled max 10.
    utterances = [torch.tensor([[1.0, -0.5]]), torch.tensor([[2.0]]), torch.tensor([[-10.0]])]
    median = _observed(FakeQuantizer("a", clipping="minmax"), utterances)
    pooled = _observed(FakeQuantizer("a", clipping="minmax", statistic="pooled"), utterances)
    assert median.threshold_for(4).item() == 2.0
    assert pooled.threshold_for(4).item() == 10.0


def test_pooled_mmse_threshold_is_the_mmse_of_the_pooled_histogram() -> None:
    from mohaq.quant.clipping import pool_histograms

    generator = torch.Generator().manual_seed(0)
    utterances = [torch.randn(1, 300, 4, generator=generator) * s for s in (0.5, 1.0, 3.0)]
    quantizer = _observed(FakeQuantizer("a", statistic="pooled"), utterances)
    hists, maxima = zip(
        *(abs_histogram(u, CALIBRATION_BINS, split_sign=True) for u in utterances), strict=True
    )
    pooled, upper = pool_histograms(torch.stack(hists), torch.stack(maxima))
    expected = mmse_threshold_from_histogram(pooled, upper, 4, split_sign=True)
    assert quantizer.threshold_for(4).item() == pytest.approx(expected.item())


def test_configure_keeps_calibration_and_recomputes_thresholds() -> None:
    utterances = [torch.tensor([[1.0]]), torch.tensor([[3.0]]), torch.tensor([[8.0]])]
    quantizer = _observed(FakeQuantizer("a", clipping="minmax"), utterances)
    quantizer.bits = 4
    assert quantizer.threshold_for(4).item() == 3.0
    quantizer.configure(statistic="pooled")
    assert quantizer.threshold_for(4).item() == 8.0
    assert quantizer.num_observed == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"statistic": "mean"}, "statistic must be one of median, pooled; got 'mean'"),
        ({"grid": "log"}, "grid must be one of symmetric, asymmetric; got 'log'"),
        ({"grid": "asymmetric", "role": "weight"}, "asymmetric.*role 'activation'.*'weight'"),
        ({"grid": "asymmetric", "role": "state"}, "asymmetric.*role 'activation'.*'state'"),
    ],
)
def test_statistic_and_grid_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FakeQuantizer("a", **kwargs)


def test_asymmetric_activation_uses_the_calibrated_range() -> None:
    # Values in [-1, 14]: min-max range, 4 bits -> scale 1, zero point 1.
    utterances = [torch.tensor([[-1.0, 3.0, 14.0]]), torch.tensor([[0.0, 2.0, 7.0]])]
    quantizer = _observed(
        FakeQuantizer("a", clipping="minmax", statistic="pooled", grid="asymmetric"), utterances
    )
    low, high = quantizer.range_for(4)
    bin_width = 14.0 / CALIBRATION_BINS
    assert low.item() == pytest.approx(-1.0, abs=bin_width)
    assert high.item() == pytest.approx(14.0)
    scale, zero_point = quantizer.activation_params(4)
    assert zero_point == 1
    quantizer.bits = 4
    x = torch.tensor([-3.0, -0.4, 5.3, 20.0])
    torch.testing.assert_close(quantizer(x), fake_quantize_asymmetric(x, scale, 1, 4))
    with pytest.raises(RuntimeError, match="asymmetric grid"):
        quantizer.quant_params(x)


def test_symmetric_activation_params_are_the_threshold_scale_and_zero() -> None:
    quantizer = _observed(FakeQuantizer("a", clipping="minmax"), [torch.tensor([[7.0]])])
    scale, zero_point = quantizer.activation_params(4)
    assert (scale.item(), zero_point) == (1.0, 0)


def test_learned_weight_is_used_in_inference_while_the_weight_is_unchanged() -> None:
    layer = nn.Linear(3, 2)
    quantizer = FakeQuantizer("w", role="weight", clipping="minmax")
    quantizer.bits = 4
    learned = torch.full_like(layer.weight, 0.125)
    quantizer.set_learned_weight(4, learned, layer.weight)
    assert quantizer.learned_bits == (4,)
    with torch.no_grad():
        torch.testing.assert_close(quantizer(layer.weight), learned)
        quantizer.bits = 8  # no learned rounding at 8 bits: nearest
        nearest = quantizer(layer.weight)
    assert not torch.equal(nearest, learned)
    quantizer.bits = 4
    # Training forwards round to nearest (the graph needs the straight-through path).
    assert not torch.equal(quantizer(layer.weight), learned)
    with torch.no_grad():
        layer.weight.add_(0.01)  # a changed weight invalidates the learned rounding
        assert not torch.equal(quantizer(layer.weight), learned)
    with pytest.raises(ValueError, match="learned rounding is for role 'weight'"):
        FakeQuantizer("a").set_learned_weight(4, learned, layer.weight)
    with pytest.raises(ValueError, match=r"shape \(3, 2\) for a weight of shape \(2, 3\)"):
        quantizer.set_learned_weight(4, learned.T, layer.weight)
