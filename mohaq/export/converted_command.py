"""`mohaq export` on a user's own LightningModule: :func:`run_converted_export`.

The model is converted as its search converted it (granularity from the
run's ``metric_settings.json``, or ``--granularity``), the assignment is
applied by the search's post-training quantization (its PTQ methods and
optimization split), and the quantized layers are written
(:mod:`mohaq.export.converted`). With a search record (``--run_dir
--index``) the metric is scored again on the optimization split and recorded
beside the record's own value, so a mismatch shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from mohaq.export.converted import LayerExport, export_converted
from mohaq.export.program import ExportError
from mohaq.export.records import resolve_assignment


def _run_settings(run_dir: str | Path | None, granularity: str | None) -> tuple[Any, Any]:
    """The search settings and metric settings of ``run_dir`` (defaults without one)."""
    from mohaq.search.model_search import MetricSettings, stored_metric_settings
    from mohaq.search.records import ResumeError, StoredRun
    from mohaq.search.settings import SearchSettings

    if run_dir is None:
        return SearchSettings(), MetricSettings(granularity=granularity or "layer")  # type: ignore[arg-type]
    metric = stored_metric_settings(run_dir)
    if metric is None:
        raise ExportError(
            f"{run_dir} holds no metric_settings.json: its search was not of a converted model; "
            "give a run of this model, or --bits / --uniform_bits"
        )
    if granularity is not None and granularity != metric.granularity:
        raise ExportError(
            f"--granularity {granularity}: the search in {run_dir} converted the model with "
            f"granularity {metric.granularity}; leave --granularity out"
        )
    try:
        stored = StoredRun.read(run_dir)
    except ResumeError as error:
        raise ExportError(str(error)) from error
    return SearchSettings.from_dict(stored.settings), metric


def _load_weights(module: nn.Module, checkpoint: str, convert: Mapping[str, Any]) -> nn.Module:
    """The model with the checkpoint's weights: a float checkpoint of the model
    as written, or a QAT/beacon checkpoint of the converted model."""
    from mohaq.checkpoints import CheckpointMismatchError, load_model_weights
    from mohaq.convert import make_quantizable

    try:
        load_model_weights(module, checkpoint)
        return make_quantizable(module, **convert)
    except CheckpointMismatchError as original:
        converted = make_quantizable(module, **convert)
        try:
            load_model_weights(converted, checkpoint)
        except CheckpointMismatchError:
            raise original from None
        return converted


def run_converted_export(
    module: nn.Module,
    datamodule: Any,
    *,
    checkpoint: str,
    out_dir: str | Path,
    bits: Mapping[str, int] | None = None,
    uniform_bits: int | None = None,
    run_dir: str | Path | None = None,
    index: int | None = None,
    fixed_bits: int = 16,
    granularity: str | None = None,
) -> LayerExport:
    """Converts, quantizes as the search did, and writes the quantized layers.

    Raises:
        ExportError: a run that was not of a converted model, a granularity
            that contradicts it, an incomplete assignment, or a quantizer the
            model's forward does not reach.
        CheckpointNotFoundError, CheckpointMismatchError: a missing or
            mismatched checkpoint.
    """
    from mohaq.convert.model_api import workload_of
    from mohaq.quant.ptq import PostTrainingQuantizer
    from mohaq.search.evaluators import import_path, init_arguments
    from mohaq.search.metric_evaluator import (
        MetricEvaluator,
        default_outputs,
        optimization_loader,
    )
    from mohaq.search.model_search import metric_evaluator_arguments

    settings, metric = _run_settings(run_dir, granularity)
    convert = {"granularity": metric.granularity}
    model_info = {
        "class_path": import_path(module),
        "init_args": init_arguments(module),
        "convert": convert,
    }
    module = _load_weights(module, checkpoint, convert)
    workload = workload_of(module)
    assignment, source = resolve_assignment(
        workload, bits=bits, uniform_bits=uniform_bits, run_dir=run_dir, index=index
    )
    module.eval()
    for hook, args in (("prepare_data", ()), ("setup", ("validate",))):
        method = getattr(datamodule, hook, None)
        if callable(method):
            method(*args)
    source = {"checkpoint": str(checkpoint), "fixed_bits": fixed_bits, **source}
    if run_dir is not None and metric.metric:
        # The search's evaluator: the same calibration, PTQ methods and metric.
        evaluator = MetricEvaluator(
            module, datamodule, workload=workload, fixed_bits=fixed_bits,
            **metric_evaluator_arguments(settings, metric, datamodule),
        )  # fmt: skip
        value = evaluator.metric_value(assignment)
        source.update(
            metric=evaluator.describe()["metric"],
            optimization_metric=value,
            optimization_error=evaluator.error_of(value),
            method=evaluator.method,
        )
        batch = evaluator.optimization_batches[0]
    else:
        loader, split = optimization_loader(datamodule, metric.validation_subset, settings.seed)
        batches = list(loader)
        if not batches:
            raise ExportError(f"the optimization split ({split}) is empty")
        config = settings.ptq_options()
        quantizer = PostTrainingQuantizer(
            module, config, batches, lambda m, b: default_outputs(m, b)[0], workload=workload
        )
        quantizer.apply(assignment, fixed_bits=fixed_bits)
        source.update(method=config.tag(), calibration=split)
        batch = batches[0]
    result = export_converted(
        module, out_dir, batch=batch, forward=lambda m, b: default_outputs(m, b)[0],
        workload=workload, assignment=assignment, model=model_info, source=source,
    )  # fmt: skip
    sizes = result.manifest["sizes"]
    print(f"exported {source['assignment']} of {model_info['class_path']} to "
          f"{result.directory.resolve()}")  # fmt: skip
    for role, path in result.files.items():
        print(f"  {role}: {path.name} ({path.stat().st_size:,} bytes)")
    print(
        f"  weights + {fixed_bits}-bit extras: {sizes['payload_bytes']:,} bytes packed; cost "
        f"model memory {sizes['cost_model_memory_bytes']:,.1f} bytes"
    )
    if "optimization_error" in source and "error" in source:
        print(
            f"  optimization-set error {source['optimization_error']:.4f} (the search record: "
            f"{source['error']:.4f})"
        )
    return result


__all__ = ["run_converted_export"]
