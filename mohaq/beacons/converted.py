"""The beacon stage on a user's own LightningModule: :func:`converted_model_parts`.

An AcousticSystem is quantizable as built and scores phone error rate. A
user's model is converted by :func:`mohaq.convert.make_quantizable` and
scored by a torchmetrics metric (:mod:`mohaq.search.model_search`); its
beacon stage reuses what its search stored in the run directory
(``metric_settings.json``: metric, granularity, optimization split), so the
beacon-aware errors are comparable with the inference-only ones:

* the inference-only evaluator is the search's
  :class:`~mohaq.search.metric_evaluator.MetricEvaluator` on the converted
  float model;
* a beacon is retrained by the user's own ``training_step`` and
  ``configure_optimizers`` under the QAT callback, from the float checkpoint
  loaded into the model as written and then converted
  (:attr:`~mohaq.beacons.retraining.RetrainSpec.convert`);
* candidates near a beacon are scored by the same metric evaluator on the
  model rebuilt, converted and loaded with the beacon's weights
  (:class:`ConvertedBeaconWeights`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mohaq.beacons.retraining import RetrainSpec
from mohaq.beacons.selection import BeaconConfigError
from mohaq.beacons.settings import BeaconSettings
from mohaq.beacons.stage import BeaconParts
from mohaq.quant.assignment import BitAssignment
from mohaq.search.evaluators import import_object, import_path, init_arguments
from mohaq.search.metric_evaluator import MetricEvaluator
from mohaq.search.model_search import (
    METRIC_SETTINGS,
    MetricSettings,
    metric_evaluator_arguments,
    stored_metric_settings,
)
from mohaq.search.settings import SearchConfigError, SearchSettings


@dataclass
class ConvertedBeaconWeights:
    """Weights path -> a metric evaluator on the user's model with those weights.

    The model is rebuilt from its class and init arguments, converted as the
    search converted it (its retrained checkpoint holds the converted layers
    and their quantizer state), loaded, set back to float and calibrated, as
    the inference-only evaluator treats the float model.

    Args:
        module_class: import path of the LightningModule.
        module_arguments: its init arguments.
        convert: :func:`mohaq.convert.make_quantizable` options.
        datamodule: the DataModule (shared with the inference-only evaluator).
        evaluator_kwargs: :class:`MetricEvaluator` arguments.
    """

    module_class: str
    module_arguments: dict[str, Any]
    convert: dict[str, Any]
    datamodule: Any
    evaluator_kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, weights_path: Path) -> MetricEvaluator:
        from mohaq.checkpoints import load_model_weights
        from mohaq.convert import make_quantizable
        from mohaq.convert.model_api import apply_assignment

        module = import_object(self.module_class)(**self.module_arguments)
        module = make_quantizable(module, **self.convert)
        load_model_weights(module, weights_path)
        apply_assignment(module, BitAssignment())  # float weights, then PTQ per candidate
        return MetricEvaluator(module, self.datamodule, **self.evaluator_kwargs)


def _check_learning_rate(module: Any, beacon: BeaconSettings) -> None:
    """A QAT rate goes to the model as its ``learning_rate`` init argument, so a
    model without one cannot take ``retrain_lr``: refused before any work."""
    if beacon.retrain_lr is None:
        return
    parameters = inspect.signature(type(module).__init__).parameters
    if "learning_rate" not in parameters and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    ):
        raise BeaconConfigError(
            f"retrain_lr={beacon.retrain_lr:g}: {type(module).__name__} has no learning_rate "
            "init argument to take it; leave retrain_lr unset (the retraining then uses the "
            "model's own configure_optimizers) or give the model a learning_rate argument"
        )


def check_converted_stage(
    run_dir: str | Path,
    module: Any,
    beacon: BeaconSettings,
    metric_given: Mapping[str, Any] | None = None,
) -> MetricSettings:
    """The stored metric settings of the search in ``run_dir``, after the checks
    that need no data or weights (run before the model and data are loaded).

    Raises:
        BeaconConfigError: the search was not of a converted model, or
            ``retrain_lr`` cannot reach the model.
        SearchConfigError: a given metric setting that contradicts the search's.
    """
    metric = stored_metric_settings(run_dir)
    if metric is None:
        raise BeaconConfigError(
            f"{run_dir} holds no {METRIC_SETTINGS}: its search was not of a converted model "
            f"({type(module).__name__}); run `mohaq search` on this model into another run_dir"
        )
    stored = metric.to_dict()
    changed = {k: v for k, v in dict(metric_given or {}).items() if stored.get(k) != v}
    if changed:
        shown = "; ".join(
            f"{k}: given {v!r}, the search's {stored.get(k)!r}" for k, v in changed.items()
        )
        raise SearchConfigError(
            f"the beacon stage scores as the search in {run_dir} did; contradicting: {shown}"
        )
    _check_learning_rate(module, beacon)
    return metric


def converted_model_parts(
    run_dir: str | Path,
    *,
    module: Any,
    datamodule: Any,
    checkpoint: str | Path,
    settings: SearchSettings,
    beacon: BeaconSettings,
    metric_given: Mapping[str, Any] | None = None,
) -> BeaconParts:
    """The beacon stage's parts for a user's model, from its search in ``run_dir``.

    Args:
        run_dir: the inference-only search of the converted model.
        module: the float LightningModule as the user wrote it, with the
            checkpoint's weights loaded; converted in place.
        datamodule: its DataModule, prepared.
        checkpoint: the float checkpoint (retrainings start from it).
        settings: the continued search's settings (PTQ methods, seed).
        beacon: the beacon settings (retraining epochs, rate, devices).
        metric_given: metric settings given to the stage (e.g. from the
            search's config); each must equal the stored one.

    Raises:
        BeaconConfigError: the search in ``run_dir`` was not one of a converted
            model, or ``retrain_lr`` cannot reach the model.
        SearchConfigError: a given metric setting that contradicts the search's.
    """
    from mohaq.convert import make_quantizable
    from mohaq.convert.model_api import workload_of

    metric = check_converted_stage(run_dir, module, beacon, metric_given)
    module_arguments = init_arguments(module)
    convert = {"granularity": metric.granularity}
    evaluator_kwargs = metric_evaluator_arguments(settings, metric, datamodule)
    retrain_spec = RetrainSpec(
        checkpoint_path=str(checkpoint),
        system_class=import_path(module),
        system_hparams=module_arguments,
        datamodule_class=import_path(datamodule),
        datamodule_hparams=init_arguments(datamodule),
        epochs=beacon.retrain_epochs,
        learning_rate=beacon.retrain_lr,
        accelerator=beacon.accelerator,
        trainer_kwargs=dict(beacon.retrain_trainer_kwargs),
        max_loss_ratio=beacon.retrain_max_loss_ratio,
        convert=convert,
    )
    converted = make_quantizable(module, **convert)
    workload = workload_of(converted)
    return BeaconParts(
        workload=workload,
        base_evaluator=MetricEvaluator(
            converted, datamodule, workload=workload, **evaluator_kwargs
        ),
        beacon_evaluator=ConvertedBeaconWeights(
            import_path(module),
            module_arguments,
            convert,
            datamodule,
            {**evaluator_kwargs, "workload": workload},
        ),  # fmt: skip
        retrain_spec=retrain_spec,
    )


__all__ = ["ConvertedBeaconWeights", "check_converted_stage", "converted_model_parts"]
