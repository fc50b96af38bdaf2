"""The `mohaq` command: LightningCLI with fit, validate, test, cost, search, beacons and export.

Custom subcommands are methods of a Trainer subclass: LightningCLI builds each
subcommand's arguments from the method's signature and takes the help text
from its docstring's first line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger

from mohaq.datamodules.timit import TIMITDataModule
from mohaq.quant.assignment import BitAssignment
from mohaq.system import AcousticSystem


def _requested_assignment(
    system: AcousticSystem, bits: dict[str, int] | None, uniform_bits: int | None
) -> BitAssignment:
    if bits is not None and uniform_bits is not None:
        raise ValueError("give either --bits or --uniform_bits, not both")
    workload = system.workload()
    if uniform_bits is not None:
        assignment = BitAssignment.uniform(workload.names, uniform_bits)
    else:
        assignment = BitAssignment(dict(bits or {}))
    assignment.validate_for(workload)
    return assignment


def _load_for_search(model: AcousticSystem, datamodule: TIMITDataModule, checkpoint: str) -> None:
    """Float weights from ``checkpoint`` (clear error on a mismatch) and the data, before long work."""
    from mohaq.checkpoints import load_model_weights

    load_model_weights(model, checkpoint)
    model.eval()
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")


class MohaqTrainer(pl.Trainer):
    """A Trainer that also costs and searches bit assignments."""

    def cost(
        self,
        model: AcousticSystem,
        datamodule: pl.LightningDataModule | None = None,
        platforms: list[str] | None = None,
        uniform_bits: int | None = 8,
        bits: dict[str, int] | None = None,
    ) -> str:
        """Print the hardware cost of a model configuration (no data or training needed).

        Args:
            model: the model whose quantization points are costed.
            datamodule: unused; present so the data properties link into the model.
            platforms: cost model names or platform YAML files (default: all shipped platforms).
            uniform_bits: every point at this precision (ignored when ``bits`` is given).
            bits: point name -> bits, for a mixed assignment.
        """
        from mohaq.hardware.report import cost_table, default_platforms

        if bits is not None:
            uniform_bits = None
        assignment = _requested_assignment(model, bits, uniform_bits)
        table = cost_table(model.workload(), assignment, platforms or default_platforms())
        print(table)
        return table


    def search(
        self,
        model: AcousticSystem,
        datamodule: TIMITDataModule,
        checkpoint: str,
        platform: str = "silago",
        objectives: list[str] | None = None,
        constraints: dict[str, float] | None = None,
        bit_choices: list[int] | None = None,
        budget: int = 200,
        algorithm: str = "TwoPointsDE-LHS",
        seed: int = 0,
        workers: int = 1,
        run_dir: str = "runs/search",
        resume: bool = False,
        batch_size: int = 16,
        nsga2_population: int = 40,
        nsga2_offspring: int = 10,
        platform_overrides: dict[str, Any] | None = None,
    ) -> Any:
        """Search per-point precisions for the Pareto front of error and hardware cost.

        Args:
            model: the model config; the float weights come from ``checkpoint``.
            datamodule: the data (optimization set for the search, test set for the front).
            checkpoint: the trained float checkpoint.
            platform: a registered platform name or a platform YAML file.
            objectives: "error" plus the platform's cost metrics (default: error, speedup).
            constraints: e.g. {"max_error": 0.24, "max_memory_mb": 2}.
            bit_choices: precisions to search (default: 2/4/8/16 that the platform allows).
            budget: distinct evaluations, uniform baselines included.
            algorithm: the search optimizer: "TwoPointsDE-LHS", "nsga2" (MOHAQ's
                setting), "RandomSearch" or any nevergrad optimizer name (the name
                `--optimizer` belongs to LightningCLI's training optimizer).
            seed: random seed of the optimizer.
            workers: evaluations in flight; > 1 uses worker processes.
            run_dir: where evaluations, the front, plots and the summary go.
            resume: continue an interrupted run in ``run_dir``.
            batch_size: utterances per batch when scoring a candidate.
            nsga2_population: NSGA-II population (MOHAQ: 40).
            nsga2_offspring: NSGA-II offspring per generation (MOHAQ: 10).
            platform_overrides: constants of the platform to override.
        """
        from mohaq.search import run_search

        _load_for_search(model, datamodule, checkpoint)
        logger = self.logger if isinstance(self.logger, TensorBoardLogger) else None
        result = run_search(
            system=model,
            datamodule=datamodule,
            platform=platform,
            objectives=tuple(objectives or ("error", "speedup")),
            constraints=constraints,
            bit_choices=bit_choices,
            budget=budget,
            optimizer=algorithm,
            seed=seed,
            workers=workers,
            run_dir=run_dir,
            resume=resume,
            checkpoint_path=checkpoint,
            logger=logger,
            batch_size=batch_size,
            platform_overrides=platform_overrides,
            nsga2_population=nsga2_population,
            nsga2_offspring=nsga2_offspring,
        )
        print(f"search report: {Path(run_dir).resolve() / 'summary.md'}")
        return result


    def beacons(
        self,
        model: AcousticSystem,
        datamodule: TIMITDataModule,
        checkpoint: str,
        search_run_dir: str = "runs/search",
        platform: str = "silago",
        objectives: list[str] | None = None,
        constraints: dict[str, float] | None = None,
        num_beacons: int = 4,
        distance_threshold: float = 5.0,
        retrain_epochs: int = 3,
        retrain_lr: float | None = None,
        budget: int = 100,
        devices: int | None = None,
        promising_max_error: float | None = None,
        max_new_beacons: int = 2,
        max_attempts: int = 2,
        ddp_devices: int = 1,
        bit_choices: list[int] | None = None,
        algorithm: str = "TwoPointsDE-LHS",
        seed: int = 0,
        resume: bool = False,
        batch_size: int = 16,
        platform_overrides: dict[str, Any] | None = None,
    ) -> Any:
        """Refine a search with retrained beacons (MOHAQ's beacon-based stage).

        Args:
            model: the model config; the float weights come from ``checkpoint``.
            datamodule: the data of the inference-only search.
            checkpoint: the trained float checkpoint the beacons are retrained from.
            search_run_dir: the run directory of the inference-only ``mohaq search``.
            platform: the search's platform name or YAML file.
            objectives: the search's objectives (default: error, speedup).
            constraints: the search's constraints.
            num_beacons: beacons selected from the inference-only evaluations.
            distance_threshold: L1 distance in precision levels (2, 4, 8, 16 -> 2..5)
                within which a candidate is scored with a beacon's weights (MOHAQ: 5-6).
            retrain_epochs: QAT epochs per beacon (MOHAQ: 20 on TIMIT).
            retrain_lr: QAT learning rate (default: a tenth of the model's).
            budget: evaluations of the continued, beacon-aware search.
            devices: beacons retrained at once, one process each (one per GPU on GPUs).
            promising_max_error: a candidate above this error never gets a beacon.
            max_new_beacons: beacons the continued search may add.
            max_attempts: tries per beacon before it is recorded as failed.
            ddp_devices: devices of one beacon's DDP retraining (its own process).
            bit_choices: the search's bit choices.
            algorithm: the continued search's optimizer.
            seed: random seed.
            resume: reuse finished beacons and evaluations after a crash.
            batch_size: utterances per batch when scoring.
            platform_overrides: constants of the platform to override.
        """
        from mohaq.search.beacon_stage import run_beacon_search

        _load_for_search(model, datamodule, checkpoint)
        result = run_beacon_search(
            system=model,
            datamodule=datamodule,
            checkpoint_path=checkpoint,
            search_run_dir=search_run_dir,
            platform=platform,
            objectives=tuple(objectives or ("error", "speedup")),
            constraints=constraints,
            num_beacons=num_beacons,
            distance_threshold=distance_threshold,
            retrain_epochs=retrain_epochs,
            retrain_lr=retrain_lr,
            budget=budget,
            devices=devices,
            promising_max_error=promising_max_error,
            max_new_beacons=max_new_beacons,
            max_attempts=max_attempts,
            ddp_devices=ddp_devices,
            bit_choices=bit_choices,
            optimizer=algorithm,
            seed=seed,
            resume=resume,
            batch_size=batch_size,
            platform_overrides=platform_overrides,
        )
        print(f"beacon report: {Path(search_run_dir).resolve()}")
        return result


    # -- integer export and scoring what ships ------------------------------------------
    def export(
        self,
        model: AcousticSystem,
        datamodule: TIMITDataModule,
        checkpoint: str,
        out_dir: str = "exports/model",
        bits: dict[str, int] | None = None,
        uniform_bits: int | None = None,
        run_dir: str | None = None,
        index: int | None = None,
        fixed_bits: int = 16,
        recalibrate: bool = False,
        onnx: bool = True,
        rounding: Literal["single", "gemmlowp"] = "single",
    ) -> Any:
        """Export a checkpoint at a bit assignment as an integer model (safetensors, ONNX QDQ).

        Args:
            model: the model config; the weights come from ``checkpoint``.
            datamodule: the data (its optimization set calibrates the activations).
            checkpoint: the trained checkpoint (float, QAT or a beacon's).
            out_dir: where model.safetensors, manifest.json and model.onnx go.
            bits: point name -> bits, every point.
            uniform_bits: every point at this precision.
            run_dir: a search run directory; with ``index``, export that record's bits.
            index: the record's index in ``run_dir/evaluations.jsonl``.
            fixed_bits: precision of biases, recurrent vectors and states (MOHAQ: 16).
            recalibrate: calibrate even when the checkpoint carries calibration.
            onnx: also write the ONNX QDQ model.
            rounding: int32 requantization: "single" (one rounding, as the fake
                quantizer) or "gemmlowp" (high multiply then shift, two roundings).
        """
        from mohaq.export.command import run_export

        return run_export(
            model, datamodule, checkpoint=checkpoint, out_dir=out_dir, bits=bits,
            uniform_bits=uniform_bits, run_dir=run_dir, index=index, fixed_bits=fixed_bits,
            recalibrate=recalibrate, onnx=onnx, rounding=rounding,
        )  # fmt: skip

    def test(
        self,
        model: pl.LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | Path | None = None,
        verbose: bool = True,
        datamodule: pl.LightningDataModule | None = None,
        weights_only: bool | None = None,
        exported: str | None = None,
        engine: Literal["integer", "onnx"] = "integer",
        split: Literal["test", "dev", "optimization", "train"] = "test",
    ) -> Any:
        """Score the model on the test set, another split, or an exported integer/ONNX model.

        Args:
            model: the model to score.
            dataloaders: Lightning's test dataloaders (instead of a DataModule).
            ckpt_path: checkpoint to load (not with ``exported``).
            verbose: print the results.
            datamodule: the data.
            weights_only: Lightning's checkpoint loading option.
            exported: an export directory (or its model.safetensors / model.onnx):
                score what would ship instead of the fake-quantized model.
            engine: "integer" (integer-only reference inference) or "onnx" (onnxruntime).
            split: the data split scored: test, dev, optimization or train.
        """
        if exported is not None or split != "test":
            from mohaq.export.scoring import prepare_test

            datamodule = prepare_test(
                model, datamodule, exported=exported, engine=engine, split=split,
                ckpt_path=ckpt_path, callbacks=self.callbacks,
            )  # fmt: skip
        return super().test(model, dataloaders, ckpt_path, verbose, datamodule, weights_only)


class MohaqCLI(LightningCLI):
    """LightningCLI wired for the toolkit: data properties linked into the model."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = LightningCLI.subcommands()
        commands.pop("predict", None)
        commands["cost"] = {"model", "datamodule"}
        commands["search"] = {"model", "datamodule"}
        commands["beacons"] = {"model", "datamodule"}
        commands["export"] = {"model", "datamodule"}
        return commands

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data decides these; linking them keeps a config from contradicting it.
        parser.link_arguments("data.num_features", "model.num_features", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.scoring_map", "model.scoring_map", apply_on="instantiate")


def build_cli(args: Sequence[str] | None = None) -> MohaqCLI:
    """Parses ``args`` (default: the command line) and runs the subcommand."""
    return MohaqCLI(
        AcousticSystem,
        TIMITDataModule,
        trainer_class=MohaqTrainer,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {
                "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "runs", "name": "mohaq"},
            },
        },
        args=list(args) if args is not None else None,
    )


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the `mohaq` console command."""
    build_cli(args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
