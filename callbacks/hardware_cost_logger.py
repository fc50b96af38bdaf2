"""Logs the hardware cost of the model's current bit assignment to TensorBoard.

After each validation, every platform prices ``pl_module.workload()`` at
``pl_module.bit_assignment``; the totals go to TensorBoard as scalars
``hardware/<platform>/<metric>`` and the per-layer table as text
``hardware/<platform>``. A float model (empty assignment) logs nothing; a
platform that cannot run the assignment logs its violations as text only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_warn
from typing_extensions import override

from mohaq.hardware.base import CostModel, CostModelError
from mohaq.hardware.platform import load_platform
from mohaq.hardware.report import platform_report

DEFAULT_LOGGED_PLATFORMS: tuple[str, ...] = ("silago", "bitfusion")


class HardwareCostLogger(Callback):
    """Logs cost metrics of the current bit assignment on several platforms.

    Args:
        platforms: platform names or platform YAML paths (see
            ``mohaq.hardware.load_platform``); default ``["silago", "bitfusion"]``.

    Raises:
        ValueError: ``platforms`` is empty or repeats a name.
        mohaq.hardware.PlatformError: an unknown platform (the message lists the
            shipped platforms and registered cost models).
    """

    def __init__(self, platforms: list[str] | None = None) -> None:
        names = list(DEFAULT_LOGGED_PLATFORMS if platforms is None else platforms)
        if not names:
            raise ValueError(
                "HardwareCostLogger: platforms must name at least one platform, got []"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"HardwareCostLogger: platforms repeat a name: {names}")
        self.platforms = names
        self.cost_models: list[CostModel] = [load_platform(name) for name in names]

    def _experiments(self, trainer: pl.Trainer) -> list[Any]:
        return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        missing = [attr for attr in ("workload", "bit_assignment") if not hasattr(pl_module, attr)]
        if missing:
            raise AttributeError(
                f"HardwareCostLogger needs a LightningModule with workload() and bit_assignment; "
                f"{type(pl_module).__name__} lacks {missing}"
            )
        if not any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers):
            rank_zero_warn(
                "HardwareCostLogger logs to TensorBoard only; the trainer has no TensorBoardLogger"
            )

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        experiments = self._experiments(trainer)
        if not experiments:
            return
        assignment = pl_module.bit_assignment
        if assignment is None or len(assignment) == 0:
            return  # float model: no platform here runs it
        workload = pl_module.workload()
        step = trainer.global_step
        for model in self.cost_models:
            try:
                result = platform_report(workload, assignment, model)
            except CostModelError as exc:
                result = [str(exc)]
            tag = f"hardware/{model.name}"
            for experiment in experiments:
                if isinstance(result, Sequence):
                    text = "Infeasible on this platform:\n\n" + "\n".join(f"- {p}" for p in result)
                    experiment.add_text(tag, text, global_step=step)
                    continue
                for metric, value in result.totals.items():
                    experiment.add_scalar(f"{tag}/{metric}", float(value), global_step=step)
                experiment.add_text(tag, result.to_markdown(), global_step=step)
