"""`mohaq search` and `mohaq cost` on a user's own LightningModule and
DataModule, given by ``class_path`` (issue 17): a tiny GRU classifier."""

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


def test_a_users_model_without_a_metric_or_in_beacons_is_a_typed_error(
    checkpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = str(tmp_path / "search")
    base = [*CLASSES, "--checkpoint", checkpoint, "--run_dir", run_dir]
    assert mohaq(["search", *base, "--platform", "size"]) == 6
    assert "--metric torchmetrics" in capsys.readouterr().err
    assert mohaq(["beacons", *base]) == 6
    assert "works on an AcousticSystem" in capsys.readouterr().err
    out_dir = str(tmp_path / "export")
    assert mohaq(["export", *CLASSES, "--checkpoint", checkpoint, "--out_dir", out_dir]) == 9
    assert "works on an AcousticSystem" in capsys.readouterr().err
    # The acoustic model scores phone error rate: a metric for it is refused.
    assert mohaq(["search", "--checkpoint", checkpoint, "--metric", ACCURACY]) == 6
