"""The typed settings of MOHAQ's beacon-based stage (``mohaq beacons``).

The stage continues a stored search: its problem (platform, objectives,
constraints, bit choices) comes from the search's run directory
(:func:`~mohaq.search.settings.continue_settings`); these are the knobs of
the beacons themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mohaq.beacons.selection import BeaconConfigError

#: The divergence bound of retrainings (mohaq.callbacks.divergence's default,
#: repeated so that reading the settings does not import Lightning).
DEFAULT_MAX_LOSS_RATIO = 100.0

#: MOHAQ's distance threshold was 5 or 6 precision levels.
DEFAULT_DISTANCE_THRESHOLD = 5.0
#: Default QAT epochs per beacon: 3 keeps the quickstart short (MOHAQ used 20).
DEFAULT_RETRAIN_EPOCHS = 3


@dataclass
class BeaconSettings:
    """Knobs of the beacon-based stage.

    Args:
        num_beacons: beacons selected from the inference-only evaluations.
        distance_threshold: L1 distance in precision levels (2, 4, 8, 16 bits ->
            2..5) over the weights within which a candidate is scored with a
            beacon's weights (MOHAQ: 5 or 6).
        beacon_ranks: beacons come from the first ranks of non-dominated sorting.
        beacon_separation: minimum distance between beacons (default: distance_threshold).
        promising_max_error: a candidate above this error never gets a beacon.
        promising_limits: cost bounds a candidate must meet to get a beacon, e.g. {min_speedup: 4}.
        max_new_beacons: beacons the continued search may add.
        retrain_epochs: QAT epochs per beacon (MOHAQ: 20 on TIMIT).
        retrain_lr: QAT learning rate (default: a tenth of the model's).
        devices: beacons retrained at once, one process each (default: one per GPU, or 1).
        ddp_devices: devices of one beacon's DDP retraining (its own command line).
        accelerator: Trainer accelerator of the retrainings.
        max_attempts: retraining attempts per beacon before it is recorded as failed.
        retrain_timeout_s: kill a retraining after this many seconds (recorded as failed).
        retrain_trainer_kwargs: extra Trainer arguments of the retrainings.
        retrain_in_process: retrain in the search process, one after another (debugging).
        retrain_max_loss_ratio: a retraining whose training loss exceeds this multiple of
            its start has diverged and fails (non-finite losses and gradients always do);
            null: only non-finite values.
    """

    num_beacons: int = 4
    distance_threshold: float = DEFAULT_DISTANCE_THRESHOLD
    beacon_ranks: int = 2
    beacon_separation: float | None = None
    promising_max_error: float | None = None
    promising_limits: dict[str, float] = field(default_factory=dict)
    max_new_beacons: int = 2
    retrain_epochs: int = DEFAULT_RETRAIN_EPOCHS
    retrain_lr: float | None = None
    devices: int | None = None
    ddp_devices: int = 1
    accelerator: str = "auto"
    max_attempts: int = 2
    retrain_timeout_s: float | None = None
    retrain_trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    retrain_in_process: bool = False
    retrain_max_loss_ratio: float | None = DEFAULT_MAX_LOSS_RATIO

    def __post_init__(self) -> None:
        checks = {
            "num_beacons": self.num_beacons >= 0,
            "distance_threshold": self.distance_threshold >= 0,
            "beacon_ranks": self.beacon_ranks >= 1,
            "max_new_beacons": self.max_new_beacons >= 0,
            "retrain_epochs": self.retrain_epochs >= 1,
            "ddp_devices": self.ddp_devices >= 1,
            "max_attempts": self.max_attempts >= 1,
            "beacon_separation": self.beacon_separation is None or self.beacon_separation >= 0,
            "retrain_lr": self.retrain_lr is None or self.retrain_lr > 0,
            "devices": self.devices is None or self.devices >= 1,
            "retrain_timeout_s": self.retrain_timeout_s is None or self.retrain_timeout_s > 0,
            "retrain_max_loss_ratio": self.retrain_max_loss_ratio is None
            or self.retrain_max_loss_ratio > 1,
        }
        allowed = {
            "num_beacons": ">= 0",
            "distance_threshold": ">= 0",
            "beacon_ranks": ">= 1",
            "max_new_beacons": ">= 0",
            "retrain_epochs": ">= 1",
            "ddp_devices": ">= 1",
            "max_attempts": ">= 1",
            "beacon_separation": ">= 0 or null",
            "retrain_lr": "> 0 or null",
            "devices": ">= 1 or null",
            "retrain_timeout_s": "> 0 or null",
            "retrain_max_loss_ratio": "> 1 or null",
        }
        for name, ok in checks.items():
            if not ok:
                raise BeaconConfigError(
                    f"{name} must be {allowed[name]}, got {getattr(self, name)!r}"
                )

    @property
    def separation(self) -> float:
        """Minimum distance between beacons."""
        return self.distance_threshold if self.beacon_separation is None else self.beacon_separation
