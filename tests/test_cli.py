"""The `mohaq` LightningCLI end to end on a tiny LDC-layout corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_args import QUICKSTART, tiny_quickstart_args
from test_timit_corpus import write_small_corpus

from mohaq.cli import build_cli as main
from mohaq.search.lock import RunLock
from mohaq.search.records import ResumeError
from mohaq.system import BIT_ASSIGNMENT_KEY


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_small_corpus(tmp_path / "corpus", seconds=0.4)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_fit_links_data_properties_and_writes_checkpoints(workdir: Path) -> None:
    cli = main(
        [
            "fit",
            *tiny_quickstart_args(workdir),
            "--trainer.max_epochs",
            "1",
            "--data.num_mel_bins",
            "40",
        ]
    )
    # The data decides the model's input and output sizes.
    assert cli.model.hparams.num_features == 40 and cli.model.hparams.num_classes == 48
    best = workdir / "runs" / "quickstart" / "checkpoints" / "best.ckpt"
    assert best.is_file()
    assert any((workdir / "runs" / "quickstart" / "fit").rglob("events.out.tfevents.*"))
    # hp_metric (TensorBoard's HParams view) is the validation PER, not Lightning's -1.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(workdir / "runs" / "quickstart" / "fit" / "version_0"))
    events.Reload()
    per = float(cli.trainer.callback_metrics["val/per"])
    assert events.Scalars("hp_metric")[-1].value == pytest.approx(per)
    # A fit to another place: checkpoints beside its logs; the first run is untouched.
    main(["fit", *tiny_quickstart_args(workdir), "--trainer.max_epochs", "1",
          "--trainer.logger.save_dir", str(workdir / "runs" / "other")])  # fmt: skip
    assert (workdir / "runs" / "other" / "checkpoints" / "best.ckpt").is_file()
    assert not list((workdir / "runs" / "quickstart" / "checkpoints").glob("best-v*.ckpt"))


def test_test_with_the_qat_callback_quantizes_post_training(workdir: Path) -> None:
    main(["fit", *tiny_quickstart_args(workdir), "--trainer.max_epochs", "1"])
    checkpoint = workdir / "runs" / "quickstart" / "checkpoints" / "best.ckpt"
    cli = main([
        "test", *tiny_quickstart_args(workdir), "--ckpt_path", str(checkpoint),
        "--trainer.callbacks+=mohaq.callbacks.qat.QuantizationAwareTraining",
        "--trainer.callbacks.uniform_bits", "4",
    ])  # fmt: skip
    assert set(cli.model.bit_assignment.bits.values()) == {4}
    assert len(cli.model.bit_assignment) == len(cli.model.workload().points)
    assert "test/per" in cli.trainer.callback_metrics
    assert torch.load(checkpoint, weights_only=False)[BIT_ASSIGNMENT_KEY] == {}
    # The scoring run logs under its own name, beside the fit's.
    runs = workdir / "runs" / "quickstart"
    assert any((runs / "test").rglob("events.out.tfevents.*"))
    assert [p.name for p in (runs / "fit").iterdir()] == ["version_0"]


def test_bad_config_value_is_reported_before_work(
    workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit):
        main(["fit", *tiny_quickstart_args(workdir), "--model.cell", "transformer"])
    assert "transformer" in capsys.readouterr().err


def test_search_subcommand_writes_the_report_and_rejects_a_mismatched_checkpoint(
    workdir: Path,
) -> None:
    from mohaq.checkpoints import CheckpointMismatchError

    main(["fit", *tiny_quickstart_args(workdir), "--trainer.max_epochs", "1"])
    checkpoint = str(workdir / "runs" / "quickstart" / "checkpoints" / "best.ckpt")
    search = [
        "search", *tiny_quickstart_args(workdir), "--checkpoint", checkpoint, "--platform", "bitfusion-mohaq",
        "--budget", "7", "--run_dir", str(workdir / "search"), "--batch_size", "4",
    ]  # fmt: skip
    main([*search, "--algorithm", "NSGA2", "--algorithm.population", "5"])
    for name in ("evaluations.jsonl", "pareto.csv", "pareto.png", "summary.md"):
        assert (workdir / "search" / name).is_file(), name
    assert len((workdir / "search" / "evaluations.jsonl").read_text().splitlines()) == 7
    stored = json.loads((workdir / "search" / "search_settings.json").read_text())
    assert stored["settings"]["algorithm"] == {
        "name": "nsga2",
        "options": {
            "population": 5, "offspring": 10, "crossover_probability": 0.9,
            "crossover_eta": 15.0, "mutation_eta": 20.0,
        },
    }  # fmt: skip
    assert (
        stored["checkpoint"] == checkpoint and stored["settings"]["platform"] == "bitfusion-mohaq"
    )
    with pytest.raises(CheckpointMismatchError, match="hidden_size: checkpoint 8, config 12"):
        main([*search, "--model.hidden_size", "12", "--run_dir", str(workdir / "other")])
    assert not (workdir / "other").exists()


def test_surrogate_search_records_its_probes_and_fidelities(workdir: Path) -> None:
    """The README's `mohaq search --algorithm surrogate --racing true` on a tiny quickstart."""
    main(["fit", *tiny_quickstart_args(workdir), "--trainer.max_epochs", "1"])
    checkpoint = str(workdir / "runs" / "quickstart" / "checkpoints" / "best.ckpt")
    run_dir = workdir / "search"
    main([
        "search", *tiny_quickstart_args(workdir), "--checkpoint", checkpoint, "--platform", "bitfusion",
        "--objectives", "[error, speedup]", "--constraints", "{}", "--budget", "30",
        "--run_dir", str(run_dir), "--batch_size", "4", "--rescore_test", "false",
        "--algorithm", "surrogate", "--racing", "true",
    ])  # fmt: skip
    records = [
        json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()
    ]
    assert len(records) == 30 and all("fidelity" in r for r in records)
    genes = [r["genes"] for r in records if r["origin"] == "optimizer"]
    points = len(genes[0])
    top = max(max(g) for g in genes)
    # The probes first: each point lowered alone to each of the two lowest choices.
    probes = genes[: 2 * points]
    assert all(sum(g != top for g in probe) == 1 for probe in probes)
    assert {(probe.index(min(probe)), min(probe)) for probe in probes} == {
        (point, choice) for point in range(points) for choice in (0, 1)
    }
    stored = json.loads((run_dir / "search_settings.json").read_text())
    assert stored["settings"]["algorithm"]["name"] == "surrogate"
    assert stored["settings"]["racing"] is True


def test_beacons_subcommand_continues_the_stored_search(
    workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    from mohaq.beacons import BeaconsFailedError
    from mohaq.search import SearchConfigError

    main(["fit", *tiny_quickstart_args(workdir), "--trainer.max_epochs", "1"])
    checkpoint = str(workdir / "runs" / "quickstart" / "checkpoints" / "best.ckpt")
    run_dir = str(workdir / "search")
    main([
        "search", *tiny_quickstart_args(workdir), "--checkpoint", checkpoint, "--platform", "bitfusion-mohaq",
        "--budget", "6", "--run_dir", run_dir, "--batch_size", "4", "--rescore_test", "false",
    ])  # fmt: skip
    beacons = [
        "beacons", *tiny_quickstart_args(workdir), "--run_dir", run_dir, "--budget", "6",
        "--num_beacons", "1", "--retrain_epochs", "1", "--retrain_in_process", "true",
        "--max_new_beacons", "0", "--accelerator", "cpu", "--rescore_test", "false",
        "--retrain_trainer_kwargs", "{limit_train_batches: 1, limit_val_batches: 1}",
    ]  # fmt: skip
    # A value that contradicts the search is refused before any retraining, naming both.
    with pytest.raises(
        SearchConfigError, match="platform: search 'bitfusion-mohaq', given 'silago'"
    ):
        main([*beacons, "--platform", "silago"])
    assert not (workdir / "search" / "beacons").exists()
    # The checkpoint, platform and objectives come from the search. A retraining
    # that diverges is a failed attempt; --strict makes a beacon that failed for
    # good an error, after the reports are written.
    diverging = [
        "--retrain_lr", "1e12", "--max_attempts", "1", "--strict", "true",
        "--retrain_trainer_kwargs", "{limit_train_batches: 2, limit_val_batches: 1}",
    ]  # fmt: skip
    with pytest.raises(
        BeaconsFailedError, match="b000 failed after 1 attempt.*TrainingDivergedError"
    ):
        main([*beacons, *diverging])
    assert "WARNING: 1 of 1 beacons were not retrained" in capsys.readouterr().out
    summary = (workdir / "search" / "beacon_summary.md").read_text()
    assert "## Beacons that were not retrained" in summary and "training diverged" in summary
    search_summary = (workdir / "search" / "beacon_search" / "summary.md").read_text()
    assert "## Warnings" in search_summary and "beacon b000 failed" in search_summary
    assert (
        len((workdir / "search" / "beacon_search" / "evaluations.jsonl").read_text().splitlines())
        == 6
    )
    # A fresh start would mix with the stored stage: refused. Resuming with one
    # more attempt and a sane rate retrains the beacon.
    with pytest.raises(ResumeError, match="already holds a beacon stage.*--resume true"):
        main(beacons)
    main([*beacons, "--resume", "true", "--max_attempts", "2", "--strict", "true"])
    summary = (workdir / "search" / "beacon_summary.md").read_text()
    assert "b000" in summary and "not retrained" not in summary


def test_a_diverging_fit_fails_and_saves_no_checkpoint(workdir: Path) -> None:
    from mohaq.callbacks.divergence import TrainingDivergedError

    with pytest.raises(TrainingDivergedError, match="training diverged at epoch 0, step 1"):
        main(["fit", *tiny_quickstart_args(workdir), "--trainer.max_epochs", "1", "--model.learning_rate", "1e12"])  # fmt: skip
    assert not list((workdir / "runs" / "quickstart").rglob("*.ckpt"))


def test_a_run_directory_in_use_exits_non_zero_naming_the_holder(tmp_path: Path) -> None:
    """The `mohaq` console script, in its own process, on a directory this test holds."""
    run_dir = tmp_path / "search"
    command = [
        sys.executable, "-c", "import sys; from mohaq.cli import main; sys.exit(main())",
        "search", "-c", QUICKSTART, "--checkpoint", "never-loaded.ckpt", "--run_dir", str(run_dir),
    ]  # fmt: skip
    with RunLock(run_dir, "mohaq search"):
        completed = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
    assert completed.returncode == 7  # a run directory error (mohaq.cli_errors)
    assert "RunDirectoryInUseError" in completed.stderr and "Traceback" not in completed.stderr
    assert f"in use by mohaq search (pid {os.getpid()} on host" in completed.stderr


def test_search_options_come_typed_from_the_settings_dataclasses() -> None:
    from jsonargparse import ArgumentParser

    from mohaq.cli import MohaqTrainer
    from mohaq.search import NSGA2, SearchSettings, Submitit
    from mohaq.search.settings import split_settings

    parser = ArgumentParser(exit_on_error=False)
    parser.add_method_arguments(MohaqTrainer, "search", skip={"model", "datamodule"})
    config = parser.parse_args([
        "--checkpoint", "c.ckpt", "--budget", "12", "--constraints", "{max_memory_mb: 2}",
        "--algorithm", "NSGA2", "--algorithm.population", "20",
        "--workers", "4", "--executor", "Submitit", "--executor.cluster", "local",
        "--executor.parameters", "{timeout_min: 5}",
    ])  # fmt: skip
    values = parser.instantiate_classes(config).as_dict()
    settings = SearchSettings(**split_settings(values, SearchSettings))
    assert settings.algorithm == NSGA2(population=20) and settings.budget == 12
    assert settings.executor == Submitit(cluster="local", parameters={"timeout_min": 5})
    assert settings.constraints == {"max_memory_mb": 2.0} and values["checkpoint"] == "c.ckpt"
    with pytest.raises(Exception, match="budget"):
        parser.parse_args(["--checkpoint", "c", "--budget", "many"])
