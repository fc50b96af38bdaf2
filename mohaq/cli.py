"""The `mohaq` command: LightningCLI with fit, validate, test, cost, search, beacons and export.

:func:`main` turns the toolkit's typed errors into one or two lines on stderr
and an exit status per kind (:mod:`mohaq.cli_errors`); ``--debug`` or
``MOHAQ_DEBUG=1`` shows the traceback. The help shows each command's own
options first (:mod:`mohaq.cli_help`).

Where a run writes: a checkpoint callback without ``dirpath`` writes into
``<run root>/checkpoints``, the run root being the TensorBoard logger's
``save_dir`` (``--trainer.logger.save_dir runs/synth``); ``mohaq validate``
and ``mohaq test`` log to TensorBoard under their own name beside the fit's
(``runs/quickstart/test``); a search logs into its run directory
(``<run_dir>/tensorboard``).

The model and the data are any LightningModule and LightningDataModule by
``class_path`` (jsonargparse subclass mode); a config without one describes
the toolkit's AcousticSystem and TIMITDataModule, as every shipped config
does. ``search`` and ``cost`` convert a model that is not an AcousticSystem
(:func:`mohaq.convert.make_quantizable`) and ``search`` scores it with the
torchmetrics metric of :class:`~mohaq.search.model_search.MetricSettings`;
``beacons`` continues such a search with the same metric and conversion
(:mod:`mohaq.beacons.converted`), and ``export`` writes its quantized layers
(:mod:`mohaq.export.converted`).

Custom subcommands are methods of a Trainer subclass: LightningCLI builds each
subcommand's arguments from the method's signature and takes the help text
from its docstring's first line. ``search`` and ``beacons`` take their
settings from the :class:`~mohaq.search.settings.SearchSettings` and
:class:`~mohaq.beacons.settings.BeaconSettings` dataclasses, field by field
(:func:`~mohaq.search.settings.takes_settings`).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from jsonargparse import Namespace
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from mohaq.beacons import BeaconConfigError, BeaconSettings, beacon_search_settings
from mohaq.callbacks.divergence import DivergenceDetector
from mohaq.checkpoints import require_checkpoint_file
from mohaq.cli_errors import run_command
from mohaq.cli_help import (
    DEFAULT_CLASSES,
    LINKED_DATA_PROPERTIES,
    MohaqArgumentParser,
    main_parser_kwargs,
    subcommand_parser_kwargs,
)
from mohaq.console import show_progress_lines
from mohaq.quant.assignment import BitAssignment, BitAssignmentError
from mohaq.quant.points import Workload
from mohaq.search.lock import ensure_free
from mohaq.search.model_search import MetricSettings
from mohaq.search.settings import (
    SearchConfigError,
    SearchSettings,
    split_settings,
    takes_settings,
)
from mohaq.system import AcousticSystem


def _requested_assignment(
    workload: Workload, bits: dict[str, int] | None, uniform_bits: int | None
) -> BitAssignment:
    if bits is not None and uniform_bits is not None:
        raise BitAssignmentError("give either --bits or --uniform_bits, not both")
    if uniform_bits is not None:
        assignment = BitAssignment.uniform(workload.names, uniform_bits)
    else:
        assignment = BitAssignment(dict(bits or {}))
    assignment.validate_for(workload)
    return assignment


def _load_for_search(
    model: pl.LightningModule, datamodule: pl.LightningDataModule, checkpoint: str
) -> None:
    """Float weights from ``checkpoint`` (clear error on a mismatch) and the data, before long work."""
    from mohaq.checkpoints import load_model_weights

    load_model_weights(model, checkpoint)
    model.eval()
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")


# Lightning's checkpoint shortcuts for ckpt_path (not files).
_CKPT_SHORTCUTS = frozenset({"best", "last", "hpc", "registry"})


def _check_ckpt_path(ckpt_path: str | Path | None) -> None:
    """A ckpt_path naming a missing file fails before any work, naming the file."""
    if ckpt_path is None or str(ckpt_path) in _CKPT_SHORTCUTS:
        return
    if str(ckpt_path).startswith("registry:") or "://" in str(ckpt_path):
        return
    require_checkpoint_file(ckpt_path)


def _lightning_signature(method: Any, name: str) -> Any:
    """Gives ``method`` the signature and type hints of ``pl.Trainer.<name>``, so
    LightningCLI builds the same options while the docstring is ours."""
    original = getattr(pl.Trainer, name)
    method.__signature__ = inspect.signature(original)
    method.__annotations__ = dict(getattr(original, "__annotations__", {}))
    return method


class MohaqTrainer(pl.Trainer):
    """A Trainer that also costs and searches bit assignments."""

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        """Train the model: float, or QAT with the QAT callback.

        Args:
            model: the model to train.
            train_dataloaders: Lightning's training dataloaders (instead of a DataModule).
            val_dataloaders: Lightning's validation dataloaders.
            datamodule: the data.
            ckpt_path: a checkpoint to resume training from (its trainer state too).
            weights_only: Lightning's checkpoint loading option.
        """
        _check_ckpt_path(kwargs.get("ckpt_path"))
        return super().fit(*args, **kwargs)

    _lightning_signature(fit, "fit")

    def validate(self, *args: Any, **kwargs: Any) -> Any:
        """Score a checkpoint on the validation (dev) set.

        Args:
            model: the model to score.
            dataloaders: Lightning's validation dataloaders (instead of a DataModule).
            ckpt_path: the checkpoint to score.
            verbose: print the results.
            datamodule: the data.
            weights_only: Lightning's checkpoint loading option.
        """
        _check_ckpt_path(kwargs.get("ckpt_path"))
        return super().validate(*args, **kwargs)

    _lightning_signature(validate, "validate")

    def cost(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule | None = None,
        platforms: list[str] | None = None,
        uniform_bits: int | None = 8,
        bits: dict[str, int] | None = None,
        granularity: Literal["layer", "operator"] | None = None,
    ) -> str:
        """Print a model's hardware cost (no data or training).

        Args:
            model: the model whose quantization points are costed (an AcousticSystem,
                or any LightningModule, converted by mohaq.convert.make_quantizable).
            datamodule: unused; present so the data properties link into the model.
            platforms: cost model names or platform YAML files (default: all shipped platforms).
            uniform_bits: every point at this precision (ignored when ``bits`` is given).
            bits: point name -> bits, for a mixed assignment.
            granularity: points of a converted model's GRU/LSTM layers: layer
                (the default) or operator; an AcousticSystem has ``--model.granularity``.
        """
        from mohaq.convert.model_api import workload_of
        from mohaq.hardware.report import cost_table, default_platforms

        if bits is not None:
            uniform_bits = None
        if isinstance(model, AcousticSystem):
            if granularity is not None:
                from mohaq.convert import ConversionError

                raise ConversionError(
                    "--granularity applies to a model that mohaq converts; an AcousticSystem "
                    "sets its own (--model.granularity layer|operator)"
                )
        else:
            from mohaq.convert import make_quantizable

            model = make_quantizable(model, granularity=granularity or "layer")
        workload = workload_of(model)
        assignment = _requested_assignment(workload, bits, uniform_bits)
        table = cost_table(workload, assignment, platforms or default_platforms())
        print(table)
        return table

    @takes_settings(SearchSettings, MetricSettings)
    def search(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        checkpoint: str,
        resume: bool = False,
        truncate_damaged: bool = False,
        **settings: Any,
    ) -> Any:
        """Search per-point precisions: front of error vs cost.

        The inference-only stage of MOHAQ: post-training quantization of the
        float checkpoint, scored on the optimization set, priced by the platform.

        Any LightningModule: an AcousticSystem scores phone error rate; another
        model (``--model.class_path``) is converted (``granularity``) and scored
        by the torchmetrics ``metric`` on the DataModule's optimization split.

        Args:
            model: the model config; the float weights come from ``checkpoint``.
            datamodule: the data (optimization set for the search, test set for the front).
            checkpoint: the trained float checkpoint.
            resume: continue an interrupted run in ``run_dir``.
            truncate_damaged: with resume, move a damaged part of the evaluation log
                aside and evaluate it again (otherwise a damaged log stops the run).
        """
        from mohaq.search import search_model
        from mohaq.search.model_search import search_converted_model
        from mohaq.search.run import default_callbacks

        search_settings = SearchSettings(**split_settings(settings, SearchSettings))
        metric_settings = MetricSettings(**split_settings(settings, MetricSettings))
        acoustic = isinstance(model, AcousticSystem)
        if acoustic and metric_settings.given():
            raise SearchConfigError(
                "an AcousticSystem search scores phone error rate with its own granularity; "
                "metric, metric_args, metric_higher_is_better, granularity and "
                "validation_subset apply to other models"
            )
        ensure_free(search_settings.run_dir)  # before the long loading
        _load_for_search(model, datamodule, checkpoint)
        common = {
            "checkpoint": checkpoint,
            "resume": resume,
            "callbacks": default_callbacks(),  # TensorBoard in <run_dir>/tensorboard
            "truncate_damaged": truncate_damaged,
        }
        if acoustic:
            result = search_model(search_settings, system=model, datamodule=datamodule, **common)
        else:
            result = search_converted_model(
                search_settings, metric_settings, module=model, datamodule=datamodule, **common
            )
        print(f"search report: {Path(search_settings.run_dir).resolve() / 'summary.md'}")
        return result

    @takes_settings(SearchSettings, BeaconSettings, MetricSettings, optional=(True, False, True))
    def beacons(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        checkpoint: str | None = None,
        resume: bool = False,
        truncate_damaged: bool = False,
        strict: bool = False,
        **settings: Any,
    ) -> Any:
        """Refine a search's front with retrained beacons.

        MOHAQ's beacon-based stage.

        The platform, objectives, constraints and bit choices are the search's
        (read from ``run_dir``); a value given here must agree with them. Other
        search settings (budget, algorithm, seed, batch_size) set the continued search.

        Args:
            model: the model config; the float weights come from the search's checkpoint.
            datamodule: the data of the inference-only search.
            checkpoint: the float checkpoint (default: the one the search scored).
            resume: reuse finished beacons and evaluations after a crash; retrain
                interrupted beacons.
            truncate_damaged: with resume, move a damaged part of the beacon-aware
                search's log aside and evaluate it again.
            strict: fail (non-zero exit) when a beacon was not retrained in the end.
        """
        from mohaq.beacons import run_beacon_stage
        from mohaq.beacons.converted import check_converted_stage, converted_model_parts

        overrides = split_settings(settings, SearchSettings)
        beacon_settings = BeaconSettings(**split_settings(settings, BeaconSettings))
        # Metric settings given here (a search config reused) must be the search's.
        metric_given = {
            k: v for k, v in split_settings(settings, MetricSettings).items() if v is not None
        }
        run_dir = overrides.pop("run_dir", None) or SearchSettings.run_dir
        # refuse contradictions first
        stored, continued = beacon_search_settings(run_dir, overrides)
        ensure_free(run_dir)
        checkpoint = checkpoint or stored.checkpoint
        if checkpoint is None:
            raise BeaconConfigError(
                f"the search in {run_dir} stored no checkpoint; give --checkpoint"
            )
        acoustic = isinstance(model, AcousticSystem)
        # Before the long loading: the run must be one of this kind of model.
        if acoustic:
            from mohaq.search.model_search import stored_metric_settings

            if stored_metric_settings(run_dir) is not None:
                raise BeaconConfigError(
                    f"the search in {run_dir} scored a converted model with a metric, not an "
                    "AcousticSystem: give that model (--model.class_path) and its data"
                )
            if metric_given:
                raise BeaconConfigError(
                    f"{', '.join(sorted(metric_given))}: an AcousticSystem's beacon stage scores "
                    "phone error rate; these settings apply to other models"
                )
        else:
            check_converted_stage(run_dir, model, beacon_settings, metric_given)
        _load_for_search(model, datamodule, checkpoint)
        parts = None
        if not acoustic:
            # A user's model: converted, scored and retrained as its search did.
            parts = converted_model_parts(
                run_dir, module=model, datamodule=datamodule, checkpoint=checkpoint,
                settings=continued, beacon=beacon_settings, metric_given=metric_given,
            )  # fmt: skip
        result = run_beacon_stage(
            run_dir,
            beacon_settings,
            search_overrides=overrides,
            system=model if parts is None else None,
            datamodule=datamodule,
            checkpoint=checkpoint,
            parts=parts,
            resume=resume,
            callbacks=None,  # progress, TensorBoard in <run_dir>/beacon_search, reports
            truncate_damaged=truncate_damaged,
        )
        print(f"beacon report: {Path(run_dir).resolve() / 'beacon_summary.md'}")
        failed = result.failed_beacons
        if failed:
            from mohaq.beacons.report import beacon_problems

            print(f"WARNING: {len(failed)} of {len(result.beacons)} beacons were not retrained:")
            for line in beacon_problems(failed):
                print(f"  - {line}")
        if strict:
            result.raise_for_failures()
        return result

    # -- integer export and scoring what ships ------------------------------------------
    def export(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule,
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
        granularity: Literal["layer", "operator"] | None = None,
    ) -> Any:
        """Export an integer model (safetensors, ONNX QDQ).

        A checkpoint at a bit assignment, written as packed integer tensors.
        An AcousticSystem becomes an integer-only program (and ONNX QDQ); any
        other LightningModule is converted as its search converted it and its
        quantized layers are written (mohaq.export.converted).

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
            granularity: points of a converted model's GRU/LSTM layers (default:
                its search's, else layer); an AcousticSystem has ``--model.granularity``.
        """
        from mohaq.export.command import run_export
        from mohaq.export.program import ExportError

        if not isinstance(model, AcousticSystem):
            from mohaq.export.converted_command import run_converted_export

            if onnx:
                print(
                    f"ONNX: not written for {type(model).__name__} (its forward is its own code, "
                    "not a layer sequence mohaq lowers); the quantized layers go to "
                    "model.safetensors"
                )
            return run_converted_export(
                model, datamodule, checkpoint=checkpoint, out_dir=out_dir, bits=bits,
                uniform_bits=uniform_bits, run_dir=run_dir, index=index, fixed_bits=fixed_bits,
                granularity=granularity,
            )  # fmt: skip
        if granularity is not None:
            raise ExportError(
                "--granularity applies to a model that mohaq converts; an AcousticSystem "
                "sets its own (--model.granularity layer|operator)"
            )
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
        """Score a checkpoint or an exported model on a split.

        The test set by default; ``--split`` picks another; ``--exported`` scores
        an exported integer or ONNX model instead of the fake-quantized one.

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
        if exported is None:
            _check_ckpt_path(ckpt_path)
        if exported is not None or split != "test":
            from mohaq.export.scoring import prepare_test

            datamodule = prepare_test(
                model, datamodule, exported=exported, engine=engine, split=split,
                ckpt_path=ckpt_path, callbacks=self.callbacks,
            )  # fmt: skip
        return super().test(model, dataloaders, ckpt_path, verbose, datamodule, weights_only)


#: ``--print_config`` values given as a separate token.
_PRINT_CONFIG_FLAGS = {"skip_default", "skip_null", "comments"}


def _without_print_config(args: list[str]) -> list[str]:
    kept: list[str] = []
    skip_value = False
    for token in args:
        if skip_value and token.split(",")[0] in _PRINT_CONFIG_FLAGS:
            skip_value = False
            continue
        skip_value = token == "--print_config"
        if not (skip_value or token.startswith("--print_config=")):
            kept.append(token)
    return kept


def _same_class(path: str, other: str) -> bool:
    """Whether two import paths name one class (jsonargparse shortens paths:
    ``mohaq.datamodules.TIMITDataModule``)."""
    from mohaq.search.evaluators import import_object

    return path == other or import_object(path) is import_object(other)


class MohaqCLI(LightningCLI):
    """LightningCLI wired for the toolkit: data properties linked into the model.

    The model and the data are any LightningModule and LightningDataModule by
    ``class_path`` (``--model.class_path mohaq.tasks.keyword_spotting.KeywordSpotter``
    or ``model: {class_path: ..., init_args: ...}``); a config without one
    describes an AcousticSystem and a TIMITDataModule (:data:`DEFAULT_CLASSES`).
    """

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
        parser.set_defaults({key: {"class_path": path} for key, path in DEFAULT_CLASSES.items()})
        # The data decides these; linking them keeps a config from contradicting it.
        for name in LINKED_DATA_PROPERTIES:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        # Always on (``--divergence.max_loss_ratio`` tunes it): a diverging fit
        # stops with TrainingDivergedError before any checkpoint of it is saved.
        parser.add_lightning_class_args(DivergenceDetector, "divergence")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parses twice when the model or the data is not the default class:
        jsonargparse keeps the default class's defaults that the chosen class
        also takes (an AcousticSystem's ``hidden_size`` in a user's model), so
        the second parse starts from the chosen classes' own defaults."""
        if isinstance(args, dict | Namespace):
            return super().parse_arguments(parser, args)
        argv = list(sys.argv[1:] if args is None else args)
        first = parser.parse_args(_without_print_config(argv))
        subcommand = first.get("subcommand")
        chosen = {
            key: first[subcommand][key].get("class_path")
            for key in DEFAULT_CLASSES
            if subcommand and hasattr(first[subcommand].get(key), "get")
        }
        changed = {k: v for k, v in chosen.items() if v and not _same_class(v, DEFAULT_CLASSES[k])}
        if changed:
            self._subcommand_parsers[subcommand].set_defaults(
                {key: {"class_path": path} for key, path in changed.items()}
            )
        return super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        # A run's checkpoints go beside its TensorBoard logs: a fit with
        # --trainer.logger.save_dir runs/synth writes runs/synth/checkpoints.
        checkpoints_under_run_root(config)
        # A config written for `fit` names its TensorBoard logger after the fit;
        # scoring runs log under their own name beside it (runs/quickstart/test).
        if self.subcommand in ("validate", "test"):
            log_under_own_name(config, self.subcommand)


def _entries(config: Any, key: str, suffix: str) -> list[Any]:
    """The ``class_path``/``init_args`` entries of ``trainer.<key>`` whose class ends with ``suffix``."""
    trainer = config.get("trainer") if hasattr(config, "get") else None
    values = trainer.get(key) if hasattr(trainer, "get") else None
    return [
        entry
        for entry in (values if isinstance(values, list) else [values])
        if hasattr(entry, "get")
        and str(entry.get("class_path", "")).endswith(suffix)
        and entry.get("init_args") is not None
    ]


def log_under_own_name(config: Any, name: str) -> None:
    """Renames the TensorBoard loggers of a parsed subcommand config to ``name``."""
    for logger in _entries(config, "logger", "TensorBoardLogger"):
        logger.init_args["name"] = name


def checkpoints_under_run_root(config: Any) -> None:
    """Gives each ModelCheckpoint without a ``dirpath`` ``<run root>/checkpoints``:
    the run root is the TensorBoard logger's ``save_dir`` (one logger), else
    ``trainer.default_root_dir`` (Lightning's own default would be the
    logger's numbered version folder, a path no later command can know)."""
    loggers = _entries(config, "logger", "TensorBoardLogger")
    root = loggers[0].init_args.get("save_dir") if len(loggers) == 1 else None
    root = root or config["trainer"].get("default_root_dir") or "."
    for checkpoint in _entries(config, "callbacks", "ModelCheckpoint"):
        if checkpoint.init_args.get("dirpath") is None:
            checkpoint.init_args["dirpath"] = str(Path(root) / "checkpoints")


def build_cli(
    args: Sequence[str] | None = None, *, cli_class: type[MohaqCLI] = MohaqCLI
) -> MohaqCLI:
    """Parses ``args`` (default: the command line) and runs the subcommand.

    Args:
        args: the command-line arguments.
        cli_class: MohaqCLI or a subclass (a test may stop it after parsing).

    Raises:
        the toolkit's typed errors (see :mod:`mohaq.cli_errors`); :func:`main`
        turns them into exit statuses.
    """
    return cli_class(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_class=MohaqTrainer,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_class=MohaqArgumentParser,
        parser_kwargs={
            **main_parser_kwargs(),
            **subcommand_parser_kwargs(MohaqTrainer, list(MohaqCLI.subcommands())),
        },
        trainer_defaults={
            "logger": {
                "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "runs", "name": "mohaq"},
            },
        },
        args=list(args) if args is not None else None,
    )


def _prog(argv: Sequence[str]) -> str:
    commands = MohaqCLI.subcommands()
    command = next((a for a in argv if a in commands), None)
    return f"mohaq {command}" if command else "mohaq"


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the `mohaq` console command.

    Returns:
        0, or the exit status of the toolkit error that stopped the command
        (one or two lines on stderr; ``--debug`` or ``MOHAQ_DEBUG=1`` adds the
        traceback). Other exceptions propagate with their traceback.
    """
    argv = list(sys.argv[1:] if args is None else args)

    def command(rest: list[str]) -> None:
        if args is None:
            sys.argv[1:] = rest  # LightningCLI reads the command line itself
            build_cli(None)
        else:
            build_cli(rest)

    show_progress_lines()  # the toolkit's steps (corpus, features, calibration, beacons)
    return run_command(command, argv, _prog(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
