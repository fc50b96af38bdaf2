"""AcousticModel: MOHAQ's point list and MACs, rebuilding, validation, quantization."""

from __future__ import annotations

import pytest
import torch

from mohaq.models.acoustic import AcousticModel
from mohaq.quant.apply import apply_bit_assignment
from mohaq.quant.assignment import BitAssignment


def test_paper_sru_points_macs_and_fixed_parameters() -> None:
    model = AcousticModel(num_features=23, num_classes=1904)  # built, not run: it is large
    workload = model.workload()
    assert workload.names == (
        "sru0.input", "sru0.weight",
        "proj1.input", "proj1.weight", "sru1.input", "sru1.weight",
        "proj2.input", "proj2.weight", "sru2.input", "sru2.weight",
        "proj3.input", "proj3.weight", "sru3.input", "sru3.weight",
        "output.input", "output.weight",
    )  # fmt: skip
    shapes = {
        p.name: (p.in_features, p.out_features, p.macs_per_frame) for p in workload.matmul_weights()
    }
    assert shapes == {
        # Layer 0 has the sru package's 4th (highway) matrix since 23 != 1100;
        # MOHAQ's table counts 3 (23 x 3300 = 75,900).
        "sru0.weight": (23, 4400, 101_200),
        "proj1.weight": (1100, 256, 281_600), "sru1.weight": (256, 3300, 844_800),
        "proj2.weight": (1100, 256, 281_600), "sru2.weight": (256, 3300, 844_800),
        "proj3.weight": (1100, 256, 281_600), "sru3.weight": (256, 3300, 844_800),
        "output.weight": (1100, 1904, 2_094_400),
    }  # fmt: skip
    for point in workload.matmul_weights():
        assert point.params == point.macs_per_frame
        assert workload.point(point.input_point).kind == "activation"
    # v_f, v_r, b_f, b_r: 4 x 2 directions x 550 units per layer; the output bias.
    assert workload.fixed_params == 4 * 4 * 1100 + 1904
    assert workload.fixed_bits == 16


def test_two_layer_sru_with_projection_points() -> None:
    model = AcousticModel(
        num_features=6, num_classes=5, hidden_size=8, num_layers=2, projection_size=4
    )
    assert model.workload().names == (
        "sru0.input", "sru0.weight", "proj1.input", "proj1.weight", "sru1.input", "sru1.weight",
        "output.input", "output.weight",
    )  # fmt: skip


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gru_and_lstm_stacks_get_projection_layers_too(cell: str) -> None:
    model = AcousticModel(num_features=6, num_classes=5, cell=cell, hidden_size=8, num_layers=2,
                          projection_size=4)  # fmt: skip
    gates = {"gru": 3, "lstm": 4}[cell]
    points = {p.name: p for p in model.workload().points}
    assert list(points) == [
        f"{cell}0.input", f"{cell}0.weight", "proj1.input", "proj1.weight",
        f"{cell}1.input", f"{cell}1.weight", "output.input", "output.weight",
    ]  # fmt: skip
    assert points["proj1.weight"].macs_per_frame == 16 * 4
    assert points[f"{cell}1.weight"].macs_per_frame == 2 * gates * 8 * (4 + 8)


def test_lstm_operator_granularity_points() -> None:
    model = AcousticModel(num_features=3, num_classes=4, cell="lstm", hidden_size=5, num_layers=1,
                          projection_size=None, granularity="operator")  # fmt: skip
    assert model.workload().names == (
        "lstm0.x", "lstm0.h", "lstm0.c", "lstm0.w_ih", "lstm0.w_hh", "lstm0.ih", "lstm0.hh",
        "lstm0.i", "lstm0.f", "lstm0.g", "lstm0.o", "lstm0.fc", "lstm0.ig", "lstm0.tanh_c",
        "lstm0.oc", "output.input", "output.weight",
    )  # fmt: skip


def test_gru_operator_granularity_two_layers() -> None:
    model = AcousticModel(num_features=3, num_classes=4, cell="gru", hidden_size=5, num_layers=2,
                          projection_size=None, granularity="operator")  # fmt: skip
    names = model.workload().names
    assert names[:4] == ("gru0.x", "gru0.h", "gru0.w_ih", "gru0.w_hh")
    assert names[12:16] == ("gru1.x", "gru1.h", "gru1.w_ih", "gru1.w_hh")
    assert names[-2:] == ("output.input", "output.weight") and len(names) == 26


@pytest.mark.parametrize("cell", ["sru", "gru", "lstm"])
def test_forward_shapes_and_rebuild_from_hparams(cell: str) -> None:
    torch.manual_seed(0)
    model = AcousticModel(num_features=6, num_classes=5, cell=cell, hidden_size=8, num_layers=3,
                          projection_size=4, dropout=0.0).eval()  # fmt: skip
    x, lengths = torch.randn(2, 9, 6), torch.tensor([9, 6])
    with torch.no_grad():
        logits = model(x, lengths)
    assert logits.shape == (2, 9, 5)
    twin = AcousticModel(**model.hparams).eval()
    twin.load_state_dict(model.state_dict())
    assert twin.hparams == model.hparams and twin.hparams["cell"] == cell
    with torch.no_grad():
        assert torch.equal(twin(x, lengths), logits)
        # Padded frames do not change the valid frames' logits.
        alone = model(x[1:, :6], lengths[1:])
    assert torch.allclose(alone, logits[1:, :6], atol=1e-6)


def test_dropout_only_in_training() -> None:
    model = AcousticModel(num_features=6, num_classes=5, hidden_size=8, num_layers=2,
                          projection_size=None, dropout=0.5)  # fmt: skip
    x, lengths = torch.randn(2, 5, 6), torch.tensor([5, 5])
    assert not torch.equal(model.train()(x, lengths), model(x, lengths))
    model.eval()
    assert torch.equal(model(x, lengths), model(x, lengths))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cell": "rnn"}, r"cell must be one of \('sru', 'gru', 'lstm'\), got 'rnn'"),
        ({"granularity": "operator"}, r"'operator' is implemented for cells \('gru', 'lstm'\)"),
        ({"granularity": "operator", "cell": "sru"}, "supported: any cell with 'layer'"),
        ({"granularity": "gate"}, "granularity must be one of"),
        ({"dropout": 1.5}, r"dropout must be in \[0, 1\), got 1.5"),
        ({"hidden_size": 0}, "hidden_size must be >= 1, got 0"),
        ({"num_layers": 0}, "num_layers must be >= 1"),
        ({"projection_size": 0}, "projection_size must be None or >= 1"),
        ({"num_classes": 1}, "num_classes must be >= 2"),
        ({"weight_clipping": "kl"}, "weight_clipping must be one of"),
        ({"activation_clipping": "aciq"}, "activation_clipping must be one of"),
    ],
)
def test_bad_arguments_name_the_argument_and_what_is_allowed(kwargs: dict, message: str) -> None:
    arguments = {"num_features": 3, "num_classes": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        AcousticModel(**arguments)


@pytest.mark.parametrize("cell", ["sru", "gru", "lstm"])
def test_error_grows_as_bits_shrink_and_unknown_points_are_refused(cell: str) -> None:
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
    with pytest.raises(ValueError, match="unknown quantization point"):
        apply_bit_assignment(model, BitAssignment({f"{cell}0.state": 8}))


@pytest.mark.parametrize("cell", ["sru", "gru"])
def test_stages_chain_to_the_forward_and_own_every_point_once(cell: str) -> None:
    torch.manual_seed(0)
    model = AcousticModel(
        num_features=6, num_classes=5, cell=cell, hidden_size=8, num_layers=3, projection_size=4
    ).eval()
    stages = model.stages()
    assert len(stages) == 4  # three recurrent layers (projections included), the output
    assert [p for points, _ in stages for p in points] == list(model.workload().names)
    names = model.workload().names
    apply_bit_assignment(model, BitAssignment({n: (2, 4, 8)[i % 3] for i, n in enumerate(names)}))
    x, lengths = torch.randn(2, 7, 6), torch.tensor([7, 5])
    with torch.inference_mode():
        chained = x
        for _, run in stages:
            chained = run(chained, lengths)
        assert torch.equal(chained, model(x, lengths))
