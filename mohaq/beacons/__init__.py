"""MOHAQ's beacon-based stage: a few front solutions retrained with QAT tell
the search what retraining would do to their neighbours.

Selection (:mod:`~mohaq.beacons.selection`), the store of retrained beacons
(:mod:`~mohaq.beacons.store`), retraining processes
(:mod:`~mohaq.beacons.retraining`), the beacon-aware evaluator
(:mod:`~mohaq.beacons.evaluator`), the stage (:mod:`~mohaq.beacons.stage`)
and its report (:mod:`~mohaq.beacons.report`), built on ``mohaq.search``.
"""

from mohaq.beacons.selection import BeaconConfigError
from mohaq.beacons.settings import BeaconSettings
from mohaq.beacons.stage import (
    BeaconParts,
    BeaconSearchResult,
    BeaconsFailedError,
    beacon_search_settings,
    run_beacon_stage,
)

__all__ = [
    "BeaconConfigError",
    "BeaconParts",
    "BeaconSearchResult",
    "BeaconSettings",
    "BeaconsFailedError",
    "beacon_search_settings",
    "run_beacon_stage",
]
