"""A model-agnostic evaluator: post-training quantization of any converted model,
scored by a torchmetrics metric the user names.

:class:`MetricEvaluator` implements the
:class:`~mohaq.search.evaluators.Evaluator` protocol for a user's own model
(made quantizable by :func:`mohaq.convert.make_quantizable`) and DataModule:

* The optimization split comes from the DataModule's
  ``optimization_dataloader()`` hook when it has one; otherwise it is a fixed
  subset of the validation set: ``validation_subset`` items drawn with
  ``seed`` (the same items on every run and in every worker), batched by the
  validation loader's batch size and collate function. The test split is
  ``test_dataloader()``.
* Predictions and targets come from the module's ``metric_outputs(batch)``
  hook when it has one (returning ``(preds, target)`` as the metric's
  ``update`` takes them); otherwise a batch is ``(inputs, target, ...)`` and
  the predictions are ``module(inputs)``.
* The metric is a torchmetrics class (an import path such as
  ``"torchmetrics.classification.MulticlassAccuracy"``, the class, or an
  instance). The search minimizes an error, so a higher-is-better metric is
  turned into ``best_value - value`` (``best_value``: the metric's upper bound,
  1.0 for accuracy, so the error is 1 - accuracy; ``-value`` for a metric
  without one) and a lower-is-better metric is the error as it is. Each
  result's extras hold the metric's own value (``"metric"``).
* Activation ranges are calibrated once, in float, on the optimization split
  (one histogram per batch: a loader with batch size 1 reproduces MOHAQ's
  per-utterance median), then each candidate is applied by post-training
  quantization (:class:`~mohaq.quant.ptq.PostTrainingQuantizer`) and scored.
  The split's batches are held in memory on the evaluator's device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload
from mohaq.quant.ptq import PostTrainingQuantizer, PTQConfig
from mohaq.search.evaluators import (
    OPTIMIZATION,
    EvaluationResult,
    EvaluatorError,
    check_split,
    import_object,
    import_path,
    init_arguments,
)

log = logging.getLogger(__name__)

#: The DataModule hook that provides the optimization split.
OPTIMIZATION_HOOK = "optimization_dataloader"
#: The module hook that turns a batch into ``(preds, target)``.
OUTPUTS_HOOK = "metric_outputs"


def build_metric(metric: Any, metric_args: Mapping[str, Any] | None = None) -> Any:
    """A torchmetrics ``Metric`` from an import path, a class or an instance.

    Raises:
        EvaluatorError: if the path does not import or the object is not a metric.
    """
    from torchmetrics import Metric

    if isinstance(metric, Metric):
        if metric_args:
            raise EvaluatorError("metric_args apply to a metric class or path, not an instance")
        return metric
    if isinstance(metric, str):
        try:
            metric = import_object(metric)
        except (ImportError, AttributeError) as error:
            raise EvaluatorError(
                f"metric {metric!r} does not import ({error}); give a torchmetrics class path "
                "such as 'torchmetrics.classification.MulticlassAccuracy'"
            ) from error
    built = metric(**dict(metric_args or {})) if callable(metric) else metric
    if not isinstance(built, Metric):
        raise EvaluatorError(
            f"metric must be a torchmetrics Metric (class, import path or instance), "
            f"got {type(built).__name__}"
        )
    return built


def default_outputs(module: nn.Module, batch: Any) -> tuple[Any, Any]:
    """``(preds, target)`` of a batch: the module's ``metric_outputs(batch)`` hook,
    else ``(module(batch[0]), batch[1])``."""
    hook = getattr(module, OUTPUTS_HOOK, None)
    if callable(hook):
        return hook(batch)
    if not isinstance(batch, Sequence) or len(batch) < 2:
        raise EvaluatorError(
            f"a batch must be (inputs, target, ...), got {type(batch).__name__}; or give the "
            f"module a {OUTPUTS_HOOK}(batch) -> (preds, target) method"
        )
    return module(batch[0]), batch[1]


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
        return type(batch)(*(_to_device(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def validation_subset_loader(datamodule: Any, size: int, seed: int) -> torch.utils.data.DataLoader:
    """``size`` items of the validation set drawn with ``seed`` (in index order),
    batched as the validation loader batches.

    Raises:
        EvaluatorError: if the validation loader is not one loader over a
            dataset with a length.
    """
    loader = datamodule.val_dataloader()
    if not isinstance(loader, torch.utils.data.DataLoader):
        raise EvaluatorError(
            f"the validation fallback needs val_dataloader() to return one DataLoader, got "
            f"{type(loader).__name__}; give the DataModule an {OPTIMIZATION_HOOK}() method"
        )
    dataset = loader.dataset
    if not hasattr(dataset, "__len__") or isinstance(dataset, torch.utils.data.IterableDataset):
        raise EvaluatorError(
            "the validation fallback draws items by index, so the validation dataset must have "
            f"a length; give the DataModule an {OPTIMIZATION_HOOK}() method"
        )
    total = len(dataset)
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(total, generator=generator)[: min(size, total)].sort().values
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, chosen.tolist()),
        batch_size=loader.batch_size or 1,
        collate_fn=loader.collate_fn,
    )


def optimization_loader(datamodule: Any, size: int, seed: int) -> tuple[Any, str]:
    """The optimization split and where it came from: the DataModule's
    ``optimization_dataloader()``, else ``size`` validation items drawn with ``seed``."""
    hook = getattr(datamodule, OPTIMIZATION_HOOK, None)
    if callable(hook):
        return hook(), f"{OPTIMIZATION_HOOK}()"
    log.info(
        "the DataModule has no %s(); optimizing on %d validation items (seed %d)",
        OPTIMIZATION_HOOK, size, seed,
    )  # fmt: skip
    return validation_subset_loader(datamodule, size, seed), (
        f"validation subset of {size} items, seed {seed}"
    )


class MetricEvaluator:
    """Post-training quantization of a converted model, scored by a torchmetrics metric.

    See the module docstring for the hooks and the error convention.

    Args:
        module: the float model, made quantizable (e.g. a LightningModule after
            :func:`mohaq.convert.make_quantizable`); its quantizers are
            calibrated and set in place.
        datamodule: provides ``optimization_dataloader()`` (or
            ``val_dataloader()`` for the fallback) and ``test_dataloader()``;
            its ``prepare_data`` and ``setup`` are called here if it has them.
        metric: a torchmetrics metric: import path, class or instance.
        metric_args: the metric class's arguments (e.g. ``{"num_classes": 12}``).
        higher_is_better: whether a larger metric value is better (default:
            the metric's own ``higher_is_better``).
        best_value: for a higher-is-better metric, the error is
            ``best_value - value`` (default: the metric's upper bound, else 0).
        validation_subset: items of the validation fallback.
        seed: the seed that draws them.
        workload: the model's workload (default:
            :func:`mohaq.convert.model_workload` of ``module``).
        device: where to run (default: CUDA if available, else CPU).
        fixed_bits: precision of biases and other fixed-precision extras.
        ptq: the post-training quantization methods (default: MOHAQ's recipe).
        outputs: ``(module, batch) -> (preds, target)`` (default:
            :func:`default_outputs`, which uses the module's hook).

    Raises:
        EvaluatorError: for a metric that does not build, does not say which
            direction is better, an empty optimization split, or a bad
            ``validation_subset``.
    """

    name = "metric"

    def __init__(
        self,
        module: nn.Module,
        datamodule: Any,
        *,
        metric: Any,
        metric_args: Mapping[str, Any] | None = None,
        higher_is_better: bool | None = None,
        best_value: float | None = None,
        validation_subset: int = 256,
        seed: int = 0,
        workload: Workload | None = None,
        device: str | torch.device | None = None,
        fixed_bits: int = 16,
        ptq: PTQConfig | None = None,
        outputs: Callable[[nn.Module, Any], tuple[Any, Any]] = default_outputs,
    ) -> None:
        if (
            isinstance(validation_subset, bool)
            or not isinstance(validation_subset, int)
            or validation_subset < 1
        ):
            raise EvaluatorError(
                f"validation_subset must be a positive integer, got {validation_subset!r}"
            )
        self.metric = build_metric(metric, metric_args)
        if higher_is_better is None:
            higher_is_better = self.metric.higher_is_better
        if higher_is_better is None:
            raise EvaluatorError(
                f"{type(self.metric).__name__} does not say whether higher is better; "
                "give higher_is_better=True or False"
            )
        self.higher_is_better = bool(higher_is_better)
        if best_value is None and self.higher_is_better:
            upper = getattr(self.metric, "plot_upper_bound", None)
            best_value = float(upper) if upper is not None else 0.0
        self.best_value = best_value
        if workload is None:
            from mohaq.convert import model_workload

            workload = model_workload(module)
        self.workload = workload
        self.outputs = outputs
        self.fixed_bits = fixed_bits
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module = module.to(self.device).eval()
        self.datamodule = datamodule
        self._prepare("validate")
        loader, self.source = self._optimization_loader(validation_subset, seed)
        batches = [_to_device(batch, self.device) for batch in loader]
        if not batches:
            raise EvaluatorError(f"the optimization split ({self.source}) is empty")
        self._batches: dict[str, list[Any]] = {OPTIMIZATION: batches}
        log.info("calibrating activation ranges on %d batches (%s)", len(batches), self.source)
        config = ptq if ptq is not None else PTQConfig()
        #: The PTQ methods' tag, stored in every record (as the PTQ evaluator does).
        self.method = config.tag()
        self.ptq = PostTrainingQuantizer(
            self.module,
            config,
            batches,
            lambda model, batch: self.outputs(model, batch)[0],
            workload=workload,
        )

    def _prepare(self, stage: str) -> None:
        for hook, args in (("prepare_data", ()), ("setup", (stage,))):
            method = getattr(self.datamodule, hook, None)
            if callable(method):
                method(*args)

    def _optimization_loader(self, size: int, seed: int) -> tuple[Any, str]:
        return optimization_loader(self.datamodule, size, seed)

    @property
    def optimization_batches(self) -> list[Any]:
        """The optimization split's batches, on the evaluator's device."""
        return self._batches[OPTIMIZATION]

    def _split_batches(self, split: str) -> list[Any]:
        if split not in self._batches:
            from pytorch_lightning.utilities.exceptions import MisconfigurationException

            self._prepare("test")
            try:
                loader = self.datamodule.test_dataloader()
            except (AttributeError, NotImplementedError, MisconfigurationException) as error:
                raise EvaluatorError(
                    f"the test split needs the DataModule's test_dataloader() ({error})"
                ) from error
            self._batches[split] = [_to_device(batch, self.device) for batch in loader]
        return self._batches[split]

    def metric_value(self, assignment: BitAssignment, split: str = OPTIMIZATION) -> float:
        """The metric's own value for ``assignment`` on ``split``."""
        check_split(split)
        with torch.no_grad():  # AdaRound, if configured, learns outside inference mode
            self.ptq.apply(assignment, fixed_bits=self.fixed_bits)
        self.module.eval()
        self.metric.reset()
        with torch.inference_mode():
            for batch in self._split_batches(split):
                preds, target = self.outputs(self.module, batch)
                cpu = torch.device("cpu")
                self.metric.update(_to_device(preds, cpu), _to_device(target, cpu))
        return float(self.metric.compute())

    def error_of(self, value: float) -> float:
        """The error the search minimizes for a metric value."""
        if not self.higher_is_better:
            return value
        assert self.best_value is not None
        return self.best_value - value

    def describe(self) -> dict[str, Any]:
        """The metric, the optimization split and the PTQ settings, JSON-ready."""
        return {
            "metric": f"{type(self.metric).__module__}.{type(self.metric).__qualname__}",
            "higher_is_better": self.higher_is_better,
            "best_value": self.best_value,
            "optimization_split": self.source,
            **self.ptq.describe(),
        }

    def evaluate(
        self,
        assignment: BitAssignment,
        split: str = OPTIMIZATION,
        *,
        stop_above: float | None = None,
    ) -> EvaluationResult:
        """Scores ``assignment`` on the whole of ``split``; ``stop_above`` is ignored."""
        value = self.metric_value(assignment, split)
        return EvaluationResult(
            self.error_of(value), evaluator=self.name, method=self.method, extras={"metric": value}
        )


@dataclass(frozen=True)
class MetricEvaluatorSpec:
    """How a worker process builds its own :class:`MetricEvaluator`: the float
    checkpoint of the user's LightningModule, converted in the worker.

    Attributes:
        checkpoint_path: the float checkpoint (``load_from_checkpoint``).
        module_class: import path of the LightningModule class.
        datamodule_class: import path of the DataModule class.
        datamodule_kwargs: its init arguments.
        convert_kwargs: :func:`mohaq.convert.make_quantizable` options
            (``granularity``, ``skip``, ...).
        evaluator_kwargs: :class:`MetricEvaluator` options (``metric``,
            ``metric_args``, ...); picklable values only.
    """

    checkpoint_path: str
    module_class: str
    datamodule_class: str
    datamodule_kwargs: Mapping[str, Any] = field(default_factory=dict)
    convert_kwargs: Mapping[str, Any] = field(default_factory=dict)
    evaluator_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_objects(
        cls,
        checkpoint_path: str,
        module: Any,
        datamodule: Any,
        *,
        convert_kwargs: Mapping[str, Any] | None = None,
        **evaluator_kwargs: Any,
    ) -> MetricEvaluatorSpec:
        """A spec rebuilding ``datamodule`` from its saved hyperparameters and the
        module (or module class) from ``checkpoint_path``."""
        return cls(
            str(checkpoint_path),
            import_path(module),
            import_path(datamodule),
            init_arguments(datamodule),
            dict(convert_kwargs or {}),
            dict(evaluator_kwargs),
        )

    def __call__(self) -> MetricEvaluator:
        from mohaq.convert import make_quantizable

        module = import_object(self.module_class).load_from_checkpoint(
            self.checkpoint_path, map_location="cpu"
        )
        module = make_quantizable(module, **dict(self.convert_kwargs))
        datamodule = import_object(self.datamodule_class)(**dict(self.datamodule_kwargs))
        return MetricEvaluator(module, datamodule, **dict(self.evaluator_kwargs))


__all__ = [
    "OPTIMIZATION_HOOK",
    "OUTPUTS_HOOK",
    "MetricEvaluator",
    "MetricEvaluatorSpec",
    "build_metric",
    "default_outputs",
    "optimization_loader",
    "validation_subset_loader",
]
