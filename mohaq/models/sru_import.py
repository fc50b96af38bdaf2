"""Importing weights of the `sru` package (Lei et al.'s reference SRU, version 2.x).

The package's ``SRUCell`` computes the same recurrence as
:class:`~mohaq.models.sru.SRULayer` (activation ``"none"``, skip term on), but
stores its parameters differently:

- ``weight`` is ``(input, directions * hidden * k)`` with columns ordered
  (direction, unit, matrix); ``SRULayer.weight`` is ``(directions * k * hidden,
  input)`` with rows ordered (direction, matrix, unit). ``k`` is 3, or 4 with a
  highway matrix (input size != output size).
- ``weight_proj`` ``(input, projection)`` is the transposed projection weight.
- ``weight_c`` and ``bias`` are ``(2 * directions * hidden)``, ordered (forget
  or reset, direction, unit): the recurrent vectors and the gate biases.
- The highway rescale: with 3 matrices the package multiplies the input by its
  ``scale_x`` buffer at run time, as ``SRULayer`` multiplies by ``alpha``; with
  a 4th (highway) matrix it applies no scale at run time, because it baked the
  scale into that matrix when it initialized it. ``SRULayer`` scales the 4th
  matrix's output by ``alpha`` at run time, so the import divides that matrix
  by ``alpha``.

Only the package's plain configuration maps: no layer norm, no tanh, no custom
module, skip term on, not v1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mohaq.models.acoustic import AcousticModel
from mohaq.models.sru import SRULayer


class SRUImportError(ValueError):
    """The sru-package module does not map onto the mohaq layer (sizes, options)."""


def _attribute(cell: Any, name: str) -> Any:
    if not hasattr(cell, name):
        raise SRUImportError(
            f"{type(cell).__name__} has no attribute {name!r}; expected an sru.SRUCell "
            "of the sru package 2.x"
        )
    return getattr(cell, name)


def _check_options(cell: Any) -> None:
    unsupported = {
        "layer_norm": _attribute(cell, "layer_norm") is not None,
        "use_tanh (activation 'tanh')": _attribute(cell, "activation_type") != 0,
        "custom_m": _attribute(cell, "custom_m") is not None,
        "has_skip_term=False": not _attribute(cell, "has_skip_term"),
        "v1": bool(_attribute(cell, "v1")),
    }
    found = [name for name, present in unsupported.items() if present]
    if found:
        raise SRUImportError(
            f"SRUCell options {found} have no counterpart in mohaq's SRULayer; supported: "
            "no layer norm, activation 'none', no custom module, skip term on, v2 equations"
        )


def sru_cell_tensors(cell: Any, layer: SRULayer) -> dict[str, Tensor]:
    """The tensors of ``layer`` (state-dict names) equal to ``cell``'s parameters.

    Raises:
        SRUImportError: if sizes, directions, projection or options differ, or
            the cell's highway scale is not ``layer.alpha``.
    """
    _check_options(cell)
    directions = 2 if _attribute(cell, "bidirectional") else 1
    hidden = int(_attribute(cell, "hidden_size"))
    ours = {
        "input size": layer.input_size,
        "hidden size": layer.hidden_size,
        "directions": layer.directions,
        "matrices": layer.num_matrices,
        "projection": 0 if layer.projection is None else layer.projection.out_features,
    }
    theirs = {
        "input size": int(_attribute(cell, "input_size")),
        "hidden size": hidden,
        "directions": directions,
        "matrices": int(_attribute(cell, "num_matrices")),
        "projection": int(_attribute(cell, "projection_size")),
    }
    if ours != theirs:
        raise SRUImportError(f"SRUCell {theirs} does not match SRULayer {layer.layer!r} {ours}")
    k = layer.num_matrices
    weight = _attribute(cell, "weight").detach()
    product_input = layer.product_input
    if tuple(weight.shape) != (product_input, directions * hidden * k):
        raise SRUImportError(
            f"SRUCell weight has shape {tuple(weight.shape)}; the sru package 2.x layout is "
            f"(input, directions * hidden * matrices) = {(product_input, directions * hidden * k)}"
        )
    scale = (
        float(_attribute(cell, "scale_x").reshape(-1)[0]) if _attribute(cell, "rescale") else 1.0
    )
    # (in, D, H, k) -> (D, k, H, in): rows ordered (direction, matrix, unit).
    matrices = weight.view(product_input, directions, hidden, k).permute(1, 3, 2, 0).clone()
    if k == 4:
        matrices[:, 3] /= layer.alpha  # the package's scale lives in the matrix itself
    elif abs(scale - layer.alpha) > 1e-6 * max(1.0, scale):
        raise SRUImportError(
            f"the SRUCell scales its highway input by {scale:.6g} but SRULayer {layer.layer!r} "
            f"by alpha = {layer.alpha:.6g}; build the layer with the cell's highway_bias and "
            "rescale setting"
        )
    vectors = _attribute(cell, "weight_c").detach().view(2, directions, hidden)
    biases = _attribute(cell, "bias").detach().view(2, directions, hidden)
    tensors = {
        "weight": matrices.reshape(directions * k * hidden, product_input),
        "v_forget": vectors[0].clone(),
        "v_reset": vectors[1].clone(),
        "b_forget": biases[0].clone(),
        "b_reset": biases[1].clone(),
    }
    if layer.projection is not None:
        tensors["projection.weight"] = _attribute(cell, "weight_proj").detach().t().clone()
    return tensors


@torch.no_grad()
def import_sru_cell(layer: SRULayer, cell: Any) -> None:
    """Copies an ``sru.SRUCell``'s parameters into ``layer``, converted.

    Raises:
        SRUImportError: as :func:`sru_cell_tensors`.
    """
    tensors = sru_cell_tensors(cell, layer)
    parameters = dict(layer.named_parameters())
    for name, value in tensors.items():
        parameters[name].copy_(value.to(parameters[name].dtype))


def import_sru(model: AcousticModel, sru: Any) -> None:
    """Copies the layers of an ``sru.SRU`` stack into an SRU ``AcousticModel``.

    The output layer is the model's own (the package has none).

    Raises:
        SRUImportError: if the stack and the model differ in layer count, sizes,
            projections or options.
    """
    cells: Sequence[Any] = list(_attribute(sru, "rnn_lst"))
    if model.hparams["cell"] != "sru":
        raise SRUImportError(f"the model's cell is {model.hparams['cell']!r}; expected 'sru'")
    if len(cells) != len(model.layers):
        raise SRUImportError(
            f"the sru.SRU has {len(cells)} layers; the model has {len(model.layers)}"
        )
    if getattr(sru, "input_to_hidden", None) is not None:
        raise SRUImportError("sru.SRU(proj_input_to_hidden_first=True) has no counterpart")
    for layer, cell in zip(model.layers, cells, strict=True):
        import_sru_cell(layer, cell)
