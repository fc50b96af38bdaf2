"""``mohaq search`` on a user's own LightningModule (any model that is not one
of the toolkit's :class:`~mohaq.system.AcousticSystem`).

The model is converted by :func:`mohaq.convert.make_quantizable` (granularity
from :class:`MetricSettings`), its workload is read from the converted layers
(:func:`mohaq.convert.model_api.workload_of`), and candidates are scored by
:class:`~mohaq.search.metric_evaluator.MetricEvaluator` with the torchmetrics
metric the settings name. The metric settings are written to the run
directory (``metric_settings.json``); a resume must give the same ones
(:class:`~mohaq.search.records.ResumeError` otherwise).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from mohaq.search.callbacks import SearchCallback
from mohaq.search.executors import EvaluatorFactory, InProcess
from mohaq.search.metric_evaluator import MetricEvaluator, MetricEvaluatorSpec
from mohaq.search.run import SearchResult, run_search
from mohaq.search.settings import SearchConfigError, SearchSettings

#: Where a search of a converted model records its metric settings.
METRIC_SETTINGS = "metric_settings.json"


@dataclass
class MetricSettings:
    """How ``mohaq search`` converts and scores a model that is not an AcousticSystem.

    Args:
        metric: the torchmetrics metric scored on the optimization split, as an
            import path (e.g. torchmetrics.classification.MulticlassAccuracy);
            required for a model that is not an AcousticSystem (whose search
            scores phone error rate).
        metric_args: the metric's arguments, e.g. ``{average: micro}``;
            ``num_classes`` defaults to the DataModule's ``num_classes``.
        metric_higher_is_better: whether a larger metric value is better
            (default: the metric's own; the search minimizes 1 - accuracy).
        granularity: quantization points of the converted GRU/LSTM layers:
            layer (a weight and an input point per layer, MOHAQ) or operator
            (every operand inside the cells, Miccini et al.).
        validation_subset: items of the validation set optimized on when the
            DataModule has no ``optimization_dataloader()`` (drawn with ``seed``).
    """

    metric: str | None = None
    metric_args: dict[str, Any] = field(default_factory=dict)
    metric_higher_is_better: bool | None = None
    granularity: Literal["layer", "operator"] = "layer"
    validation_subset: int = 256

    def __post_init__(self) -> None:
        self.metric_args = dict(self.metric_args or {})
        if self.granularity not in ("layer", "operator"):
            raise SearchConfigError(
                f"granularity must be 'layer' or 'operator', got {self.granularity!r}"
            )
        if (
            isinstance(self.validation_subset, bool)
            or not isinstance(self.validation_subset, int)
            or self.validation_subset < 1
        ):
            raise SearchConfigError(
                f"validation_subset must be an integer >= 1, got {self.validation_subset!r}"
            )

    def given(self) -> bool:
        """Whether any field differs from its default (an AcousticSystem search takes none)."""
        return self != MetricSettings()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def metric_arguments(settings: MetricSettings, datamodule: Any) -> dict[str, Any]:
    """The metric's arguments: the settings', with ``num_classes`` from the
    DataModule when the metric takes it and the settings do not give it."""
    from mohaq.search.metric_evaluator import build_metric

    args = dict(settings.metric_args)
    if "num_classes" not in args and hasattr(datamodule, "num_classes"):
        from mohaq.search.evaluators import import_object

        try:
            cls = import_object(str(settings.metric))
            accepts = "num_classes" in inspect.signature(cls).parameters
        except (ImportError, AttributeError, TypeError, ValueError):
            build_metric(settings.metric)  # raises EvaluatorError naming the path
            accepts = False
        if accepts:
            args["num_classes"] = int(datamodule.num_classes)
    return args


def metric_evaluator_arguments(
    settings: SearchSettings, metric: MetricSettings, datamodule: Any
) -> dict[str, Any]:
    """:class:`MetricEvaluator` arguments of a search (and of the beacon stage
    that continues it: the same metric, optimization split and PTQ methods)."""
    return {
        "metric": metric.metric,
        "metric_args": metric_arguments(metric, datamodule),
        "higher_is_better": metric.metric_higher_is_better,
        "validation_subset": metric.validation_subset,
        "seed": settings.seed,
        # The search's PTQ methods (--ptq, --ptq_overrides), as for an AcousticSystem.
        "ptq": settings.ptq_options(),
    }


def stored_metric_settings(run_dir: str | Path) -> MetricSettings | None:
    """The metric settings a search of a converted model stored in ``run_dir``
    (None: the search was of an AcousticSystem, or there is none)."""
    path = Path(run_dir) / METRIC_SETTINGS
    if not path.is_file():
        return None
    return MetricSettings(**json.loads(path.read_text()))


def _check_stored(run_dir: Path, settings: MetricSettings, resume: bool) -> None:
    """Writes ``metric_settings.json``; on resume, refuses other metric settings
    (as :func:`~mohaq.search.records.store_run` refuses other search settings).

    Raises:
        ResumeError: a fresh run into a directory with evaluations (nothing is
            written then), or a resume with other metric settings.
    """
    from mohaq.search.records import EVALUATIONS, ResumeError, storage_error, write_json_atomic

    path = run_dir / METRIC_SETTINGS
    log = run_dir / EVALUATIONS
    if not resume and log.exists() and log.stat().st_size > 0:
        raise ResumeError(
            f"{run_dir} already holds evaluations; resume that run (--resume true) "
            "or choose another run directory"
        )
    if resume and path.exists():
        stored = json.loads(path.read_text())
        if stored != settings.to_dict():
            changes = "; ".join(
                f"{key}: {stored.get(key)!r} -> {value!r}"
                for key, value in settings.to_dict().items()
                if stored.get(key) != value
            )
            raise ResumeError(f"cannot resume {run_dir} with other metric settings ({changes})")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, settings.to_dict())
    except OSError as error:
        raise storage_error("write", path, error, "the run directory must be writable") from error


@dataclass(frozen=True)
class _InProcessMetric:
    """Builds the metric evaluator on the search's own converted model and data."""

    module: nn.Module
    datamodule: Any
    kwargs: Mapping[str, Any]

    def __call__(self) -> MetricEvaluator:
        return MetricEvaluator(self.module, self.datamodule, **dict(self.kwargs))


def search_converted_model(
    settings: SearchSettings,
    metric: MetricSettings,
    *,
    module: nn.Module,
    datamodule: Any,
    checkpoint: str,
    resume: bool = False,
    callbacks: Sequence[SearchCallback] | None = None,
    truncate_damaged: bool = False,
) -> SearchResult:
    """Post-training quantization search of a user's float model.

    Args:
        settings: the search settings (``batch_size`` and racing do not apply:
            the DataModule batches, and the metric evaluator scores whole splits).
        metric: the metric and the conversion.
        module: the float LightningModule with the checkpoint's weights loaded;
            converted in place.
        datamodule: its DataModule (optimization split or validation fallback,
            test split).
        checkpoint: the float checkpoint (worker processes load it themselves).
        resume, callbacks, truncate_damaged: see :func:`mohaq.search.run.run_search`.

    Raises:
        SearchConfigError: no metric, or racing asked for.
        ResumeError: other metric settings than the run being resumed.
        EvaluatorError, ConversionError: a metric or a model that does not work.
    """
    from mohaq.convert import make_quantizable
    from mohaq.convert.model_api import workload_of

    if not metric.metric:
        raise SearchConfigError(
            f"{type(module).__name__} is not an AcousticSystem: name the metric to score, e.g. "
            "--metric torchmetrics.classification.MulticlassAccuracy"
        )
    if settings.racing:
        raise SearchConfigError("racing needs the PTQ evaluator of an AcousticSystem; leave it off")
    _check_stored(Path(settings.run_dir), metric, resume)
    evaluator_kwargs = metric_evaluator_arguments(settings, metric, datamodule)
    convert_kwargs = {"granularity": metric.granularity}
    module = make_quantizable(module, **convert_kwargs)
    workload = workload_of(module)
    factory: EvaluatorFactory
    if isinstance(settings.executor_options, InProcess):
        factory = _InProcessMetric(module, datamodule, {**evaluator_kwargs, "workload": workload})
    else:
        factory = MetricEvaluatorSpec.from_objects(
            checkpoint, module, datamodule, convert_kwargs=convert_kwargs, **evaluator_kwargs
        )
    return run_search(
        settings,
        workload=workload,
        evaluator_factory=factory,
        resume=resume,
        callbacks=callbacks,
        checkpoint=checkpoint,
        truncate_damaged=truncate_damaged,
        score_float=True,
    )


__all__ = [
    "METRIC_SETTINGS",
    "MetricSettings",
    "metric_arguments",
    "metric_evaluator_arguments",
    "search_converted_model",
    "stored_metric_settings",
]
