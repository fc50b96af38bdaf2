"""make_quantizable on the `sru` package's SRU: equal in float, points by path,
unsupported options refused."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from mohaq.convert import QuantSRU, UnsupportedConfigurationError, make_quantizable, model_workload

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the package warns that it has no CUDA kernels
    sru = pytest.importorskip("sru")


def _pair(**options) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    original = sru.SRU(4, 6, **options).double().eval()
    return original, make_quantizable(copy.deepcopy(original))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("projection_size", [0, 3])
@pytest.mark.parametrize("rescale", [False, True])
def test_sru_equals_the_package_in_float(
    bidirectional, num_layers, projection_size, rescale
) -> None:
    original, converted = _pair(num_layers=num_layers, bidirectional=bidirectional,
                                projection_size=projection_size, rescale=rescale,
                                highway_bias=-1.0)  # fmt: skip
    assert isinstance(converted, QuantSRU)
    # The package keeps its highway scale in float32: 1e-7 relative where it applies at run time.
    tolerance = dict(rtol=1e-6, atol=1e-6) if rescale else dict(rtol=0.0, atol=1e-12)
    x = torch.randn(7, 3, 4, dtype=torch.float64)
    mask = torch.zeros(7, 3, dtype=torch.bool)
    mask[5:, 1], mask[3:, 2] = True, True
    for kwargs in ({}, {"mask_pad": mask}):
        (h, c), (hq, cq) = original(x, **kwargs), converted(x, **kwargs)
        valid = (~mask)[..., None] if kwargs else torch.ones(1, dtype=torch.bool)
        torch.testing.assert_close(hq * valid, h * valid, **tolerance)
        torch.testing.assert_close(cq, c, **tolerance)


def test_packed_input_and_torch_compatible_states() -> None:
    original, converted = _pair(num_layers=2, bidirectional=True, nn_rnn_compatible_return=True)
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor([4, 6, 2]), enforce_sorted=False)
    (h, c), (hq, cq) = original(packed), converted(packed)
    torch.testing.assert_close(hq.data, h.data, rtol=0.0, atol=1e-12)
    torch.testing.assert_close(cq, c, rtol=0.0, atol=1e-12)
    assert cq.shape == (4, 3, 6)


def test_points_and_workload_of_a_stack_with_projection() -> None:
    holder = nn.Sequential()
    holder.add_module("encoder", sru.SRU(4, 6, 2, projection_size=3))
    model = make_quantizable(holder)
    workload = model_workload(model)
    assert workload.names == (
        "encoder.l0.proj.input", "encoder.l0.proj.weight", "encoder.l0.input", "encoder.l0.weight",
        "encoder.l1.proj.input", "encoder.l1.proj.weight", "encoder.l1.input", "encoder.l1.weight",
    )  # fmt: skip
    # layer 0: 4 matrices (input 4 != output 6) over the 3-dim projection
    assert workload.point("encoder.l0.weight").params == 4 * 6 * 3
    assert workload.point("encoder.l1.weight").params == 3 * 6 * 3


def test_unsupported_options_are_refused() -> None:
    with pytest.raises(UnsupportedConfigurationError, match="proj_input_to_hidden_first=False"):
        make_quantizable(sru.SRU(4, 6, 2, projection_size=3, proj_input_to_hidden_first=True))
    with pytest.raises(UnsupportedConfigurationError, match="layer norm"):
        make_quantizable(sru.SRU(4, 6, 1, layer_norm=True))
    training = make_quantizable(sru.SRU(4, 6, 2, dropout=0.2))
    with pytest.raises(UnsupportedConfigurationError, match="variational dropout in training"):
        training(torch.randn(3, 2, 4))
    training.eval()
    assert training(torch.randn(3, 2, 4))[0].shape == (3, 2, 6)
    with pytest.raises(UnsupportedConfigurationError, match="c0=None or zeros"):
        training(torch.randn(3, 2, 4), torch.ones(2, 2, 6))
    holes = torch.zeros(3, 2, dtype=torch.bool)
    holes[0, 1] = True  # padding before a valid step
    with pytest.raises(UnsupportedConfigurationError, match="padding after each sequence"):
        training(torch.randn(3, 2, 4), mask_pad=holes)
