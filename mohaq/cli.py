"""The `mohaq` command: LightningCLI with fit, validate, test, cost and search.

Custom subcommands are methods of a Trainer subclass: LightningCLI builds each
subcommand's arguments from the method's signature and takes the help text
from its docstring's first line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

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


class MohaqCLI(LightningCLI):
    """LightningCLI wired for the toolkit: data properties linked into the model."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = LightningCLI.subcommands()
        commands.pop("predict", None)
        commands["cost"] = {"model", "datamodule"}
        return commands

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data decides these; linking them keeps a config from contradicting it.
        parser.link_arguments("data.num_features", "model.num_features", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.scoring_map", "model.scoring_map", apply_on="instantiate")


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of the `mohaq` console command."""
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


if __name__ == "__main__":  # pragma: no cover
    main()
