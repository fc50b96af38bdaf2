"""Importing sru-package weights: the converted layers compute what the package computes."""

from __future__ import annotations

import warnings

import pytest
import torch

from mohaq.models.acoustic import AcousticModel
from mohaq.models.sru import SRULayer
from mohaq.models.sru_import import SRUImportError, import_sru, import_sru_cell

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the package warns that it cannot build CUDA kernels
    sru = pytest.importorskip("sru")


def _package_stack(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    stack = sru.SRU(
        3, 4, num_layers=2, bidirectional=True, projection_size=3, highway_bias=-1.0,
        rescale=True, **kwargs,
    )  # fmt: skip
    with torch.no_grad():
        for cell in stack.rnn_lst:  # non-trivial recurrent vectors and biases
            cell.weight_c.normal_()
            cell.bias.normal_()
    return stack.eval()


def _package_forward(stack: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    # With gradients on, the package runs its pure-Python recurrence on CPU
    # (no C++ extension to build).
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")
        output, _ = stack(x)
    return output.detach()


def test_imported_stack_matches_the_package() -> None:
    stack = _package_stack()
    # Layer 0: 3 -> 8 outputs, a 4th (highway) matrix; layer 1: a projection to 3.
    assert [cell.num_matrices for cell in stack.rnn_lst] == [4, 3]
    assert [cell.projection_size for cell in stack.rnn_lst] == [0, 3]
    model = AcousticModel(num_features=3, num_classes=5, hidden_size=4, num_layers=2,
                          projection_size=3, highway_bias=-1.0).eval()  # fmt: skip
    import_sru(model, stack)
    x = torch.randn(7, 2, 3, generator=torch.Generator().manual_seed(1))  # (T, B, features)
    expected = _package_forward(stack, x)
    lengths = torch.tensor([7, 7])
    with torch.no_grad():
        ours = x.transpose(0, 1)
        for layer in model.layers:
            ours = layer(ours, lengths)
    torch.testing.assert_close(ours.transpose(0, 1), expected, atol=1e-5, rtol=1e-5)


def test_highway_matrix_is_divided_by_alpha() -> None:
    # The package bakes its rescale into the 4th matrix; SRULayer scales at run time.
    stack = _package_stack()
    cell = stack.rnn_lst[0]
    layer = SRULayer(3, 4, layer="sru0", highway_bias=-1.0)
    import_sru_cell(layer, cell)
    package_highway = cell.weight.detach().view(3, 2, 4, 4)[..., 3]  # (in, D, H)
    ours = layer.weight.detach().view(2, 4, 4, 3)[:, 3]  # (D, H, in)
    torch.testing.assert_close(ours * layer.alpha, package_highway.permute(1, 2, 0))


def test_mismatches_are_named() -> None:
    stack = _package_stack()
    with pytest.raises(SRUImportError, match="does not match SRULayer 'sru0'"):
        import_sru_cell(SRULayer(3, 5, layer="sru0"), stack.rnn_lst[0])
    # Identity highway (3 matrices): the package's scale must equal alpha.
    layer = SRULayer(8, 4, layer="sru1", projection_size=3, projection_layer="proj1",
                     highway_bias=-2.0)  # fmt: skip
    with pytest.raises(SRUImportError, match="scales its highway input by 1.3"):
        import_sru_cell(layer, stack.rnn_lst[1])
    model = AcousticModel(num_features=3, num_classes=5, hidden_size=4, num_layers=1,
                          projection_size=3)  # fmt: skip
    with pytest.raises(SRUImportError, match="the sru.SRU has 2 layers; the model has 1"):
        import_sru(model, stack)
    with pytest.raises(SRUImportError, match=r"options \['layer_norm'\]"):
        import_sru_cell(SRULayer(3, 4, layer="sru0"), sru.SRUCell(3, 4, bidirectional=True,
                                                                 layer_norm=True))  # fmt: skip
