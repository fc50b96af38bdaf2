from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mohaq.quant.calibration import calibrate_activations, observing
from mohaq.quant.clipping import abs_histogram, mmse_threshold_from_histogram
from mohaq.quant.quantizer import CALIBRATION_BINS, FakeQuantizer


class _TwoLayer(nn.Module):
    def __init__(self, clipping: str = "minmax") -> None:
        super().__init__()
        self.input_quant = FakeQuantizer("l0.input", clipping=clipping)  # type: ignore[arg-type]
        self.weight_quant = FakeQuantizer("l0.weight", role="weight")
        self.linear = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(2))
        self.hidden_quant = FakeQuantizer("l1.input", clipping=clipping)  # type: ignore[arg-type]
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.input_quant(x)
        x = x @ self.weight_quant(self.linear.weight).T
        return self.hidden_quant(self.dropout(x))


def _run(model: nn.Module, batch: Tensor) -> Tensor:
    return model(batch)


def test_threshold_is_the_median_of_per_utterance_maxima() -> None:
    model = _TwoLayer()
    utterances = [
        torch.tensor([[1.0, -2.0]]),
        torch.tensor([[5.0, 0.5]]),
        torch.tensor([[-3.0, 0.0]]),
    ]
    count = calibrate_activations(model, utterances, _run)
    assert count == 3
    # maxima 2, 5, 3 -> median 3; identity weights and eval-mode dropout keep them for layer 1
    assert model.input_quant.threshold_for(4).item() == 3.0
    assert model.hidden_quant.threshold_for(8).item() == 3.0


def test_even_count_median_is_the_mean_of_the_middle_two() -> None:
    model = _TwoLayer()
    utterances = [torch.tensor([[v]]).expand(1, 2) for v in (1.0, 2.0, 4.0, 10.0)]
    calibrate_activations(model, utterances, _run)
    assert model.input_quant.threshold_for(4).item() == 3.0


def test_mmse_calibration_is_the_median_of_per_utterance_mmse_thresholds() -> None:
    quantizer = FakeQuantizer("a", clipping="mmse")
    generator = torch.Generator().manual_seed(0)
    utterances = [torch.randn(1, 400, 3, generator=generator) * scale for scale in (1.0, 2.0, 4.0)]
    quantizer.observing = True
    for utterance in utterances:
        quantizer(utterance)
    quantizer.observing = False
    expected = []
    for utterance in utterances:
        hist, top = abs_histogram(utterance, CALIBRATION_BINS, split_sign=True)
        expected.append(mmse_threshold_from_histogram(hist, top, 4, split_sign=True).item())
    assert quantizer.threshold_for(4).item() == pytest.approx(sorted(expected)[1])
    assert quantizer.threshold_for(4) is quantizer.threshold_for(4)  # computed once per bits


def test_calibration_runs_in_float_and_restores_modes() -> None:
    model = _TwoLayer()
    model.train()
    model.input_quant.bits = 2
    model.weight_quant.bits = 2
    seen_bits = []

    def forward(module: nn.Module, batch: Tensor) -> Tensor:
        seen_bits.append((module.input_quant.bits, module.weight_quant.bits, module.training))
        assert not torch.is_grad_enabled()
        return module(batch)

    calibrate_activations(model, [torch.ones(1, 2)] * 5, forward, max_utterances=2)
    assert seen_bits == [(None, None, False)] * 2
    assert model.training and model.dropout.training
    assert (model.input_quant.bits, model.weight_quant.bits) == (2, 2)
    assert not model.input_quant.observing
    assert model.input_quant.num_observed == 2
    assert model.weight_quant.num_observed == 0


def test_recalibration_replaces_earlier_data() -> None:
    model = _TwoLayer()
    calibrate_activations(model, [torch.full((1, 2), 9.0)], _run)
    calibrate_activations(model, [torch.full((1, 2), 1.0)], _run)
    assert model.input_quant.num_observed == 1
    assert model.input_quant.threshold_for(8).item() == 1.0


def test_observing_context_restores_on_error() -> None:
    model = _TwoLayer()
    model.input_quant.bits = 4
    with pytest.raises(KeyError), observing(model):
        assert model.input_quant.observing and model.input_quant.bits is None
        raise KeyError("boom")
    assert not model.input_quant.observing
    assert model.input_quant.bits == 4


def test_calibrated_quantizer_uses_the_fixed_threshold() -> None:
    model = _TwoLayer()
    calibrate_activations(model, [torch.tensor([[7.0, 0.0]])], _run)
    model.input_quant.bits = 4
    # threshold 7 -> scale 1, even for a batch whose own max is far larger
    assert model.input_quant(torch.tensor([100.0, 2.2])).tolist() == [7.0, 2.0]


def test_calibration_survives_a_state_dict_round_trip() -> None:
    model = _TwoLayer(clipping="mmse")
    generator = torch.Generator().manual_seed(1)
    calibrate_activations(model, [torch.randn(1, 2, generator=generator) for _ in range(5)], _run)
    fresh = _TwoLayer(clipping="mmse")
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert fresh.input_quant.num_observed == 5
    for bits in (2, 4, 8):
        assert fresh.input_quant.threshold_for(bits) == model.input_quant.threshold_for(bits)
        assert fresh.hidden_quant.threshold_for(bits) == model.hidden_quant.threshold_for(bits)
    # an uncalibrated model saves empty statistics that load cleanly too
    empty = _TwoLayer()
    fresh.load_state_dict(empty.state_dict())
    assert not fresh.input_quant.has_calibration


def test_calibration_survives_torch_save(tmp_path) -> None:
    model = _TwoLayer()
    calibrate_activations(model, [torch.tensor([[2.0, 0.0]]), torch.tensor([[4.0, 0.0]])], _run)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    fresh = _TwoLayer()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert fresh.input_quant.threshold_for(4).item() == 3.0


def test_max_utterances_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_utterances must be >= 1 or None, got 0"):
        calibrate_activations(_TwoLayer(), [], _run, max_utterances=0)
