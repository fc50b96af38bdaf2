"""Fakes shared by the search tests: a 4-layer workload and an analytic cost model.

Imported by the other test files (pytest puts this folder on sys.path).
"""

from __future__ import annotations

from mohaq.hardware.base import CostModel, CostReport
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import QuantPoint, Workload


def fake_workload(layers: int = 4) -> Workload:
    points = []
    for i in range(layers):
        params = 1000 * (i + 1)
        points.append(QuantPoint(f"l{i}.input", "activation", f"l{i}"))
        points.append(
            QuantPoint(
                f"l{i}.weight",
                "weight",
                f"l{i}",
                params=params,
                macs_per_frame=params,
                in_features=10,
                out_features=100 * (i + 1),
                input_point=f"l{i}.input",
            )
        )
    return Workload(tuple(points), fixed_params=100, fixed_bits=16)


class FakeCostModel(CostModel):
    """speedup = MAC-weighted mean of 16 / max(w, a); memory_mb = weight bits x
    params / 8 / 2**20 scaled x 1000; energy = sum of MACs x w x a / 1000."""

    name = "fake"
    metric_names = ("speedup", "memory_mb", "energy")
    higher_is_better = {"speedup": True}

    def __init__(
        self,
        allowed_bits: tuple[int, ...] | None = (2, 4, 8, 16),
        shared_layer_precision: bool = False,
        memory_capacity_bytes: int | None = None,
    ) -> None:
        super().__init__(
            allowed_bits=allowed_bits,
            shared_layer_precision=shared_layer_precision,
            memory_capacity_bytes=memory_capacity_bytes,
        )

    def metrics(self, workload: Workload, assignment: BitAssignment) -> CostReport:
        macs = speed = memory = energy = 0.0
        for point in workload.matmul_weights():
            w = assignment.bits[point.name]
            a = assignment.bits[point.input_point]
            macs += point.macs_per_frame
            speed += point.macs_per_frame * 16 / max(w, a)
            memory += point.params * w
            energy += point.macs_per_frame * w * a / 1000
        memory_mb = 1000 * (memory + workload.fixed_params * workload.fixed_bits) / 8 / 2**20
        totals = {"speedup": speed / macs, "memory_mb": memory_mb, "energy": energy}
        return CostReport(self.name, totals)


def test_fake_cost_model_is_monotone() -> None:
    workload = fake_workload()
    model = FakeCostModel()
    low = model.metrics(workload, BitAssignment.uniform(workload.names, 4)).totals
    high = model.metrics(workload, BitAssignment.uniform(workload.names, 16)).totals
    assert low["speedup"] == 4.0 and high["speedup"] == 1.0
    assert low["memory_mb"] < high["memory_mb"]


def fake_search(
    run_dir,
    *,
    evaluator=None,
    evaluator_factory=None,
    workload=None,
    cost_model=None,
    callbacks=None,
    resume=False,
    seeds=(),
    truncate_damaged=False,
    **settings,
):
    """A search on the fake workload and cost model (analytic evaluator by default);
    ``settings`` are SearchSettings fields (budget 30, TwoPointsDE-LHS by default)."""
    from mohaq.search import AnalyticEvaluator, SearchSettings, run_search
    from mohaq.search.run import default_callbacks

    # Pinned: these tests check the loop's machinery against one algorithm's
    # behaviour (e.g. every proposal repaired); the default, the surrogate,
    # measures infeasible probes by design and has its own tests.
    values = {
        "platform": "fake", "budget": 30, "run_dir": str(run_dir),
        "algorithm": "TwoPointsDE-LHS", **settings,
    }  # fmt: skip
    if evaluator is None and evaluator_factory is None:
        evaluator = AnalyticEvaluator()
    return run_search(
        SearchSettings(**values),
        workload=workload or fake_workload(),
        evaluator=evaluator,
        evaluator_factory=evaluator_factory,
        cost_model=cost_model or FakeCostModel(),
        resume=resume,
        callbacks=default_callbacks(progress=False, tensorboard=False)
        if callbacks is None
        else callbacks,
        seeds=seeds,
        truncate_damaged=truncate_damaged,
    )
