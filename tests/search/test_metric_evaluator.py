"""MetricEvaluator on a user's own LightningModule with nn.GRU, converted by
make_quantizable, on random tensors saved in tmp_path; searched end to end."""

from __future__ import annotations

import copy
import pickle

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mohaq.convert import make_quantizable, model_workload
from mohaq.quant import BitAssignment, quantizers
from mohaq.search import SearchSettings, run_search
from mohaq.search.evaluators import Evaluator, EvaluatorError
from mohaq.search.metric_evaluator import MetricEvaluator, MetricEvaluatorSpec
from mohaq.search.run import default_callbacks

ACCURACY = "torchmetrics.classification.MulticlassAccuracy"
CLASSES = 3
MICRO = {"num_classes": CLASSES, "average": "micro"}  # accuracy over all clips


class Spotter(pl.LightningModule):
    """A user's keyword spotter: GRU over frames, a classifier on the last state."""

    def __init__(self, features: int = 4, hidden: int = 12) -> None:
        super().__init__()
        self.rnn = nn.GRU(features, hidden, batch_first=True)
        self.classifier = nn.Linear(hidden, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, hidden = self.rnn(x)
        return self.classifier(hidden[-1])

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.03)


class Clips(pl.LightningDataModule):
    """Random clips saved in ``root``: noise plus a class-dependent offset on one feature."""

    def __init__(self, root: str) -> None:
        super().__init__()
        self.root = root

    def prepare_data(self) -> None:
        generator = torch.Generator().manual_seed(0)
        for split, size in (("train", 96), ("val", 48), ("test", 24)):
            y = torch.randint(CLASSES, (size,), generator=generator)
            x = torch.randn(size, 10, 4, generator=generator)
            x[:, :, :CLASSES] += nn.functional.one_hot(y, CLASSES)[:, None, :]
            torch.save((x, y), f"{self.root}/{split}.pt")

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(TensorDataset(*torch.load(f"{self.root}/{split}.pt")), batch_size=16)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class ClipsWithOptimizationSplit(Clips):
    """The same clips with the documented hook: the search optimizes on ``val``."""

    def optimization_dataloader(self) -> DataLoader:
        return self._loader("val")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Spotter, str]:
    root = str(tmp_path_factory.mktemp("clips"))
    torch.manual_seed(0)
    model, data = Spotter(), Clips(root)
    trainer = pl.Trainer(
        max_epochs=15, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    return model.eval(), root


def _accuracy(model: nn.Module, loader: DataLoader) -> float:
    with torch.no_grad():
        hits = [(model(x).argmax(1) == y).float() for x, y in loader]
    return float(torch.cat(hits).mean())


def test_error_is_one_minus_accuracy_and_candidates_are_applied(trained) -> None:
    original, root = trained
    model = make_quantizable(copy.deepcopy(original))
    evaluator = MetricEvaluator(model, ClipsWithOptimizationSplit(root), metric=ACCURACY,
                                metric_args=MICRO, device="cpu")  # fmt: skip
    assert isinstance(evaluator, Evaluator)
    accuracy = _accuracy(original, Clips(root)._loader("val"))
    assert accuracy > 0.8  # the model learned the task
    float_result = evaluator.evaluate(BitAssignment({}))
    assert float_result.error == pytest.approx(1.0 - accuracy)
    assert float_result.extras["metric"] == pytest.approx(accuracy)
    names = model_workload(model).names
    assert evaluator.evaluate(BitAssignment.uniform(names, 8)).error <= float_result.error + 0.05
    x = Clips(root)._loader("val").dataset.tensors[0]
    evaluator.evaluate(BitAssignment.uniform(names, 2))
    assert quantizers(model)["rnn.weight"].bits == 2  # the candidate is applied to the model
    assert not torch.allclose(model(x), original(x), atol=1e-3)
    test = evaluator.evaluate(BitAssignment({}), "test")
    assert test.error == pytest.approx(1.0 - _accuracy(original, Clips(root)._loader("test")))
    assert evaluator.describe()["optimization_split"] == "optimization_dataloader()"


def test_validation_fallback_is_a_fixed_seeded_subset(trained) -> None:
    original, root = trained
    evaluators = [
        MetricEvaluator(
            make_quantizable(copy.deepcopy(original)),
            Clips(root),
            metric=ACCURACY,
            metric_args=MICRO,
            validation_subset=20,
            seed=3,
            device="cpu",
        )  # fmt: skip
        for _ in range(2)
    ]
    first, second = (e._batches["optimization"] for e in evaluators)
    assert sum(len(batch[1]) for batch in first) == 20
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))
    assert evaluators[0].describe()["optimization_split"] == "validation subset of 20 items, seed 3"


def test_lower_is_better_metric_through_the_outputs_hook(trained) -> None:
    original, root = trained

    class WithHook(Spotter):
        def metric_outputs(self, batch):
            x, y = batch
            return self(x).softmax(1), nn.functional.one_hot(y, CLASSES).float()

    model = WithHook()
    model.load_state_dict(original.state_dict())
    evaluator = MetricEvaluator(make_quantizable(model), ClipsWithOptimizationSplit(root),
                                metric="torchmetrics.regression.MeanSquaredError", device="cpu")  # fmt: skip
    result = evaluator.evaluate(BitAssignment({}))
    assert result.error == result.extras["metric"] > 0.0  # lower is better: the value itself
    names = model_workload(evaluator.module).names
    assert evaluator.evaluate(BitAssignment.uniform(names, 2)).error > result.error


def test_bad_metrics_raise(trained) -> None:
    original, root = trained
    model = make_quantizable(copy.deepcopy(original))
    with pytest.raises(EvaluatorError, match="does not import"):
        MetricEvaluator(model, ClipsWithOptimizationSplit(root), metric="torchmetrics.NoSuchMetric")
    with pytest.raises(EvaluatorError, match="must be a torchmetrics Metric"):
        MetricEvaluator(model, ClipsWithOptimizationSplit(root), metric="collections.OrderedDict")
    with pytest.raises(EvaluatorError, match="validation_subset must be a positive integer"):
        MetricEvaluator(model, ClipsWithOptimizationSplit(root), metric=ACCURACY,
                        metric_args=MICRO, validation_subset=0)  # fmt: skip


def test_search_end_to_end_on_the_user_model(trained, tmp_path) -> None:
    original, root = trained
    model = make_quantizable(copy.deepcopy(original), granularity="operator")
    workload = model_workload(model)
    evaluator = MetricEvaluator(model, ClipsWithOptimizationSplit(root), metric=ACCURACY,
                                metric_args=MICRO, device="cpu")  # fmt: skip
    settings = SearchSettings(platform="size", objectives=["error", "memory_mb"], budget=10,
                              bit_choices=[2, 4, 8], run_dir=str(tmp_path / "run"))  # fmt: skip
    result = run_search(settings, workload=workload, evaluator=evaluator,
                        callbacks=default_callbacks(progress=False, tensorboard=False))  # fmt: skip
    assert len(result.records) == 10 and {r.evaluator for r in result.records} == {"metric"}
    assert result.front and set(result.test_errors) == {r.index for r in result.front}
    assert all(0.0 <= r.error <= 1.0 for r in result.records)
    assert (tmp_path / "run" / "evaluations.jsonl").exists()


class SavedClips(ClipsWithOptimizationSplit):
    """Saves its init arguments, so a spec can rebuild it in a worker process."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.save_hyperparameters()


def test_spec_rebuilds_the_evaluator_from_the_float_checkpoint(trained, tmp_path) -> None:
    original, root = trained
    checkpoint = tmp_path / "float.ckpt"
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(original)
    trainer.save_checkpoint(checkpoint)
    spec = MetricEvaluatorSpec.from_objects(
        str(checkpoint), original, SavedClips(root), convert_kwargs={"granularity": "operator"},
        metric=ACCURACY, metric_args=MICRO, device="cpu",
    )  # fmt: skip
    assert spec.module_class.endswith("Spotter") and spec.datamodule_kwargs == {"root": root}
    built = pickle.loads(pickle.dumps(spec))()
    assert "rnn.w_hh" in model_workload(built.module).names
    direct = MetricEvaluator(make_quantizable(copy.deepcopy(original)), SavedClips(root),
                             metric=ACCURACY, metric_args=MICRO, device="cpu")  # fmt: skip
    float_error = built.evaluate(BitAssignment({})).error
    assert float_error == pytest.approx(direct.evaluate(BitAssignment({})).error)
