from __future__ import annotations

import pytest
import torch

from mohaq.models.acoustic import AcousticModel
from mohaq.quant.apply import apply_bit_assignment
from mohaq.quant.assignment import BitAssignment


def test_paper_sru_has_mohaqs_16_points_and_macs() -> None:
    model = AcousticModel(num_features=23, num_classes=1904)
    workload = model.workload()
    assert len(workload.points) == 16
    macs = {p.name: p.macs_per_frame for p in workload.matmul_weights()}
    # MOHAQ.md's table; layer 0 has a 4th (highway) matrix since 23 != 1100 (23 x 4400).
    assert macs == {
        "sru0.weight": 23 * 4400,
        "proj1.weight": 281_600, "proj2.weight": 281_600, "proj3.weight": 281_600,
        "sru1.weight": 844_800, "sru2.weight": 844_800, "sru3.weight": 844_800,
        "output.weight": 2_094_400,
    }  # fmt: skip
    for point in workload.matmul_weights():
        assert point.params == point.in_features * point.out_features == point.macs_per_frame
        assert workload.point(point.input_point).kind == "activation"


def test_gru_operator_points() -> None:
    model = AcousticModel(num_features=3, num_classes=4, cell="gru", hidden_size=5, num_layers=1,
                          projection_size=None, granularity="operator")  # fmt: skip
    names = [p.name for p in model.workload().points]
    assert names == [
        "gru0.x", "gru0.h", "gru0.w_ih", "gru0.w_hh", "gru0.ih", "gru0.hh", "gru0.r", "gru0.z",
        "gru0.n", "gru0.rhn", "gru0.zh", "gru0.zn", "output.input", "output.weight",
    ]  # fmt: skip
    x, lengths = torch.randn(2, 6, 3), torch.tensor([6, 4])
    float_out = model(x, lengths)
    apply_bit_assignment(model, BitAssignment({"gru0.zn": 2}))
    assert not torch.allclose(model(x, lengths), float_out)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cell": "rnn"}, "cell must be one of"),
        ({"granularity": "operator", "cell": "sru"}, "operator' is implemented for cells"),
        ({"dropout": 1.5}, "dropout must be in"),
        ({"weight_clipping": "kl"}, "weight_clipping must be one of"),
    ],
)
def test_bad_arguments_name_what_is_allowed(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AcousticModel(num_features=3, num_classes=4, **kwargs)


@pytest.mark.parametrize("cell", ["sru", "gru", "lstm"])
def test_quantization_degrades_gracefully_with_bits(cell: str) -> None:
    torch.manual_seed(0)
    model = AcousticModel(num_features=6, num_classes=5, cell=cell, hidden_size=8, num_layers=2,
                          projection_size=4, dropout=0.0).eval()  # fmt: skip
    x, lengths = torch.randn(2, 9, 6), torch.tensor([9, 7])
    with torch.no_grad():
        reference = model(x, lengths)
        errors = {}
        for bits in (16, 8, 4, 2):
            apply_bit_assignment(model, BitAssignment.uniform(model.workload().names, bits))
            errors[bits] = (model(x, lengths) - reference).abs().mean().item()
    assert errors[16] < 1e-3 < errors[2]
    assert errors[16] < errors[8] < errors[4] < errors[2]
