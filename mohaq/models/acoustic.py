"""The stacked recurrent acoustic model: recurrent layers, then one output layer.

A plain nn.Module that can rebuild itself from its arguments (``hparams``);
the LightningModule around it is :class:`mohaq.system.AcousticSystem`.

Layout for ``num_layers = N`` with a projection (MOHAQ's SRU)::

    layer 0:      rnn0 (features -> hidden * directions)
    layer i >= 1: proj<i> (hidden * directions -> projection) -> rnn<i>
    output:       output (hidden * directions -> classes)

Points are named ``<layer>.weight`` / ``<layer>.input`` at layer granularity
(16 for the paper's 4-layer SRU), and per operator inside GRU and LSTM cells.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from torch import Tensor, nn

from mohaq.models.gru import GRULayer
from mohaq.models.lstm import LSTMLayer
from mohaq.models.quant_linear import QuantLinear
from mohaq.models.sru import SRULayer
from mohaq.quant.clipping import CLIPPING_METHODS
from mohaq.quant.points import QuantPoint, Workload

CELLS: tuple[str, ...] = ("sru", "gru", "lstm")
GRANULARITIES: tuple[str, ...] = ("layer", "operator")
# Cell types whose quantization points can be split per operator.
OPERATOR_CELLS: tuple[str, ...] = ("gru", "lstm")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class AcousticModel(nn.Module):
    """Stacked (bi)directional recurrent layers and a framewise output layer.

    Args:
        num_features: input feature dimension.
        num_classes: output classes.
        cell: ``"sru"``, ``"gru"`` or ``"lstm"``.
        hidden_size: units per direction.
        num_layers: recurrent layers.
        bidirectional: two directions per layer.
        projection_size: projection in front of layers 1..N-1 (None: none).
        dropout: dropout on the input of every layer after the first and of the output layer.
        highway_bias: SRU reset (highway) gate bias initialisation.
        granularity: ``"layer"`` or ``"operator"`` quantization points.
        weight_clipping: clipping of weight quantizers.
        activation_clipping: clipping (calibration) of activation quantizers.

    Raises:
        ValueError: naming the argument, the value and what is allowed.
    """

    def __init__(
        self,
        *,
        num_features: int,
        num_classes: int,
        cell: Literal["sru", "gru", "lstm"] = "sru",
        hidden_size: int = 550,
        num_layers: int = 4,
        bidirectional: bool = True,
        projection_size: int | None = 256,
        dropout: float = 0.1,
        highway_bias: float = -1.0,
        granularity: Literal["layer", "operator"] = "layer",
        weight_clipping: str = "mmse",
        activation_clipping: str = "mmse",
    ) -> None:
        super().__init__()
        _require(num_features >= 1, f"num_features must be >= 1, got {num_features}")
        _require(num_classes >= 2, f"num_classes must be >= 2, got {num_classes}")
        _require(cell in CELLS, f"cell must be one of {CELLS}, got {cell!r}")
        _require(hidden_size >= 1, f"hidden_size must be >= 1, got {hidden_size}")
        _require(num_layers >= 1, f"num_layers must be >= 1, got {num_layers}")
        _require(
            projection_size is None or projection_size >= 1,
            f"projection_size must be None or >= 1, got {projection_size}",
        )
        _require(0.0 <= dropout < 1.0, f"dropout must be in [0, 1), got {dropout}")
        _require(
            granularity in GRANULARITIES,
            f"granularity must be one of {GRANULARITIES}, got {granularity!r}",
        )
        _require(
            granularity == "layer" or cell in OPERATOR_CELLS,
            f"granularity 'operator' is implemented for cells {OPERATOR_CELLS}, not {cell!r}; "
            f"supported: any cell with 'layer', {OPERATOR_CELLS} with 'operator'",
        )
        for name, method in (
            ("weight_clipping", weight_clipping),
            ("activation_clipping", activation_clipping),
        ):
            _require(
                method in CLIPPING_METHODS,
                f"{name} must be one of {CLIPPING_METHODS}, got {method!r}",
            )
        self.hparams: dict[str, Any] = dict(
            num_features=num_features, num_classes=num_classes, cell=cell,
            hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional,
            projection_size=projection_size, dropout=dropout, highway_bias=highway_bias,
            granularity=granularity, weight_clipping=weight_clipping,
            activation_clipping=activation_clipping,
        )  # fmt: skip
        directions = 2 if bidirectional else 1
        clipping = dict(weight_clipping=weight_clipping, activation_clipping=activation_clipping)
        self.layers = nn.ModuleList()
        self.projections = nn.ModuleDict()
        layer_input = num_features
        for index in range(num_layers):
            name = f"{cell}{index}"
            projected = projection_size is not None and index >= 1
            if cell == "sru":
                self.layers.append(
                    SRULayer(
                        layer_input, hidden_size, layer=name, bidirectional=bidirectional,
                        projection_size=projection_size if projected else None,
                        projection_layer=f"proj{index}", highway_bias=highway_bias, **clipping,
                    )
                )  # fmt: skip
            else:
                if projected:
                    self.projections[str(index)] = QuantLinear(
                        layer_input, projection_size, layer=f"proj{index}", bias=False, **clipping
                    )
                recurrent_input = projection_size if projected else layer_input
                if cell == "gru":
                    layer = GRULayer(recurrent_input, hidden_size, layer=name,
                                     bidirectional=bidirectional, granularity=granularity, **clipping)  # fmt: skip
                else:
                    layer = LSTMLayer(recurrent_input, hidden_size, layer=name,
                                      bidirectional=bidirectional, granularity=granularity,
                                      **clipping)  # fmt: skip
                self.layers.append(layer)
            layer_input = hidden_size * directions
        self.dropout = nn.Dropout(dropout)
        self.output = QuantLinear(layer_input, num_classes, layer="output", **clipping)

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any]) -> AcousticModel:
        return cls(**hparams)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        """``(B, T, num_features)``, ``(B,)`` -> logits ``(B, T, num_classes)``."""
        x = features
        for index, layer in enumerate(self.layers):
            if index > 0:
                x = self.dropout(x)
            if str(index) in self.projections:
                x = self.projections[str(index)](x)
            x = layer(x, lengths)
        return self.output(self.dropout(x))

    def stages(self) -> list[tuple[tuple[str, ...], Callable[[Tensor, Tensor], Tensor]]]:
        """The forward as a chain of stages ``(points, run(x, lengths))``: a stage
        reads only its own quantization points, so its output depends on the
        bits of its and the earlier stages' points (a candidate evaluator can
        reuse the activations of candidates sharing a prefix of bits)."""
        chain: list[tuple[tuple[str, ...], Callable[[Tensor, Tensor], Tensor]]] = []
        for index, layer in enumerate(self.layers):
            projection = self.projections[str(index)] if str(index) in self.projections else None
            points = tuple(p.name for p in (projection.quant_points() if projection else ()))
            points += tuple(p.name for p in layer.quant_points())

            def run(x: Tensor, lengths: Tensor, index: int = index, layer: nn.Module = layer,
                    projection: nn.Module | None = projection) -> Tensor:  # fmt: skip
                if index > 0:
                    x = self.dropout(x)
                if projection is not None:
                    x = projection(x)
                return layer(x, lengths)

            chain.append((points, run))
        output_points = tuple(p.name for p in self.output.quant_points())
        chain.append((output_points, lambda x, lengths: self.output(self.dropout(x))))
        return chain

    def quant_points(self) -> tuple[QuantPoint, ...]:
        points: list[QuantPoint] = []
        for index, layer in enumerate(self.layers):
            if str(index) in self.projections:
                points += self.projections[str(index)].quant_points()
            points += layer.quant_points()
        points += self.output.quant_points()
        return tuple(points)

    def workload(self) -> Workload:
        fixed = sum(layer.fixed_params() for layer in self.layers) + self.output.fixed_params()
        return Workload(points=self.quant_points(), fixed_params=fixed, fixed_bits=16)
