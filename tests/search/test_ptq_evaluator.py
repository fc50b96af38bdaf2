"""PTQEvaluator on a tiny frame-level model with real FakeQuantizers and the
tiny in-memory DataModule (the real AcousticSystem is tested by the lead's
integration test once mohaq.models lands)."""

import pytest
import torch
from test_search_fakes import fake_search
from tiny_data import TinyDataModule
from torch import nn

from mohaq.quant.apply import apply_bit_assignment
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import QuantPoint, Workload
from mohaq.quant.ptq import PTQConfig
from mohaq.quant.quantizer import FakeQuantizer
from mohaq.search.evaluators import PTQEvaluator


class TinySystem(nn.Module):
    """Two per-frame linear layers with weight and input quantizers."""

    def __init__(self, features: int = 5, hidden: int = 16, classes: int = 6) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(features, hidden), nn.Linear(hidden, classes)])
        self.inputs = nn.ModuleList(
            [FakeQuantizer(f"l{i}.input", role="activation") for i in range(2)]
        )
        self.weights = nn.ModuleList(
            [FakeQuantizer(f"l{i}.weight", role="weight") for i in range(2)]
        )
        self.register_buffer("scoring_map", torch.arange(classes), persistent=False)

    def workload(self) -> Workload:
        points = []
        for i, layer in enumerate(self.layers):
            n = layer.weight.numel()
            points += [
                QuantPoint(f"l{i}.input", "activation", f"l{i}"),
                QuantPoint(
                    f"l{i}.weight",
                    "weight",
                    f"l{i}",
                    params=n,
                    macs_per_frame=n,
                    in_features=layer.in_features,
                    out_features=layer.out_features,
                    input_point=f"l{i}.input",
                ),
            ]
        return Workload(tuple(points))

    def apply_bit_assignment(self, assignment: BitAssignment, fixed_bits: int | None = 16) -> None:
        apply_bit_assignment(self, assignment, fixed_bits=fixed_bits)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = features
        for i, layer in enumerate(self.layers):
            x = nn.functional.linear(self.inputs[i](x), self.weights[i](layer.weight), layer.bias)
            if i == 0:
                x = torch.relu(x)
        return x


@pytest.fixture(scope="module")
def trained() -> tuple[TinySystem, TinyDataModule]:
    torch.manual_seed(0)
    data, system = TinyDataModule(), TinySystem()
    optimizer = torch.optim.Adam(system.parameters(), lr=0.02)
    for _ in range(15):
        for batch in data.train_dataloader():
            logits = system(batch.features, batch.lengths)
            loss = nn.functional.cross_entropy(
                logits.transpose(1, 2), batch.targets, ignore_index=-100
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return system, data


def test_ptq_error_grows_at_low_bits_and_batching_is_exact(trained) -> None:
    system, data = trained
    evaluator = PTQEvaluator(system, data, batch_size=4, device="cpu")
    single = PTQEvaluator(system, data, batch_size=1, device="cpu")
    names = system.workload().names
    errors = {b: evaluator.evaluate(BitAssignment.uniform(names, b)).error for b in (16, 8, 2)}
    float_error = evaluator.evaluate(BitAssignment({})).error
    assert errors[16] == pytest.approx(float_error, abs=0.02)
    assert errors[2] > errors[16] + 0.05
    assert single.evaluate(BitAssignment.uniform(names, 8)).error == pytest.approx(errors[8])
    assert evaluator.evaluate(BitAssignment.uniform(names, 16), "test").error >= 0.0
    assert evaluator.evaluate(BitAssignment.uniform(names, 8)).evaluator == "ptq"


def test_search_with_ptq_evaluator(trained, tmp_path) -> None:
    system, data = trained
    evaluator = PTQEvaluator(system, data, batch_size=4, device="cpu")
    result = fake_search(
        tmp_path, workload=system.workload(), evaluator=evaluator, budget=12, batch_size=4
    )
    assert len(result.records) == 12 and all(r.evaluator == "ptq" for r in result.records)
    assert result.front and set(result.test_errors) == {r.index for r in result.front}


def test_ptq_config_is_applied_and_described(trained) -> None:
    system, data = trained
    config = PTQConfig(activation_statistic="pooled", adaround=True, adaround_iterations=20)
    evaluator = PTQEvaluator(
        system, data, batch_size=4, device="cpu", ptq=config, max_calibration_utterances=5
    )
    record = evaluator.describe()
    assert record["activation_statistic"] == "pooled" and record["adaround"] is True
    assert record["calibrated_utterances"] == 5  # max_calibration_utterances fills the gap
    assert system.inputs[1].statistic == "pooled"
    names = system.workload().names
    error = evaluator.evaluate(BitAssignment.uniform(names, 4)).error
    assert 0.0 <= error <= 1.0
    assert system.weights[0].learned_bits == (4,)
    assert evaluator.describe()["adaround_solutions"] == 2  # two weights, once each at 4 bits


def test_racing_stops_a_dominated_candidate_early_and_is_exact_otherwise(trained) -> None:
    from mohaq.search.evaluators import Racing

    system, data = trained
    racing = Racing(fractions=(0.25, 0.5), confidence=0.99)
    raced = PTQEvaluator(system, data, batch_size=4, device="cpu", racing=racing)
    plain = PTQEvaluator(system, data, batch_size=4, device="cpu")
    names = system.workload().names
    two = BitAssignment.uniform(names, 2)
    full = plain.evaluate(two).error
    # Far above any possible error: never stopped, and the same PER as without racing.
    kept = raced.evaluate(two, stop_above=100.0)
    assert kept.fidelity == 1.0 and kept.error == pytest.approx(full)
    # Below any possible error: stopped at the first check, on a quarter of the set.
    stopped = raced.evaluate(two, stop_above=-1.0)
    assert stopped.fidelity == pytest.approx(3 / 12) and stopped.error > 0
    assert raced.evaluate(two).fidelity == 1.0  # no hint: the whole set
    with pytest.raises(Exception, match="racing fractions must be increasing"):
        Racing(fractions=(0.5, 0.25))


class StagedSystem(TinySystem):
    """TinySystem whose forward is also offered as two stages (one per layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage_runs = 0

    def _layer(self, i: int, x: torch.Tensor) -> torch.Tensor:
        self.stage_runs += 1
        layer = self.layers[i]
        x = nn.functional.linear(self.inputs[i](x), self.weights[i](layer.weight), layer.bias)
        return torch.relu(x) if i == 0 else x

    def stages(self):
        return [
            (("l0.input", "l0.weight"), lambda x, lengths: self._layer(0, x)),
            (("l1.input", "l1.weight"), lambda x, lengths: self._layer(1, x)),
        ]


def test_candidates_sharing_the_first_layers_bits_reuse_their_activations(trained) -> None:
    from mohaq.search.evaluators import Racing

    source, data = trained
    system = StagedSystem()
    system.load_state_dict(source.state_dict())
    racing = Racing(fractions=(0.5,), confidence=0.99)
    cached = PTQEvaluator(system, data, batch_size=4, device="cpu", racing=racing)
    plain = PTQEvaluator(system, data, batch_size=4, device="cpu", prefix_cache_mb=0)
    assert plain.prefix_cache is None and cached.prefix_cache is not None
    batches = len(cached._batches["optimization"])
    candidates = [
        {"l0.input": a, "l0.weight": w, "l1.input": b, "l1.weight": v}
        for a, w in ((8, 4), (2, 2))
        for b, v in ((8, 8), (4, 2), (2, 4))
    ]
    for bits in candidates + candidates[::-1]:
        assignment = BitAssignment(bits)
        expected = plain.evaluate(assignment).error
        system.stage_runs = 0
        assert cached.evaluate(assignment).error == expected  # exactly the uncached PER
        # raced (another batching of the set): exact as well
        assert cached.evaluate(assignment, stop_above=100.0).error == pytest.approx(expected)
        assert system.stage_runs >= batches  # the last layer always runs
    # 2 first-layer prefixes x batches computed once; everything else reused.
    assert cached.prefix_cache.misses == 2 * batches + 2 * len(
        cached._chunks[0] + cached._chunks[1]
    )
    assert cached.prefix_cache.hits > cached.prefix_cache.misses
    # A weight update (a training step) is a miss, and the result follows the new weight.
    assignment = BitAssignment(candidates[0])
    with torch.no_grad():
        system.layers[0].weight.mul_(0.5)
    misses = cached.prefix_cache.misses
    assert cached.evaluate(assignment).error == plain.evaluate(assignment).error
    assert cached.prefix_cache.misses == misses + batches


def test_search_model_scores_with_the_chosen_ptq_and_records_it(trained, tmp_path) -> None:
    import json

    from mohaq.hardware import load_platform
    from mohaq.search import SearchSettings
    from mohaq.search.run import search_model

    system, data = trained
    settings = SearchSettings(
        platform="size", objectives=["error", "memory_mb"], budget=5, batch_size=4,
        rescore_test=False, run_dir=str(tmp_path / "run"), ptq="best",
        ptq_overrides={"adaround_iterations": 10, "per_channel_weights": True},
    )  # fmt: skip
    result = search_model(
        settings, system=system, datamodule=data, checkpoint="float.ckpt", callbacks=[]
    )
    tag = "best+per_channel_weights=True+adaround_iterations=10"
    assert [r.method for r in result.records] == [tag] * 5
    assert (
        json.loads((tmp_path / "run" / "search_settings.json").read_text())["settings"]["ptq"]
        == "best"
    )
    assert system.weights[0].per_channel and system.weights[0].learned_bits
    # Memory counts one 16-bit scale per output channel: 16 + 6 channels, 44 bytes.
    workload = system.workload()
    uniform8 = next(r for r in result.records if r.label == "uniform-8")
    plain = load_platform("size").metrics(workload, BitAssignment.from_dict(uniform8.bits))
    assert uniform8.metrics["memory_bytes"] == plain.totals["memory_bytes"] + 44


def test_a_platform_without_per_channel_scales_is_refused_before_calibration(
    trained, tmp_path
) -> None:
    from mohaq.search import SearchConfigError, SearchSettings
    from mohaq.search.run import search_model

    system, data = trained
    settings = SearchSettings(
        platform="bitfusion-mohaq", budget=5, run_dir=str(tmp_path / "run"),
        ptq_overrides={"per_channel_weights": True},
    )  # fmt: skip
    with pytest.raises(
        SearchConfigError,
        match="ptq 'mohaq': platform 'bitfusion_mohaq' does not support per-channel weight scales",
    ):
        search_model(settings, system=system, datamodule=data, checkpoint="float.ckpt")
    assert not (tmp_path / "run").exists()
    allowed = settings.replace(
        platform_overrides={"per_channel_weights": True}, budget=4, rescore_test=False
    )
    result = search_model(
        allowed, system=system, datamodule=data, checkpoint="float.ckpt", callbacks=[]
    )
    assert {r.method for r in result.records} == {"mohaq+per_channel_weights=True"}
