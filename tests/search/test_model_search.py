"""MetricSettings and the checks of search_converted_model (the CLI's path for a
user's own model; tests/test_cli_own_model.py runs it end to end)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mohaq.search.evaluators import EvaluatorError
from mohaq.search.model_search import MetricSettings, metric_arguments, search_converted_model
from mohaq.search.settings import SearchConfigError, SearchSettings

ACCURACY = "torchmetrics.classification.MulticlassAccuracy"


def test_settings_are_checked_naming_the_value() -> None:
    with pytest.raises(SearchConfigError, match="granularity must be 'layer' or 'operator'"):
        MetricSettings(granularity="cell")  # type: ignore[arg-type]
    with pytest.raises(SearchConfigError, match="validation_subset must be an integer >= 1"):
        MetricSettings(validation_subset=0)
    assert not MetricSettings().given() and MetricSettings(metric=ACCURACY).given()
    assert MetricSettings(metric_args=None).to_dict()["metric_args"] == {}  # type: ignore[arg-type]


def test_num_classes_comes_from_the_datamodule_when_the_metric_takes_it() -> None:
    data = SimpleNamespace(num_classes=5)
    settings = MetricSettings(metric=ACCURACY, metric_args={"average": "micro"})
    assert metric_arguments(settings, data) == {"average": "micro", "num_classes": 5}
    given = MetricSettings(metric=ACCURACY, metric_args={"num_classes": 3})
    assert metric_arguments(given, data) == {"num_classes": 3}
    mse = MetricSettings(metric="torchmetrics.MeanSquaredError")
    assert metric_arguments(mse, data) == {}
    assert metric_arguments(settings, object()) == {"average": "micro"}
    with pytest.raises(EvaluatorError, match="does not import"):
        metric_arguments(MetricSettings(metric="torchmetrics.NoSuchMetric"), data)


def test_a_search_without_a_metric_or_with_racing_is_refused_before_work(tmp_path) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(2, 2))
    settings = SearchSettings(run_dir=str(tmp_path / "run"), platform="size")
    with pytest.raises(SearchConfigError, match="name the metric to score"):
        search_converted_model(
            settings, MetricSettings(), module=module, datamodule=None, checkpoint="x"
        )
    with pytest.raises(SearchConfigError, match="racing"):
        search_converted_model(
            settings.replace(racing=True), MetricSettings(metric=ACCURACY), module=module,
            datamodule=None, checkpoint="x",
        )  # fmt: skip
    assert not (tmp_path / "run").exists()
