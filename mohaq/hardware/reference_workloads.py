"""Workloads of the MOHAQ paper, to cost without a model, data or training."""

from __future__ import annotations

from mohaq.quant.points import QuantPoint, Workload

#: Biases and element-wise recurrent vectors of MOHAQ's SRU, always 16-bit.
MOHAQ_SRU_FIXED_PARAMS = 8_800

# (layer, in_features, out_features) in model order; MACs per frame = in x out
# (both directions and all 3 SRU matrices; MOHAQ.md's table).
_MOHAQ_SRU_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("sru0", 23, 3300),
    ("proj1", 1100, 256),
    ("sru1", 256, 3300),
    ("proj2", 1100, 256),
    ("sru2", 256, 3300),
    ("proj3", 1100, 256),
    ("sru3", 256, 3300),
    ("output", 1100, 1904),
)


def mohaq_sru_workload() -> Workload:
    """MOHAQ's 4-layer bidirectional SRU on TIMIT: 16 points, 8 matrix products.

    Each layer ``L`` has a weight point ``L.weight`` (params = MACs per frame)
    and an input activation point ``L.input``: sru0..sru3, proj1..proj3, output.
    """
    points: list[QuantPoint] = []
    for layer, in_features, out_features in _MOHAQ_SRU_LAYERS:
        macs = in_features * out_features
        points.append(QuantPoint(f"{layer}.input", "activation", layer))
        points.append(
            QuantPoint(
                f"{layer}.weight",
                "weight",
                layer,
                params=macs,
                macs_per_frame=macs,
                in_features=in_features,
                out_features=out_features,
                input_point=f"{layer}.input",
            )
        )
    return Workload(tuple(points), fixed_params=MOHAQ_SRU_FIXED_PARAMS, fixed_bits=16)
