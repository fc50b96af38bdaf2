"""The beacon-aware evaluator of MOHAQ's beacon-based search.

For a candidate assignment:

1. its inference-only error (PTQ on the float weights) is taken from the
   inference-only log, or measured;
2. if the candidate is promising (error and cost within the thresholds) and a
   finished beacon lies within ``distance_threshold`` (L1 over weight
   precision levels, :mod:`mohaq.search.beacons`), the candidate is applied by
   PTQ to the nearest beacon's retrained weights, and the reported error is
   ``min(that, inference-only error)`` (as MOHAQ);
3. a promising candidate with no beacon near enough may become a new beacon
   (at most ``max_new_beacons``), retrained at once; if its retraining fails,
   the candidate keeps its inference-only error and the search goes on.

Each result names its evaluator, ``"beacon:<id>"`` or ``"ptq"``, and its
extras hold ``beacon_inference_error``, and when a beacon was used
``beacon_error`` and ``beacon_distance``; the search stores them in the record
(``evaluator`` and ``extras``).

The evaluator runs in the search process (the search's ``workers=1``): the
retrainings are what runs in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mohaq.beacons.selection import BeaconConfigError, nearest
from mohaq.beacons.settings import DEFAULT_DISTANCE_THRESHOLD
from mohaq.beacons.store import DONE, Beacon, BeaconStore
from mohaq.quant.assignment import BitAssignment
from mohaq.search.evaluators import (
    OPTIMIZATION,
    EvaluationResult,
    Evaluator,
    PTQEvaluator,
    check_split,
)
from mohaq.search.records import EvaluationRecord

BitsKey = tuple[tuple[str, int], ...]


def bits_key(bits: Mapping[str, int]) -> BitsKey:
    return tuple(sorted((str(k), int(v)) for k, v in bits.items()))


class BeaconWeightsPTQ:
    """Builds a PTQ evaluator on a beacon's retrained weights: the model is
    rebuilt from its hyperparameters, loaded from the beacon checkpoint, set
    back to float and calibrated on the optimization set, exactly as the
    inference-only stage treats the float checkpoint.

    Args:
        system_factory: returns a fresh model (e.g. ``AcousticSystem(**hparams)``).
        datamodule: the DataModule (shared with the inference-only evaluator).
        evaluator_kwargs: :class:`~mohaq.search.evaluators.PTQEvaluator` arguments.
    """

    def __init__(
        self, system_factory: Callable[[], Any], datamodule: Any, **evaluator_kwargs: Any
    ) -> None:
        self.system_factory = system_factory
        self.datamodule = datamodule
        self.evaluator_kwargs = evaluator_kwargs

    def __call__(self, weights_path: Path) -> PTQEvaluator:
        from mohaq.checkpoints import load_model_weights

        system = self.system_factory()
        load_model_weights(system, weights_path)
        system.apply_bit_assignment(BitAssignment())  # float weights, then PTQ per candidate
        return PTQEvaluator(system, self.datamodule, **self.evaluator_kwargs)


class BeaconAwareEvaluator:
    """Scores candidates with the nearest retrained beacon (see the module docstring).

    Args:
        base: the inference-only evaluator (PTQ on the float weights).
        beacon_evaluator: weights path -> an evaluator on those weights
            (:class:`BeaconWeightsPTQ`).
        store: the run's beacons.
        weight_points: coordinates of the distance.
        distance_threshold: a beacon is used up to this distance (inclusive).
        is_promising: ``(assignment, inference-only error) -> bool``; None: all are.
        known_errors: inference-only errors already measured (bits key -> error).
        retrain: retrains the given beacon ids now (a
            :meth:`~mohaq.beacons.retraining.RetrainingRunner.run`); None: no new beacons.
        max_new_beacons: beacons this evaluator may create.
        genes_of: assignment -> gene vector, stored with a new beacon.
        method: the PTQ method of ``base`` and of the beacon evaluators
            (:meth:`mohaq.quant.ptq.PTQConfig.tag`), stored in every record.

    Raises:
        BeaconConfigError: for a negative threshold or count.
    """

    def __init__(
        self,
        *,
        base: Evaluator,
        beacon_evaluator: Callable[[Path], Evaluator],
        store: BeaconStore,
        weight_points: Sequence[str],
        distance_threshold: float = DEFAULT_DISTANCE_THRESHOLD,
        is_promising: Callable[[BitAssignment, float], bool] | None = None,
        known_errors: Mapping[BitsKey, float] | None = None,
        retrain: Callable[[Sequence[str]], Mapping[str, Beacon]] | None = None,
        max_new_beacons: int = 0,
        genes_of: Callable[[BitAssignment], Sequence[int]] | None = None,
        method: str = "",
    ) -> None:
        if distance_threshold < 0:
            raise BeaconConfigError(f"distance_threshold must be >= 0, got {distance_threshold}")
        if max_new_beacons < 0:
            raise BeaconConfigError(f"max_new_beacons must be >= 0, got {max_new_beacons}")
        self.base = base
        self.beacon_evaluator = beacon_evaluator
        self.store = store
        self.weight_points = tuple(weight_points)
        self.distance_threshold = float(distance_threshold)
        self.is_promising = is_promising
        self.known_errors: dict[BitsKey, float] = dict(known_errors or {})
        self.retrain = retrain
        self.max_new_beacons = max_new_beacons
        self.genes_of = genes_of
        self.method = method
        self.created: list[str] = [b.id for b in store.beacons() if b.origin == "new"]
        self.name = "beacon-aware"
        self._evaluators: dict[str, Evaluator] = {}
        self._beacons: list[Beacon] | None = None
        self._decisions: dict[BitsKey, tuple[str, float] | None] = {}

    # -- beacons --------------------------------------------------------------------------
    def beacons(self) -> list[Beacon]:
        """Finished beacons with weights (cached; refreshed when one is added)."""
        if self._beacons is None:
            self._beacons = self.store.usable()
        return self._beacons

    def _evaluator_for(self, beacon_id: str) -> Evaluator:
        if beacon_id not in self._evaluators:
            self._evaluators[beacon_id] = self.beacon_evaluator(self.store.weights_path(beacon_id))
        return self._evaluators[beacon_id]

    def _nearest(self, bits: Mapping[str, int]) -> tuple[str, float] | None:
        found = nearest(bits, [(b.id, b.bits) for b in self.beacons()], self.weight_points)
        return found if found is not None and found[1] <= self.distance_threshold else None

    def _new_beacon(self, assignment: BitAssignment, error: float) -> tuple[str, float] | None:
        if self.retrain is None or len(self.created) >= self.max_new_beacons:
            return None
        genes = list(self.genes_of(assignment)) if self.genes_of is not None else []
        beacon = self.store.add(assignment.to_dict(), genes=genes, origin="new", source_error=error)
        self.created.append(beacon.id)
        result = self.retrain([beacon.id]).get(beacon.id)
        self._beacons = None
        if result is None or result.status != DONE:
            return None
        return beacon.id, 0.0

    def remember(self, record: EvaluationRecord) -> None:
        """Takes the beacon decision of a record evaluated before a resume, so the
        test re-score uses the beacon the record was scored with (a beacon created
        later may be nearer)."""
        beacon_id = (
            record.evaluator.split(":", 1)[1] if record.evaluator.startswith("beacon:") else None
        )
        self._decisions[bits_key(record.bits)] = (
            None
            if beacon_id is None
            else (beacon_id, float(record.extras.get("beacon_distance", 0.0)))
        )

    # -- scoring -------------------------------------------------------------------------
    def _inference_error(self, assignment: BitAssignment, split: str) -> float:
        key = bits_key(assignment.bits)
        if split == OPTIMIZATION and key in self.known_errors:
            return self.known_errors[key]
        error = float(self.base.evaluate(assignment, split).error)
        if split == OPTIMIZATION:
            self.known_errors[key] = error
        return error

    def float_error(self, split: str = OPTIMIZATION) -> float:
        """The float model's error (no quantization), the reference of error gains."""
        return float(self.base.evaluate(BitAssignment(), split).error)

    def evaluate(
        self,
        assignment: BitAssignment,
        split: str = OPTIMIZATION,
        *,
        stop_above: float | None = None,
    ) -> EvaluationResult:
        """The beacon-aware error (always on the whole set: ``stop_above`` is ignored)."""
        check_split(split)
        key = bits_key(assignment.bits)
        inference = self._inference_error(assignment, split)
        extras = {"beacon_inference_error": inference}
        if split == OPTIMIZATION:
            promising = self.is_promising is None or self.is_promising(assignment, inference)
            decision = self._nearest(assignment.bits) if promising else None
            if promising and decision is None:
                decision = self._new_beacon(assignment, inference)
            self._decisions[key] = decision
        else:
            # The test re-score uses the beacon chosen on the optimization set.
            decision = (
                self._decisions[key] if key in self._decisions else self._nearest(assignment.bits)
            )
        if decision is None:
            return EvaluationResult(inference, evaluator="ptq", extras=extras, method=self.method)
        beacon_id, distance = decision
        beacon_error = float(self._evaluator_for(beacon_id).evaluate(assignment, split).error)
        extras.update({"beacon_error": beacon_error, "beacon_distance": distance})
        return EvaluationResult(
            min(inference, beacon_error),
            evaluator=f"beacon:{beacon_id}",
            extras=extras,
            method=self.method,
        )
