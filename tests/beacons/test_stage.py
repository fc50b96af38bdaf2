"""The beacon stage end to end: with analytic fakes (selection, beacon-aware
records, retries, failures, resume, report), and once with a tiny real SRU
(QAT retraining through Lightning, PTQ on the beacon's weights)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
from test_search_fakes import FakeCostModel, fake_search, fake_workload
from tiny_data import TinyDataModule

from mohaq.beacons import BeaconParts, BeaconSettings, run_beacon_stage
from mohaq.beacons.retraining import RetrainJob, RetrainSpec
from mohaq.beacons.selection import beacon_distance, weight_point_names
from mohaq.beacons.stage import BEACON_SEARCH_DIR
from mohaq.beacons.store import DONE, FAILED, BeaconStore
from mohaq.quant.assignment import BitAssignment
from mohaq.search import SearchConfigError
from mohaq.search.evaluators import AnalyticEvaluator, PTQEvaluator
from mohaq.search.records import EvaluationLog
from mohaq.search.run import default_callbacks
from mohaq.system import AcousticSystem

SPEC = RetrainSpec("float.ckpt", "mohaq.system.AcousticSystem", {}, "tiny_data.TinyDataModule")


class RetrainedEvaluator(AnalyticEvaluator):
    """What a beacon's retrained weights give: 30% less error than PTQ on the
    float weights (the analytic error is 0.5 * mean(1 / bits))."""

    def __init__(self, path: Path) -> None:
        super().__init__(scale=0.35)
        self.path = path


def fake_retrain(job: RetrainJob) -> dict[str, float]:
    job.weights_path.write_text("weights")
    return {"val/per": 0.2}


def fails_once(job: RetrainJob) -> dict[str, float]:
    if job.attempt == 1:
        raise RuntimeError("CUDA out of memory (simulated)")
    return fake_retrain(job)


def broken_retrain(job: RetrainJob) -> dict[str, float]:
    raise RuntimeError("always broken")


def inference_run(run_dir: Path) -> list:
    fake_search(
        run_dir, evaluator=AnalyticEvaluator(scale=0.5), constraints={"max_error": 0.3}, budget=40
    )
    return EvaluationLog(run_dir).load()


def beacon_stage(
    run_dir: Path, *, retrain_fn=fake_retrain, resume=False, search_overrides=None, **beacon
):
    settings = BeaconSettings(
        **{"num_beacons": 3, "max_new_beacons": 1, "retrain_in_process": True, **beacon}
    )
    parts = BeaconParts(
        workload=fake_workload(), cost_model=FakeCostModel(),
        base_evaluator=AnalyticEvaluator(scale=0.5), beacon_evaluator=RetrainedEvaluator,
        retrain_spec=SPEC, retrain_fn=retrain_fn,
    )  # fmt: skip
    return run_beacon_stage(
        run_dir, settings, search_overrides={"budget": 30, **(search_overrides or {})},
        parts=parts, resume=resume, callbacks=default_callbacks(progress=False, tensorboard=False),
    )  # fmt: skip


def test_beacon_stage_scores_near_candidates_with_beacons(tmp_path: Path) -> None:
    inference = inference_run(tmp_path)
    log_before = (tmp_path / "evaluations.jsonl").read_bytes()
    result = beacon_stage(tmp_path)
    weights = weight_point_names(fake_workload())
    beacons = {b.id: b for b in result.beacons}
    selected = [b for b in beacons.values() if b.origin == "selected"]
    assert 1 <= len(selected) <= 3 and all(b.status == DONE for b in beacons.values())
    assert len([b for b in beacons.values() if b.origin == "new"]) <= 1
    for a in selected:  # spread apart by at least the distance threshold
        for b in selected:
            assert a is b or beacon_distance(a.bits, b.bits, weights) >= 5
    # The inference-only log is untouched; the stage has its own.
    assert (tmp_path / "evaluations.jsonl").read_bytes() == log_before
    records = EvaluationLog(tmp_path / BEACON_SEARCH_DIR).load()
    assert len(records) == 30
    by_bits = {tuple(sorted(r.bits.items())): r for r in inference}
    used = 0
    for record in records:
        ptq = 0.5 * sum(1 / b for b in record.bits.values()) / len(record.bits)
        assert record.extras["beacon_inference_error"] == pytest.approx(ptq)
        if record.evaluator.startswith("beacon:"):
            used += 1
            beacon = beacons[record.evaluator.split(":", 1)[1]]
            distance = beacon_distance(record.bits, beacon.bits, weights)
            assert record.extras["beacon_distance"] == pytest.approx(distance) and distance <= 5
            assert record.error == pytest.approx(min(ptq, 0.7 * ptq))
            assert record.error == pytest.approx(record.extras["beacon_error"])
        else:
            assert record.evaluator == "ptq" and record.error == pytest.approx(ptq)
            assert "beacon_error" not in record.extras
        known = by_bits.get(tuple(sorted(record.bits.items())))
        if known is not None:
            assert record.extras["beacon_inference_error"] == pytest.approx(known.error)
    assert used >= 3
    # The seeds are the inference-only front, evaluated right after the baselines.
    front = {tuple(sorted(r.bits.items())) for r in result.comparison.inference_front}
    seeds = [r for r in records if r.origin == "seed"]
    assert [r.index for r in seeds] == list(range(4, 4 + len(seeds)))
    assert {tuple(sorted(r.bits.items())) for r in records[: 4 + len(seeds)]} >= front
    # Report: both fronts, matched-cost reduction, hypervolumes.
    comparison = result.comparison
    assert comparison.beacon_hypervolume > comparison.inference_hypervolume
    assert comparison.max_reduction is not None and comparison.max_reduction > 0
    for row in comparison.rows:
        assert row.beacon is not None  # the seeds make the beacon front cover every cost
        assert row.beacon.objectives["speedup"] >= row.inference.objectives["speedup"]
        assert row.beacon.error <= row.inference.error + 1e-12
    summary = (tmp_path / "beacon_summary.md").read_text()
    assert "Both fronts at matched cost" in summary and "reduction (pp)" in summary
    assert "hypervolume" in summary and "b000" in summary
    assert (tmp_path / "fronts.png").stat().st_size > 0
    with open(tmp_path / BEACON_SEARCH_DIR / "pareto.csv") as stream:
        assert list(csv.DictReader(stream))


def test_failed_retraining_is_retried_and_never_stops_the_search(tmp_path: Path) -> None:
    inference_run(tmp_path)
    result = beacon_stage(tmp_path, retrain_fn=fails_once, max_new_beacons=0)
    assert result.beacons and all(b.status == DONE and b.attempts == 2 for b in result.beacons)
    assert all("CUDA out of memory" in b.errors[0] for b in result.beacons)

    other = tmp_path / "other"
    inference_run(other)
    broken = beacon_stage(other, retrain_fn=broken_retrain, max_attempts=2)
    assert broken.beacons and all(b.status == FAILED and b.attempts == 2 for b in broken.beacons)
    assert len(broken.search.records) == 30
    assert all(r.evaluator == "ptq" for r in broken.search.records)
    assert "always broken" in (other / "beacon_summary.md").read_text()


def test_resume_reuses_finished_beacons(tmp_path: Path) -> None:
    inference_run(tmp_path)
    first = beacon_stage(tmp_path, search_overrides={"budget": 20}, max_new_beacons=0)
    attempts = {b.id: b.attempts for b in first.beacons}
    resumed = beacon_stage(
        tmp_path,
        search_overrides={"budget": 26},
        max_new_beacons=0,
        resume=True,
        retrain_fn=broken_retrain,
    )
    assert {b.id: b.attempts for b in resumed.beacons} == attempts
    assert all(b.status == DONE for b in resumed.beacons)
    assert [r.index for r in resumed.search.records] == list(range(26))
    assert resumed.search.records[:20] == first.search.records


def test_stage_refuses_a_missing_run_or_other_objectives(tmp_path: Path) -> None:
    from mohaq.beacons.selection import BeaconConfigError

    with pytest.raises(BeaconConfigError, match="run the inference-only search"):
        beacon_stage(tmp_path)
    inference_run(tmp_path)
    with pytest.raises(
        SearchConfigError,
        match=r"objectives: search \['error', 'speedup'\], given \['error', 'energy'\]",
    ):
        beacon_stage(tmp_path, search_overrides={"objectives": ["error", "energy"]})
    with pytest.raises(SearchConfigError, match=r"constraints: search \{'max_error': 0.3\}"):
        beacon_stage(tmp_path, search_overrides={"constraints": {"max_error": 0.5}})
    # Values that agree with the search, and run settings, are accepted.
    result = beacon_stage(
        tmp_path, search_overrides={"objectives": ["error", "speedup"], "seed": 3, "budget": 8}
    )
    assert len(result.search.records) == 8


def test_real_qat_beacon_on_a_tiny_sru(tmp_path: Path) -> None:
    pl.seed_everything(0)
    data = TinyDataModule()
    system = AcousticSystem(
        num_features=5, num_classes=6, cell="sru", hidden_size=16, num_layers=2,
        projection_size=8, dropout=0.0, learning_rate=0.01,
        weight_clipping="minmax", activation_clipping="minmax",  # fast: plumbing, not MMSE
    )  # fmt: skip
    trainer = pl.Trainer(
        default_root_dir=str(tmp_path), accelerator="cpu", logger=False, max_epochs=2,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(system, datamodule=data)
    checkpoint = tmp_path / "float.ckpt"
    trainer.save_checkpoint(checkpoint)
    system.eval()
    run_dir = tmp_path / "search"
    fake_search(
        run_dir, workload=system.workload(), evaluator=PTQEvaluator(system, data, batch_size=4),
        budget=8, batch_size=4, rescore_test=False,
    )  # fmt: skip
    settings = BeaconSettings(
        num_beacons=1, retrain_epochs=1, retrain_lr=0.003, accelerator="cpu",
        retrain_in_process=True, max_new_beacons=0, retrain_trainer_kwargs={"limit_val_batches": 1},
    )  # fmt: skip
    result = run_beacon_stage(
        run_dir, settings, search_overrides={"budget": 8}, system=system, datamodule=data,
        checkpoint=checkpoint, parts=BeaconParts(cost_model=FakeCostModel()),
        callbacks=default_callbacks(progress=False, tensorboard=False),
    )  # fmt: skip
    (beacon,) = result.beacons
    assert beacon.status == DONE and beacon.metrics["learning_rate"] == pytest.approx(0.003)
    store = BeaconStore(run_dir)
    restored = AcousticSystem.load_from_checkpoint(store.weights_path(beacon.id))
    assert restored.bit_assignment == BitAssignment.from_dict(beacon.bits)
    scored = [r for r in result.search.records if r.evaluator == f"beacon:{beacon.id}"]
    assert scored  # at least the beacon's own assignment (a seed) used its weights
    for record in scored:
        assert record.error == pytest.approx(
            min(record.extras["beacon_inference_error"], record.extras["beacon_error"])
        )
    assert (run_dir / "fronts.png").exists() and (run_dir / "beacon_summary.md").exists()
