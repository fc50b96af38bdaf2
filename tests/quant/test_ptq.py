"""PTQConfig and PostTrainingQuantizer on tiny real models (SRU stack, linear layers)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mohaq.models.acoustic import AcousticModel
from mohaq.models.quant_linear import QuantLinear
from mohaq.quant.apply import apply_bit_assignment, quantizers
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import QuantPoint, Workload
from mohaq.quant.ptq import PostTrainingQuantizer, PTQConfig, PTQConfigError


def _utterances(features: int, count: int = 6, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for index in range(count):
        length = 10 + index
        x = torch.randn(1, length, features, generator=generator) + 0.5
        batches.append((x, torch.tensor([length])))
    return batches


def _forward(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    return model(*batch)


def _sru() -> AcousticModel:
    torch.manual_seed(0)
    return AcousticModel(
        num_features=6, num_classes=5, hidden_size=8, num_layers=2, projection_size=4
    ).eval()


# -- PTQConfig ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"activation_statistic": "mean"},
            "activation_statistic must be one of 'median', 'pooled'",
        ),
        ({"activation_grid": "log"}, "activation_grid must be one of 'symmetric', 'asymmetric'"),
        ({"weight_clipping": "kl"}, "weight_clipping must be one of .*'mmse'.* or None; got 'kl'"),
        ({"adaround": 1}, "adaround must be True or False; got 1"),
        ({"adaround_bits": (1, 4)}, r"adaround_bits must be integers from 2 to 16; got \(1, 4\)"),
        ({"adaround_iterations": 0}, "adaround_iterations must be a positive integer; got 0"),
        ({"calibration_utterances": 0}, "calibration_utterances must be None.*got 0"),
        ({"percentile": 0}, r"percentile must be in \(0, 100\]; got 0"),
    ],
)
def test_config_names_the_bad_setting(kwargs: dict, message: str) -> None:
    with pytest.raises(PTQConfigError, match=message):
        PTQConfig(**kwargs)


def test_presets_records_and_round_trip() -> None:
    assert PTQConfig.preset("mohaq") == PTQConfig()
    best = PTQConfig.preset("best", adaround_iterations=50)
    assert (best.output_aware_activations, best.adaround, best.adaround_iterations) == (
        True, True, 50,
    )  # fmt: skip
    assert best.activation_statistic == "median"
    record = best.describe()
    assert record["adaround_bits"] == [2, 4]
    assert PTQConfig.from_dict(record) == best
    with pytest.raises(PTQConfigError, match="unknown PTQ preset 'fast'; presets: mohaq, best"):
        PTQConfig.preset("fast")
    with pytest.raises(PTQConfigError, match=r"unknown PTQConfig field\(s\) \['bits'\]"):
        PTQConfig.from_dict({"bits": 4})
    assert PTQConfig(adaround_bits=(4, 2, 4)).adaround_bits == (2, 4)


def test_tag_names_the_closest_preset_and_what_differs() -> None:
    assert PTQConfig().tag() == "mohaq"
    assert PTQConfig.preset("best").tag() == "best"
    assert PTQConfig(per_channel_weights=True).tag() == "mohaq+per_channel_weights=True"
    tagged = PTQConfig.preset("best", adaround_bits=(2,), activation_grid="asymmetric").tag()
    assert tagged == "best+activation_grid=asymmetric+adaround_bits=[2]"


def test_platform_support_is_checked() -> None:
    PTQConfig().check_platform(
        per_channel_weights=False, asymmetric_activations=False, platform="p"
    )
    with pytest.raises(PTQConfigError, match="'silago' does not support per-channel weight scales"):
        PTQConfig(per_channel_weights=True).check_platform(
            per_channel_weights=False, asymmetric_activations=True, platform="silago"
        )
    with pytest.raises(PTQConfigError, match="'silago' does not support asymmetric activations"):
        PTQConfig(activation_grid="asymmetric").check_platform(
            per_channel_weights=True, asymmetric_activations=False, platform="silago"
        )


def test_overheads_are_one_value_per_output_channel_and_method() -> None:
    workload = Workload(
        (
            QuantPoint("l0.input", "activation", "l0"),
            QuantPoint("l0.weight", "weight", "l0", params=30, macs_per_frame=30,
                       in_features=3, out_features=10, input_point="l0.input"),
            QuantPoint("l1.input", "activation", "l1"),
            QuantPoint("l1.weight", "weight", "l1", params=40, macs_per_frame=40,
                       in_features=10, out_features=4, input_point="l1.input"),
        ),
        fixed_params=4,
    )  # fmt: skip
    assert PTQConfig().overhead_params(workload) == 0
    assert PTQConfig().workload_with_overheads(workload) is workload
    assert PTQConfig(per_channel_weights=True).overhead_params(workload) == 14
    both = PTQConfig(per_channel_weights=True, activation_grid="asymmetric")
    assert both.overhead_params(workload) == 28
    assert both.workload_with_overheads(workload).fixed_params == 4 + 28


# -- PostTrainingQuantizer ------------------------------------------------------------------------
def test_quantizers_are_configured_and_calibrated_once() -> None:
    model = _sru()
    config = PTQConfig(
        activation_statistic="pooled", activation_grid="asymmetric", per_channel_weights=True,
        calibration_utterances=4,
    )  # fmt: skip
    ptq = PostTrainingQuantizer(model, config, _utterances(6), _forward)
    named = quantizers(model)
    assert named["sru1.input"].statistic == "pooled" and named["sru1.input"].grid == "asymmetric"
    assert named["sru1.weight"].per_channel
    assert named["sru1.input"].num_observed == 4
    assert ptq.describe()["calibrated_utterances"] == 4
    ptq.apply(BitAssignment.uniform(model.workload().names, 4))
    assert named["sru1.input"].bits == 4
    assert model(*_utterances(6)[0]).isfinite().all()


def test_adaround_is_computed_once_per_point_and_bits_and_not_worse() -> None:
    model = _sru()
    config = PTQConfig(adaround=True, adaround_iterations=30)
    ptq = PostTrainingQuantizer(model, config, _utterances(6), _forward)
    names = model.workload().names
    ptq.apply(BitAssignment.uniform(names, 4))
    weights = [p.name for p in model.workload().matmul_weights()]
    assert ptq.stats.adaround_solutions == len(weights)
    named = quantizers(model)
    for name in weights:
        assert named[name].learned_bits == (4,)
        nearest, learned = ptq.stats.adaround_output_error[name][4]
        assert learned <= nearest
    ptq.apply(BitAssignment.uniform(names, 8))  # 8 bits: rounding to nearest
    ptq.apply(BitAssignment.uniform(names, 4))
    assert ptq.stats.adaround_solutions == len(weights)
    ptq.precompute((2, 4, 8, 16))
    assert ptq.stats.adaround_solutions == 2 * len(weights)


def test_adaround_needs_the_product_input_to_be_the_input_point() -> None:
    torch.manual_seed(0)
    gru = AcousticModel(num_features=6, num_classes=5, cell="gru", hidden_size=4, num_layers=1,
                        projection_size=None)  # fmt: skip
    with pytest.raises(
        PTQConfigError, match=r"'gru0.weight' has shape \(24, 10\) but 'gru0.input' sees 6"
    ):
        PostTrainingQuantizer(gru, PTQConfig(adaround=True), _utterances(6, 2), _forward)


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.layer = QuantLinear(6, 3, layer="l0")

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.layer(x)

    def workload(self) -> Workload:
        return Workload(self.layer.quant_points(), fixed_params=3)


def test_bias_correction_restores_the_float_output_mean_of_a_linear_layer() -> None:
    # E[W_q x + b - (W_q - W) E[x]] = W E[x] + b: exact for a linear layer whose
    # input stays in float.
    model = _Linear()
    batches = _utterances(6)
    frames = torch.cat([x.reshape(-1, 6) for x, _ in batches])
    float_mean = model(frames, None).mean(0)
    ptq = PostTrainingQuantizer(model, PTQConfig(bias_correction=True), batches, _forward)
    assert ptq.describe()["bias_corrected_rows"] == {"l0.weight": 3}
    ptq.apply(BitAssignment({"l0.weight": 2}), fixed_bits=None)
    with torch.no_grad():
        corrected_mean = model(frames, None).mean(0)
    torch.testing.assert_close(corrected_mean, float_mean, atol=1e-5, rtol=0)
    ptq.apply(BitAssignment({}), fixed_bits=None)
    with torch.no_grad():
        torch.testing.assert_close(model(frames, None).mean(0), float_mean)


def test_bias_correction_of_the_sru_goes_to_the_gate_biases() -> None:
    model = _sru()
    float_forget = model.layers[0].b_forget.detach().clone()
    ptq = PostTrainingQuantizer(model, PTQConfig(bias_correction=True), _utterances(6), _forward)
    rows = ptq.describe()["bias_corrected_rows"]
    # SRU layers: forget and reset rows (2 x 2 directions x 8 units); the output
    # layer: every row; projections: none (no bias).
    assert rows == {"sru0.weight": 32, "sru1.weight": 32, "output.weight": 5}
    ptq.apply(BitAssignment({"sru0.weight": 2}))
    assert not torch.equal(model.layers[0].b_forget, float_forget)
    ptq.apply(BitAssignment({"sru0.weight": 16, "sru0.input": 16}))
    torch.testing.assert_close(model.layers[0].b_forget, float_forget, atol=1e-3, rtol=0)
    ptq.apply(BitAssignment())
    assert torch.equal(model.layers[0].b_forget, float_forget)


def test_output_aware_search_keeps_the_best_factor_and_runs_once() -> None:
    model = _sru()
    batches = _utterances(6)
    config = PTQConfig(output_aware_activations=True, output_aware_bits=(2,))
    ptq = PostTrainingQuantizer(model, config, batches, _forward)
    named = quantizers(model)
    base = named["output.input"].threshold_for(2).item()
    multiplier = ptq.activation_multiplier("output.input", 2)
    assert 0.1875 <= multiplier <= 1.3125
    assert named["output.input"].threshold_for(2).item() == pytest.approx(base * multiplier)

    def divergence(factor: float) -> float:
        named["output.input"].set_threshold_multiplier(2, factor)
        ptq.apply(BitAssignment({}), fixed_bits=None)
        reference = ptq._float_outputs()
        ptq.apply(BitAssignment({"output.input": 2}), fixed_bits=None)
        return ptq._divergence(reference)

    chosen = divergence(multiplier)
    assert chosen <= divergence(1.0) + 1e-9  # 1.0 (the calibrated threshold) is a candidate
    named["output.input"].set_threshold_multiplier(2, multiplier)
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    ptq.apply(BitAssignment({"output.input": 2, "sru0.input": 4}))  # 4 bits: not searched
    handle.remove()
    assert calls == []  # cached: no scoring forward
    assert ptq.describe()["output_aware_multipliers"] == {"output.input": {"2": multiplier}}
    with pytest.raises(PTQConfigError, match="'sru0.weight' is not an activation point"):
        ptq.activation_multiplier("sru0.weight", 2)


# -- reuse across candidates ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "config",
    [
        PTQConfig(),
        PTQConfig(per_channel_weights=True, weight_clipping="minmax"),
        PTQConfig(adaround=True, adaround_iterations=10, adaround_bits=(4,)),
        PTQConfig(bias_correction=True),
    ],
    ids=["mohaq", "per-channel", "adaround", "bias-correction"],
)
def test_a_candidate_scored_after_others_equals_one_scored_alone(config: PTQConfig) -> None:
    """Weights quantized per (point, bits) and reused by later candidates give
    exactly what a fresh model quantizing everything for that candidate gives;
    a weight update (a training step) invalidates them."""
    import copy
    import random

    float_model = _sru()
    names = float_model.workload().names
    rng = random.Random(0)
    candidates = [BitAssignment({n: rng.choice((2, 4, 8)) for n in names}) for _ in range(4)]
    candidates += candidates[:2]  # revisited: everything comes from the caches
    utterance = _utterances(6, seed=1)[0]

    def alone(model: nn.Module, assignment: BitAssignment) -> Tensor:
        model = copy.deepcopy(model)
        PostTrainingQuantizer(model, config, _utterances(6), _forward).apply(assignment)
        with torch.inference_mode():
            return model(*utterance)

    warm = copy.deepcopy(float_model)
    ptq = PostTrainingQuantizer(warm, config, _utterances(6), _forward)
    for assignment in candidates:
        ptq.apply(assignment)
        with torch.inference_mode():
            output = warm(*utterance)
        assert torch.equal(output, alone(float_model, assignment))
    # A training step moves the weights: nothing cached for the old ones is used.
    with torch.inference_mode():
        before = warm(*utterance)
    with torch.no_grad():
        for parameter in warm.parameters():
            parameter.mul_(0.5)
    ptq.apply(candidates[0])
    # The same weights and calibration in new tensors: nothing cached applies.
    recomputed = copy.deepcopy(float_model)
    settings = quantizers(warm)
    for name, quantizer in quantizers(recomputed).items():
        q = settings[name]
        quantizer.configure(
            clipping=q.clipping, percentile=q.percentile, per_channel=q.per_channel,
            statistic=q.statistic, grid=q.grid,
        )  # fmt: skip
    recomputed.load_state_dict(warm.state_dict())
    apply_bit_assignment(recomputed, candidates[0], fixed_bits=16)
    with torch.inference_mode():
        stepped = warm(*utterance)
        assert torch.equal(stepped, recomputed(*utterance))
    assert not torch.equal(stepped, before)
