"""The fused SRU against the plain equations, gradcheck, in-loop state quantization."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mohaq.models import sru_cpu
from mohaq.models.sru import SRULayer
from mohaq.models.sru_recurrence import sru_layer_recurrence, sru_recurrence
from mohaq.quant.calibration import observing
from mohaq.quant.functional import fake_quantize

# Every layer-level test runs on both recurrence kernels; the compiled CPU one
# needs a C++ compiler.
KERNELS = [
    "script",
    pytest.param(
        "cpu",
        marks=pytest.mark.skipif(
            not sru_cpu.cpu_kernel_available(torch.zeros(1)), reason="no C++ compiler"
        ),
    ),
]


def sru_reference(
    layer: SRULayer, x: Tensor, lengths: Tensor, state_quant: tuple[float, int] | None = None
) -> Tensor:
    """The SRU equations, one sequence, direction and step at a time, in plain Python.

    Uses only the layer's parameters (weight rows ordered direction, matrix,
    unit), not its code: f, c, r, h as in Lei et al. (2018), the backward
    direction starting at each sequence's last valid frame.
    """
    batch, steps, _ = x.shape
    d_count, hidden, k = layer.directions, layer.hidden_size, layer.num_matrices
    product_input = layer.projection(x) if layer.projection is not None else x
    u = (product_input @ layer.weight.t()).view(batch, steps, d_count, k, hidden)
    out = torch.zeros(batch, steps, d_count, hidden, dtype=x.dtype)
    for b in range(batch):
        length = int(lengths[b])
        for d in range(d_count):
            c = torch.zeros(hidden, dtype=x.dtype)
            order = range(length) if d == 0 else range(length - 1, -1, -1)
            for t in order:
                if k == 4:
                    highway = u[b, t, d, 3]
                else:
                    highway = x[b, t, d * hidden : (d + 1) * hidden]
                f = torch.sigmoid(u[b, t, d, 1] + layer.v_forget[d] * c + layer.b_forget[d])
                r = torch.sigmoid(u[b, t, d, 2] + layer.v_reset[d] * c + layer.b_reset[d])
                c = f * c + (1 - f) * u[b, t, d, 0]
                if state_quant is not None:
                    c = fake_quantize(c, state_quant[0], state_quant[1])
                out[b, t, d] = r * c + (1 - r) * highway * layer.alpha
    return out.reshape(batch, steps, d_count * hidden)


def _random_parameters(layer: SRULayer) -> None:
    # Non-zero biases so their gradients are checked too.
    with torch.no_grad():
        for parameter in (layer.b_forget, layer.b_reset):
            parameter.normal_()


def _assert_same_values_and_gradients(
    layer: SRULayer, x: Tensor, actual: Tensor, expected: Tensor, atol: float
) -> None:
    assert torch.allclose(actual, expected, atol=atol, rtol=0)
    grad = torch.randn_like(actual)
    inputs = [x, *layer.parameters()]
    ours = torch.autograd.grad((actual * grad).sum(), inputs)
    theirs = torch.autograd.grad((expected * grad).sum(), inputs)
    for name, a, e in zip(
        ["x", *(n for n, _ in layer.named_parameters())], ours, theirs, strict=True
    ):
        assert torch.allclose(a, e, atol=atol, rtol=0), name


@pytest.mark.parametrize(
    ("input_size", "projection", "bidirectional", "dtype", "atol"),
    [
        (5, None, True, torch.float64, 1e-12),  # 4th (highway) matrix
        (8, None, True, torch.float64, 1e-12),  # input size = 2 x hidden: 3 matrices
        (8, 3, True, torch.float64, 1e-12),  # projection, highway from the input
        (4, None, False, torch.float64, 1e-12),
        (8, 3, True, torch.float32, 1e-5),
        (6, None, False, torch.float32, 1e-5),
    ],
)
@pytest.mark.parametrize("kernel", KERNELS)
def test_fused_sru_equals_the_equations(
    input_size: int,
    projection: int | None,
    bidirectional: bool,
    dtype: torch.dtype,
    atol: float,
    kernel: str,
) -> None:
    torch.manual_seed(0)
    layer = SRULayer(input_size, 4, layer="sru1", bidirectional=bidirectional,
                     projection_size=projection, projection_layer="proj1",
                     kernel=kernel).to(dtype)  # fmt: skip
    _random_parameters(layer)
    x = torch.randn(3, 7, input_size, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([7, 4, 1])
    actual, expected = layer(x, lengths), sru_reference(layer, x, lengths)
    assert actual.shape == (3, 7, 4 * layer.directions)
    _assert_same_values_and_gradients(layer, x, actual, expected, atol)


def test_matrix_count_and_rescale_follow_the_sru_package() -> None:
    assert SRULayer(23, 550, layer="sru0").num_matrices == 4
    assert SRULayer(1100, 550, layer="sru1", projection_size=256).num_matrices == 3
    assert SRULayer(550, 550, layer="sru0", bidirectional=False).num_matrices == 3
    assert SRULayer(4, 2, layer="s").alpha == pytest.approx(math.sqrt(1 + 2 * math.exp(-1.0)))
    assert SRULayer(4, 2, layer="s", highway_bias=0.0).alpha == pytest.approx(math.sqrt(3.0))
    assert SRULayer(4, 2, layer="s", rescale=False).alpha == 1.0
    assert torch.all(SRULayer(4, 2, layer="s").b_reset == -1.0)


def _recurrence_inputs(seed: int, d: int = 2, t: int = 5, b: int = 3, h: int = 4):
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()

    tensors = [rand(d, t, b, h) for _ in range(4)] + [rand(d, h) for _ in range(4)]
    mask = torch.rand(d, t, b, 1, generator=generator) > 0.3
    return tensors, mask, rand(d, b, h)


@pytest.mark.parametrize("masked", [False, True])
def test_hand_written_backward_passes_gradcheck(masked: bool) -> None:
    tensors, mask, c0 = _recurrence_inputs(1)

    def run(*inputs: Tensor) -> Tensor:
        return sru_recurrence(*inputs[:8], mask if masked else None, inputs[8])[0]

    assert torch.autograd.gradcheck(run, (*tensors, c0))


def test_masked_steps_carry_the_state() -> None:
    tensors, _, c0 = _recurrence_inputs(2, d=1, t=4, b=1)
    mask = torch.tensor([True, False, False, True]).view(1, 4, 1, 1)
    _, states = sru_recurrence(*tensors, mask, c0)
    assert torch.equal(states[:, 1], states[:, 0]) and torch.equal(states[:, 2], states[:, 0])
    # Dropping the masked steps gives the same last state.
    kept = [tensor[:, [0, 3]] for tensor in tensors[:4]]
    _, unpadded = sru_recurrence(*kept, *tensors[4:], None, c0)
    assert torch.allclose(states[:, 3], unpadded[:, 1], atol=1e-14)


def test_gradient_through_the_returned_states_is_refused() -> None:
    tensors, _, c0 = _recurrence_inputs(3)
    _, states = sru_recurrence(*tensors, None, c0)
    assert not states.requires_grad


@pytest.mark.parametrize("kernel", KERNELS)
def test_padding_never_leaks_into_either_direction(kernel: str) -> None:
    torch.manual_seed(3)
    layer = SRULayer(4, 3, layer="sru0", kernel=kernel).double()
    x = torch.randn(1, 5, 4, dtype=torch.double)
    padded = torch.cat([x, 100 * torch.randn(1, 4, 4, dtype=torch.double)], dim=1)
    alone = layer(x, torch.tensor([5]))
    in_batch = layer(padded, torch.tensor([5]))
    assert torch.allclose(alone, in_batch[:, :5], atol=1e-12)
    assert torch.all(in_batch[:, 5:] == 0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bits", [3, 8])
def test_state_quantization_inside_the_loop_matches_per_step_fake_quantization(
    bits: int, kernel: str
) -> None:
    torch.manual_seed(4)
    layer = SRULayer(6, 4, layer="sru0", kernel=kernel).double()
    _random_parameters(layer)
    x = torch.randn(2, 6, 6, dtype=torch.double, requires_grad=True)
    lengths = torch.tensor([6, 3])
    # A small scale so that some states are clamped (the STE passes no gradient there).
    scale = 0.5 / (2 ** (bits - 1) - 1)
    layer.state_quant.quant_params = lambda _x=None: (
        torch.tensor(scale, dtype=torch.float64),
        bits,
    )  # type: ignore[method-assign]
    actual = layer(x, lengths)
    expected = sru_reference(layer, x, lengths, state_quant=(scale, bits))
    _assert_same_values_and_gradients(layer, x, actual, expected, 1e-10)
    float_layer = SRULayer(6, 4, layer="sru0").double()
    float_layer.load_state_dict(layer.state_dict())
    assert not torch.allclose(actual, float_layer(x, lengths))


def test_state_quantizer_bits_change_the_output_and_16_bits_is_close() -> None:
    torch.manual_seed(5)
    layer = SRULayer(4, 3, layer="sru0")
    x, lengths = torch.randn(2, 5, 4), torch.tensor([5, 5])
    float_out = layer(x, lengths)
    layer.state_quant.bits = 2
    assert not torch.allclose(float_out, layer(x, lengths), atol=1e-2)
    layer.state_quant.bits = 16
    assert torch.allclose(float_out, layer(x, lengths), atol=1e-3)


def test_layer_points_and_fixed_parameters() -> None:
    layer = SRULayer(10, 4, layer="sru2", projection_size=3, projection_layer="proj2")
    points = {p.name: p for p in layer.quant_points()}
    assert list(points) == ["proj2.input", "proj2.weight", "sru2.input", "sru2.weight"]
    assert points["proj2.weight"].macs_per_frame == 10 * 3
    # 10 inputs != 8 outputs: 4 matrices of 2 directions x 4 units on the 3-dim projection.
    assert points["sru2.weight"].macs_per_frame == points["sru2.weight"].params == 3 * 4 * 2 * 4
    assert (points["sru2.weight"].in_features, points["sru2.weight"].out_features) == (3, 32)
    assert points["sru2.weight"].input_point == "sru2.input"
    assert layer.fixed_params() == 4 * 2 * 4  # v_f, v_r, b_f, b_r per direction and unit


def test_calibration_records_the_state_once_per_utterance_then_quantizes_with_it() -> None:
    torch.manual_seed(6)
    layer = SRULayer(4, 3, layer="sru0")
    utterances = [torch.randn(1, 5, 4) for _ in range(3)]
    with observing(layer), torch.no_grad():
        for x in utterances:
            layer(x, torch.tensor([5]))
    assert layer.state_quant.num_observed == layer.input_quant.num_observed == 3
    layer.state_quant.bits = 16
    scale, bits = layer.state_quant.quant_params()
    assert bits == 16 and float(scale) > 0
    with torch.inference_mode():
        quantized = layer(utterances[0], torch.tensor([5]))
    layer.state_quant.bits = None
    with torch.no_grad():
        assert torch.allclose(quantized, layer(utterances[0], torch.tensor([5])), atol=1e-3)


def _layer_recurrence_inputs(highway_matrix: bool, seed: int = 7):
    generator = torch.Generator().manual_seed(seed)
    b, t, d, h = 3, 5, 2, 4
    m = 4 if highway_matrix else 3

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()

    u = rand(b, t, d, m, h)
    highway = None if highway_matrix else rand(b, t, d * h)
    return u, highway, [rand(d, h) for _ in range(4)], torch.tensor([5, 2, 0])


@pytest.mark.skipif(not sru_cpu.cpu_kernel_available(torch.zeros(1)), reason="no C++ compiler")
@pytest.mark.parametrize("highway_matrix", [True, False])
def test_cpu_kernel_passes_gradcheck(highway_matrix: bool) -> None:
    u, highway, vectors, lengths = _layer_recurrence_inputs(highway_matrix)
    inputs = (u, *vectors) if highway is None else (u, highway, *vectors)

    def run(*tensors: Tensor) -> Tensor:
        source = None if highway is None else tensors[1]
        return sru_layer_recurrence(tensors[0], source, *tensors[-4:], lengths, alpha=1.3,
                                    kernel="cpu")[0]  # fmt: skip

    assert torch.autograd.gradcheck(run, inputs)


@pytest.mark.skipif(not sru_cpu.cpu_kernel_available(torch.zeros(1)), reason="no C++ compiler")
def test_cpu_kernel_states_and_threads_match_the_torch_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    u, highway, vectors, lengths = _layer_recurrence_inputs(False)
    args = (u, highway, *vectors, lengths)
    expected, expected_states = sru_layer_recurrence(*args, alpha=0.7, keep_states=True,
                                                     kernel="script")  # fmt: skip
    # Force the threaded split even on this tiny problem.
    monkeypatch.setattr(sru_cpu, "PARALLEL_MIN_WORK", 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        actual, states = sru_layer_recurrence(*args, alpha=0.7, keep_states=True, kernel="cpu")
    finally:
        torch.set_num_threads(threads)
    assert torch.allclose(actual, expected, atol=1e-12, rtol=0)
    valid = (torch.arange(5)[None, :] < lengths[:, None])[..., None, None]
    assert torch.allclose(states * valid, expected_states * valid, atol=1e-12, rtol=0)


def test_unknown_kernel_names_the_choices() -> None:
    with pytest.raises(ValueError, match="kernel must be one of"):
        SRULayer(4, 3, layer="sru0", kernel="cuda")  # type: ignore[arg-type]
