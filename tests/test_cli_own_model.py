"""`mohaq search`, `mohaq beacons` and `mohaq cost` on a user's own
LightningModule and DataModule, given by ``class_path`` (issue 17): a tiny GRU
classifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from mohaq.cli import MohaqCLI, build_cli
from mohaq.cli import main as mohaq

ACCURACY = "torchmetrics.classification.MulticlassAccuracy"


class TinySpotter(pl.LightningModule):
    """A user's model: nn.GRU and nn.Linear, nothing of the toolkit."""

    def __init__(self, num_features: int = 6, num_classes: int = 3, hidden_size: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.rnn = torch.nn.GRU(num_features, hidden_size, batch_first=True)
        self.out = torch.nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(x)[1][-1])

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.02)


class TinyWords(pl.LightningDataModule):
    """A user's DataModule: random clips whose class shows in one channel."""

    def __init__(self, num_features: int = 6, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        generator = torch.Generator().manual_seed(seed)
        labels = torch.randint(classes, (96,), generator=generator)
        clips = torch.randn(96, 8, num_features, generator=generator)
        clips += 2 * torch.nn.functional.one_hot(labels, num_features)[:, None]
        self.splits = [TensorDataset(clips[i::3], labels[i::3]) for i in range(3)]
        self.classes, self.features = classes, num_features

    @property
    def num_classes(self) -> int:
        return self.classes

    @property
    def num_features(self) -> int:
        return self.features

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits[0], batch_size=8, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits[1], batch_size=8)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits[2], batch_size=8)


MODEL = f"{TinySpotter.__module__}.TinySpotter"
DATA = f"{TinyWords.__module__}.TinyWords"
CLASSES = ["--model.class_path", MODEL, "--data.class_path", DATA]


@pytest.fixture
def checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    trainer = pl.Trainer(
        max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(TinySpotter(), TinyWords())
    path = tmp_path / "spotter.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


class _Parsed(Exception):
    def __init__(self, cli: MohaqCLI) -> None:
        super().__init__()
        self.cli = cli


class _ParseOnly(MohaqCLI):
    def before_instantiate_classes(self) -> None:
        raise _Parsed(self)


def _parsed(args: list[str]) -> object:
    with pytest.raises(_Parsed) as parsed:
        build_cli(args, cli_class=_ParseOnly)
    cli = parsed.value.cli
    return cli.config[cli.subcommand]


def test_a_chosen_class_starts_from_its_own_defaults_and_configs_without_class_path_still_parse(
    tmp_path: Path,
) -> None:
    config = _parsed(["cost", *CLASSES])
    assert config.model.class_path == MODEL
    assert config.model.init_args.hidden_size == 8  # not the AcousticSystem's 550
    assert config.data.init_args.as_dict() == {"num_features": 6, "classes": 3, "seed": 0}
    yaml = tmp_path / "own.yaml"  # class_path first, then init_args without it
    yaml.write_text(f"model:\n  class_path: {MODEL}\n  init_args:\n    hidden_size: 5\n")
    extra = tmp_path / "more.yaml"
    extra.write_text(f"data:\n  class_path: {DATA}\n  init_args:\n    seed: 3\n")
    config = _parsed(["cost", "-c", str(yaml), "-c", str(extra), "--data.classes", "4"])
    assert config.model.init_args.hidden_size == 5
    assert config.data.init_args.seed == 3 and config.data.init_args.classes == 4
    default = _parsed(["cost", "--model.hidden_size", "16"])  # no class_path: the acoustic model
    assert default.model.class_path == "mohaq.system.AcousticSystem"
    assert default.model.init_args.hidden_size == 16
    assert default.data.class_path.endswith(".TIMITDataModule")


def test_print_config_shows_the_chosen_class_with_its_own_defaults(
    capsys: pytest.CaptureFixture,
) -> None:
    with pytest.raises(SystemExit):
        build_cli(["cost", *CLASSES, "--print_config"])
    out = capsys.readouterr().out
    assert f"class_path: {MODEL}" in out and "hidden_size: 8" in out and "550" not in out


def test_cost_converts_a_users_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["cost", *CLASSES, "--platforms", "[size]", "--granularity", "operator"]
    assert mohaq(args) == 0
    out = capsys.readouterr().out
    assert "rnn.w_ih" in out and "out.weight" in out and "== size ==" in out
    assert mohaq(["cost", "--platforms", "[size]", "--granularity", "operator"]) == 2
    assert "--model.granularity" in capsys.readouterr().err  # the acoustic model has its own


def test_search_takes_a_users_model_by_class_path(
    checkpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "search"
    search = [
        "search", *CLASSES, "--checkpoint", checkpoint, "--metric", ACCURACY,
        "--metric_args", "{average: micro}", "--granularity", "operator",
        "--platform", "size", "--objectives", "[error, memory_mb]", "--budget", "6",
        "--run_dir", str(run_dir), "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    assert mohaq(search) == 0
    for name in ("evaluations.jsonl", "pareto.csv", "summary.md", "float_error.json"):
        assert (run_dir / name).is_file(), name
    records = [
        json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()
    ]
    assert len(records) == 6
    text = json.dumps(records[0])
    assert "rnn.w_ih" in text and "out.weight" in text
    stored = json.loads((run_dir / "metric_settings.json").read_text())
    assert stored["metric"] == ACCURACY and stored["granularity"] == "operator"
    assert json.loads((run_dir / "search_settings.json").read_text())["checkpoint"] == checkpoint
    float_error = json.loads((run_dir / "float_error.json").read_text())["optimization"]
    assert 0.0 <= float_error < 0.5  # 1 - accuracy of a model that learned the channel
    capsys.readouterr()

    # Worker processes rebuild the model from the checkpoint, convert it and score
    # the same candidates the same way.
    pooled = tmp_path / "pooled"
    assert mohaq([*search[:-4], "--run_dir", str(pooled), "--workers", "2"]) == 0
    errors = {json.dumps(r["bits"], sort_keys=True): r["error"] for r in records}
    for line in (pooled / "evaluations.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert errors[json.dumps(record["bits"], sort_keys=True)] == record["error"]
    capsys.readouterr()

    # A resume with another metric is refused (exit status 7: run directory), and
    # a fresh run into the directory leaves its records as they are.
    other = [*search, "--resume", "true", "--metric_args", "{average: macro}"]
    assert mohaq(other) == 7
    assert "metric settings (metric_args: {'average': 'micro'} ->" in capsys.readouterr().err
    assert mohaq([*search, "--metric_args", "{average: macro}"]) == 7
    assert "already holds evaluations" in capsys.readouterr().err
    assert json.loads((run_dir / "metric_settings.json").read_text()) == stored
    assert mohaq([*search, "--resume", "true", "--budget", "7"]) == 0  # the same metric: resumes
    assert len((run_dir / "evaluations.jsonl").read_text().splitlines()) == 7
    capsys.readouterr()

    # Export a mixed record: the quantized layers as the search scored them.
    record = next(r for r in records if len(set(r["bits"].values())) > 1)
    out_dir = tmp_path / "export"
    export = [
        "export", *CLASSES, "--checkpoint", checkpoint, "--run_dir", str(run_dir),
        "--index", str(record["index"]), "--out_dir", str(out_dir),
    ]  # fmt: skip
    assert mohaq([*export, "--granularity", "layer"]) == 9  # not the search's conversion
    assert "converted the model with granularity operator" in capsys.readouterr().err
    assert mohaq(export) == 0
    assert "ONNX: not written for TinySpotter" in capsys.readouterr().out
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["format"] == "mohaq-quantized-layers/1" and manifest["bits"] == record["bits"]
    # Scored again on the optimization split, the export is the record's model.
    assert manifest["source"]["optimization_error"] == pytest.approx(record["error"], abs=1e-9)
    sizes = manifest["sizes"]
    assert sizes["payload_bytes"] - sizes["padding_bytes"] == pytest.approx(
        sizes["cost_model_memory_bytes"]
    )
    from mohaq.export.converted import read_layers

    description, tensors = read_layers(out_dir / "model.safetensors")
    weight = description["quantizers"]["out.weight_quant"]
    assert weight["parameter"] == "out.weight"
    assert weight["bits"] == record["bits"]["out.weight"]
    integers = tensors["out.weight_quant"]
    assert int(integers.abs().max()) <= 2 ** (weight["bits"] - 1)
    # Independent reference: the float checkpoint's weight, within half a step
    # where it is not clipped.
    float_weight = torch.load(checkpoint, weights_only=False)["state_dict"]["out.weight"]
    scale = float(tensors["out.weight_quant.scale"])
    inside = float_weight.abs() <= scale * (2 ** (weight["bits"] - 1) - 1)
    error = (integers.double() * scale - float_weight.double()).abs()[inside]
    assert float(error.max()) <= scale / 2 + 1e-6
    assert mohaq(["test", *CLASSES, "--exported", str(out_dir)]) == 9
    assert "holds its quantized layers" in capsys.readouterr().err


def test_beacons_retrain_a_users_model_and_score_it_with_the_searchs_metric(
    checkpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "search"
    common = [*CLASSES, "--run_dir", str(run_dir), "--trainer.enable_progress_bar", "false"]
    search = [
        "search", *common, "--checkpoint", checkpoint, "--metric", ACCURACY,
        "--platform", "size", "--objectives", "[error, memory_mb]", "--budget", "8",
        "--bit_choices", "[2, 4, 8]", "--ptq", "best", "--granularity", "operator",
        "--ptq_overrides", "{adaround_iterations: 5}",
    ]  # fmt: skip
    assert mohaq(search) == 0
    log = (run_dir / "evaluations.jsonl").read_text().splitlines()
    from mohaq.quant.ptq import PTQConfig

    # The search's PTQ methods reach the metric evaluator and every record names them.
    method = PTQConfig.preset("best", adaround_iterations=5).tag()
    assert {json.loads(line)["method"] for line in log} == {method}
    # A QAT rate needs a learning_rate argument, which this model has not: refused first.
    beacons = [
        "beacons", *common, "--num_beacons", "1", "--max_new_beacons", "0",
        "--retrain_epochs", "2", "--retrain_in_process", "true", "--budget", "4",
    ]  # fmt: skip
    assert mohaq([*beacons, "--retrain_lr", "0.01"]) == 6
    assert "has no learning_rate init argument" in capsys.readouterr().err
    # Metric settings given again (a search config reused) must be the search's.
    assert mohaq([*beacons, "--metric", ACCURACY, "--granularity", "layer"]) == 6
    assert "granularity: given 'layer', the search's 'operator'" in capsys.readouterr().err
    assert not (run_dir / "beacons").exists()

    assert mohaq(beacons) == 0
    beacon_dirs = sorted((run_dir / "beacons").glob("b*/"))
    assert len(beacon_dirs) == 1 and (beacon_dirs[0] / "weights.ckpt").is_file()
    # The retrained checkpoint holds the converted layers (the user's own
    # training_step trained them under the QAT callback).
    state = torch.load(beacon_dirs[0] / "weights.ckpt", weights_only=False)["state_dict"]
    assert "rnn.layers.0.weight" in state and "rnn.weight_ih_l0" not in state
    continued = [
        json.loads(line)
        for line in (run_dir / "beacon_search" / "evaluations.jsonl").read_text().splitlines()
    ]
    assert continued and {r["method"] for r in continued} == {method}
    used = [r for r in continued if r["evaluator"].startswith("beacon:")]
    # The beacon's own assignment is scored on its retrained weights, by the same
    # metric as the search (1 - accuracy), never worse than its inference-only error.
    assert used, [r["evaluator"] for r in continued]
    for record in used:
        assert 0.0 <= record["error"] <= record["extras"]["beacon_inference_error"] + 1e-9
    assert (run_dir / "beacon_summary.md").is_file()


def test_a_users_model_without_a_metric_is_a_typed_error(
    checkpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = str(tmp_path / "search")
    base = [*CLASSES, "--checkpoint", checkpoint, "--run_dir", run_dir]
    assert mohaq(["search", *base, "--platform", "size"]) == 6
    assert "--metric torchmetrics" in capsys.readouterr().err
    out_dir = str(tmp_path / "export")
    assert mohaq(["export", *CLASSES, "--checkpoint", checkpoint, "--out_dir", out_dir]) == 9
    assert "give exactly one of --bits" in capsys.readouterr().err  # before any work
    assert not Path(out_dir).exists()
    # The acoustic model scores phone error rate: a metric for it is refused.
    assert mohaq(["search", "--checkpoint", checkpoint, "--metric", ACCURACY]) == 6
