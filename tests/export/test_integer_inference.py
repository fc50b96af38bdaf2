"""Integer-only inference against the fake-quantized model it comes from."""

from __future__ import annotations

import pytest
import torch
from conftest import example_batch, make_model, valid_frames
from torch.overrides import TorchFunctionMode

from mohaq.export import ExportError, IntegerAcousticModel, IntegerProgram, lower_model
from mohaq.export.layers.linear import IntegerLinear
from mohaq.quant import BitAssignment, apply_bit_assignment
from mohaq.quant.apply import quantizers

CASES = [
    ("sru", "layer"),
    ("gru", "layer"),
    ("gru", "operator"),
    ("lstm", "layer"),
    ("lstm", "operator"),
]


def _compare(model: torch.nn.Module, rounding: str = "single") -> tuple[float, float]:
    """(max |score difference| / max |score|, argmax agreement) over valid frames."""
    features, lengths = example_batch()
    with torch.no_grad():
        reference = model(features, lengths)
    scores = IntegerAcousticModel(lower_model(model, rounding=rounding))(features, lengths)
    valid = valid_frames(lengths, features.shape[1])
    difference = (reference - scores).abs()[valid].max() / reference.abs()[valid].max()
    agreement = (reference.argmax(-1) == scores.argmax(-1))[valid].float().mean()
    return float(difference), float(agreement)


@pytest.mark.parametrize(("cell", "granularity"), CASES)
def test_16_bit_integer_scores_match_fake_quantization(cell: str, granularity: str) -> None:
    difference, agreement = _compare(make_model(cell, granularity, 16))
    assert difference < 5e-4 and agreement == 1.0


@pytest.mark.parametrize(("cell", "granularity"), CASES)
def test_8_bit_and_mixed_integer_scores_match_fake_quantization(
    cell: str, granularity: str
) -> None:
    difference, agreement = _compare(make_model(cell, granularity, 8))
    assert difference < 0.03 and agreement >= 0.99
    mixed = make_model(
        cell, granularity, lambda name: 4 if name.endswith(("weight", "w_ih", "w_hh")) else 8
    )
    difference, agreement = _compare(mixed)
    assert difference < 0.05 and agreement >= 0.95


def test_gemmlowp_rounding_runs_and_stays_close() -> None:
    model = make_model("gru", "operator", 8)
    difference, agreement = _compare(model, rounding="gemmlowp")
    assert difference < 0.05 and agreement >= 0.95
    with pytest.raises(ExportError, match="single, gemmlowp"):
        lower_model(model, rounding="nearest")


def test_sru_without_projection_and_per_channel_weights() -> None:
    difference, agreement = _compare(make_model("sru", "layer", 8, projection=None))
    assert difference < 0.03 and agreement >= 0.99
    model = make_model("gru", "layer", 8)
    for quantizer in quantizers(model).values():
        if quantizer.role == "weight":
            quantizer.per_channel = True  # one scale per output row
    program = lower_model(model)
    assert program.scale("gru0.weight").numel() == program.values("gru0.weight").shape[0]
    difference, agreement = _compare(model)
    assert difference < 0.03 and agreement >= 0.99


@pytest.mark.parametrize(("cell", "projection"), [("sru", None), ("lstm", 3)])
def test_unidirectional_layers(cell: str, projection: int | None) -> None:
    model = make_model(cell, "layer", 8, projection=projection, bidirectional=False)
    difference, agreement = _compare(model)
    assert difference < 0.03 and agreement >= 0.99


def test_a_linear_layer_on_hand_computed_integers() -> None:
    program = IntegerProgram({"model": {"num_classes": 2}})
    program.add_quantized(
        "out.weight",
        torch.tensor([[1, 2], [-3, 1]]),
        4,
        torch.tensor(0.1),
        role="weight",
        point=True,
    )
    program.add_scale("out.input", 8, 0.25, role="activation", point=True)
    program.add_quantized(
        "out.bias", torch.tensor([100, -50]), 16, torch.tensor(0.001), role="fixed", point=False
    )
    program.add_multiplier("out.rq.bias", 0.001 / (0.1 * 0.25))  # bias -> accumulator: [4, -2]
    program.add_multiplier("out.rq.input", 0.5 / 0.25)  # previous domain s = 0.5 -> input s = 0.25
    program.add_scale("next", 8, 0.05, role="activation", point=True)
    program.add_multiplier("out.rq.output", 0.1 * 0.25 / 0.05)
    description = {
        "name": "out",
        "source": "prev",
        "target": "next",
        "bias": True,
        "accumulator": {"dtype": "int32"},
    }
    layer = IntegerLinear(program, description)
    # x_q = [6, -10] and [6, -8]; W x_q = [-14, -28] and [-10, -26]; + [4, -2]; x 0.5.
    assert layer(torch.tensor([[3, -5], [3, -4]])).tolist() == [[-5, -15], [-3, -14]]
    # Saturation at the input point (400 -> 127) and at the next point (-191 -> -128):
    # W x_q + b = [131, -383]; x 0.5 = 65.5 -> 66, -191.5 -> -191 (gemmlowp's tie) -> -128.
    assert layer(torch.tensor([[200, 0]])).tolist() == [[66, -128]]
    assert layer.quantize_input(torch.tensor([100, -100])).tolist() == [127, -128]


class _FloatOps(TorchFunctionMode):
    """Counts torch calls that return a floating-point tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        result = func(*args, **(kwargs or {}))
        if isinstance(result, torch.Tensor) and result.is_floating_point():
            self.count += 1
        return result


@pytest.mark.parametrize(("cell", "granularity"), [("sru", "layer"), ("lstm", "operator")])
def test_float_appears_only_at_the_input_and_the_scores(cell: str, granularity: str) -> None:
    runtime = IntegerAcousticModel(lower_model(make_model(cell, granularity, 8)))
    counts = []
    for steps in (5, 14):
        features = torch.randn(2, steps, 5)
        with _FloatOps() as mode:
            runtime(features, torch.tensor([steps, steps - 2]))
        counts.append(mode.count)
    # A fixed handful (quantize the features, dequantize the scores), none per step or per layer.
    assert counts[0] == counts[1] <= 12


def test_export_needs_every_point_quantized_and_calibrated() -> None:
    model = make_model("sru", "layer", 8)
    names = model.workload().names
    apply_bit_assignment(model, BitAssignment({name: 8 for name in names[1:]}))
    with pytest.raises(ExportError, match=names[0]):
        lower_model(model)
    apply_bit_assignment(model, BitAssignment.uniform(names, 8))
    model.output.input_quant.reset_calibration()
    with pytest.raises(ExportError, match="calibration"):
        lower_model(model)
