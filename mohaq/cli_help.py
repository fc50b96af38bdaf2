"""What ``mohaq --help`` and ``mohaq <command> --help`` show.

Every command starts with a one-line usage and its own options; the model and
data options follow; Lightning's Trainer, optimizer and scheduler options come
last (for the commands that train or score) or are left out of the help
(``cost``, ``search``, ``beacons``, ``export``: they are still accepted). The
commands that take a platform or an algorithm list the shipped ones with
their one-line descriptions.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from jsonargparse import DefaultHelpFormatter
from pytorch_lightning.cli import LightningArgumentParser

DESCRIPTION = (
    "MOHAQ toolkit: train a recurrent speech model (SRU, GRU, LSTM) on TIMIT, then search the "
    "precision of every quantization point for the Pareto front of error and hardware cost "
    "(speedup, energy, memory) on an accelerator, and refine the front with retrained beacons."
)

#: Option groups of Lightning's own classes, by their key in the parser.
LIGHTNING_GROUPS: tuple[str, ...] = ("trainer", "divergence", "optimizer", "lr_scheduler")
#: Groups of the model and the data, shown right after the command's own options.
MODEL_GROUPS: tuple[str, ...] = ("model", "data")
#: The model and data a config without ``class_path`` describes (``mohaq`` takes
#: any LightningModule and LightningDataModule by ``class_path``).
DEFAULT_CLASSES: dict[str, str] = {
    "model": "mohaq.system.AcousticSystem",
    "data": "mohaq.datamodules.timit.TIMITDataModule",
}
#: Data properties the CLI links into the model's arguments of the same name.
LINKED_DATA_PROPERTIES: tuple[str, ...] = ("num_features", "num_classes", "scoring_map")
_TITLES = {
    "model": (
        "model (--model.*): any LightningModule by --model.class_path (--model.help CLASS "
        "lists its options); without one, the acoustic model"
    ),
    "data": (
        "data (--data.*): any LightningDataModule by --data.class_path; without one, "
        "the TIMIT DataModule"
    ),
    "trainer": "Lightning Trainer (--trainer.*)",
    "divergence": "divergence detector (--divergence.*): stops a diverging training",
    "optimizer": "optimizer (--optimizer.*)",
    "lr_scheduler": "learning-rate scheduler (--lr_scheduler.*)",
}
_LINKED = "Linked arguments"

USAGES: dict[str, str] = {
    "fit": "mohaq fit -c CONFIG.yaml [--model.X V] [--data.X V] [--trainer.X V] [--debug]",
    "validate": "mohaq validate -c CONFIG.yaml --ckpt_path CKPT [--OPTION VALUE ...] [--debug]",
    "test": "mohaq test -c CONFIG.yaml (--ckpt_path CKPT | --exported DIR) [--OPTION VALUE ...] "
    "[--debug]",
    "cost": "mohaq cost -c CONFIG.yaml [--uniform_bits N | --bits '{point: bits}'] "
    "[--platforms '[name, ...]'] [--debug]",
    "search": "mohaq search -c CONFIG.yaml [-c SEARCH.yaml] --checkpoint CKPT --run_dir DIR "
    "[--OPTION VALUE ...] [--debug]",
    "beacons": "mohaq beacons -c CONFIG.yaml [-c BEACONS.yaml] --run_dir SEARCH_DIR "
    "[--OPTION VALUE ...] [--debug]",
    "export": "mohaq export -c CONFIG.yaml --checkpoint CKPT (--run_dir DIR --index I | "
    "--bits '{...}' | --uniform_bits N) --out_dir DIR [--debug]",
}

#: Commands whose help leaves out the Trainer, optimizer and scheduler groups.
NO_TRAINER_HELP: tuple[str, ...] = ("cost", "search", "beacons", "export")


def platforms_help() -> str:
    """The shipped platforms, one line each."""
    from mohaq.hardware.platform import describe_platforms

    rows = describe_platforms()
    width = max(len(name) for name, _ in rows)
    lines = ["platforms (--platform NAME, or your own platform YAML file):"]
    lines += [f"  {name:<{width}}  {text}" for name, text in rows]
    return "\n".join(lines)


def algorithms_help() -> str:
    """The registered search algorithms, one line each."""
    from mohaq.search.proposers import available_algorithms

    entries = available_algorithms()
    width = max(len(e.name) for e in entries)
    lines = [
        "algorithms (--algorithm NAME, any nevergrad optimizer name, or --algorithm CLASS "
        "--algorithm.OPTION V; --algorithm.help CLASS lists the options):"
    ]
    lines += [f"  {e.name:<{width}}  {e.description} ({e.options.__name__})" for e in entries]
    return "\n".join(lines)


def exit_statuses_help() -> str:
    from mohaq.cli_errors import exit_status_table

    body = "\n".join(f"  {line}" for line in exit_status_table().splitlines())
    return f"exit status:\n{body}"


def main_epilog() -> str:
    return (
        "Each command's own options come first in its help: mohaq search --help.\n"
        "--debug (anywhere), or MOHAQ_DEBUG=1, shows the traceback of an error.\n\n"
        + exit_statuses_help()
    )


EPILOGS: dict[str, Callable[[], str]] = {
    "cost": platforms_help,
    "search": lambda: platforms_help() + "\n\n" + algorithms_help(),
    "beacons": lambda: (
        "The platform, objectives, constraints and bit choices are the search's "
        "(read from --run_dir).\n\n" + algorithms_help()
    ),
}


class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's formatter, keeping the line breaks of descriptions and
    epilogs; long lines wrap, table rows (``  name  text``) under their text."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            row = re.match(r"^(\s+\S+\s{2,})", line)
            hanging = " " * len(row.group(1)) if row else ""
            lines += textwrap.wrap(
                line, width, initial_indent=indent, subsequent_indent=indent + hanging
            ) or [indent]
        return "\n".join(lines)


class MohaqArgumentParser(LightningArgumentParser):
    """A LightningArgumentParser whose help shows the command's own options first.

    Args:
        hidden_help_groups: keys of option groups left out of ``--help`` (still parsed).
        lazy_epilog: builds the epilog when the help is shown (listing the
            platforms reads their files: not worth doing on every start).
        *args, **kwargs: :class:`~pytorch_lightning.cli.LightningArgumentParser`'s.
    """

    def __init__(
        self,
        *args: Any,
        hidden_help_groups: Sequence[str] = (),
        lazy_epilog: Callable[[], str] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.hidden_help_groups = tuple(hidden_help_groups)
        self.lazy_epilog = lazy_epilog

    def _group_key(self, group: Any) -> str | None:
        for key, candidate in getattr(self, "groups", {}).items():
            if candidate is group:
                return key
        return None

    def help_groups(self) -> list[Any]:
        """The option groups in the order the help shows them (retitled)."""
        own, basics, models, lightning, linked = [], [], [], [], []
        hidden = set(self.hidden_help_groups)
        for group in self._action_groups:
            key = self._group_key(group)
            if key in hidden or (group.title == _LINKED and "model" in hidden):
                continue
            if key is None:
                (linked if group.title == _LINKED else basics).append(group)
            elif key in MODEL_GROUPS:
                models.append(group)
            elif key in LIGHTNING_GROUPS:
                lightning.append(group)
            else:
                own.append(group)
        for group in own:
            group.title = f"{self.prog.split()[-1]} options"
        for group in models + lightning:
            group.title = _TITLES.get(self._group_key(group) or "", group.title)
        for group in basics:
            if group.title == "options":
                group.title = "general options"
        return own + basics + models + linked + lightning

    def default_class_groups(self) -> dict[str, Any]:
        """Option groups of the default model and data classes (``--model.cell``, ...),
        shown after the model and data groups: a subclass-typed option lists none."""
        from jsonargparse import ArgumentParser

        from mohaq.search.evaluators import import_object

        parser = ArgumentParser(formatter_class=HelpFormatter)
        groups = {}
        for key, path in DEFAULT_CLASSES.items():
            skip = set(LINKED_DATA_PROPERTIES) if key == "model" else set()
            parser.add_class_arguments(import_object(path), key, skip=skip, fail_untyped=False)
            group = parser.groups[key]
            group.title = f"{key} options of {path.rsplit('.', 1)[1]} (the default --{key})"
            group.description = None
            group._group_actions = [  # the group's own config-file option is the --model above
                a for a in group._group_actions if a.option_strings != [f"--{key}"]
            ]
            groups[key] = group
        return groups

    def format_help(self, *args: Any, **kwargs: Any) -> str:
        saved, epilog = list(self._action_groups), self.epilog
        try:
            groups = self.help_groups()
            keys = [self._group_key(g) for g in groups]
            if "model" in keys or "data" in keys:
                extra = self.default_class_groups()
                for key in ("data", "model"):
                    if key in keys:
                        groups.insert(keys.index(key) + 1, extra[key])
            self._action_groups[:] = groups
            if self.lazy_epilog is not None:
                self.epilog = self.lazy_epilog()
            if self.hidden_help_groups:
                note = (
                    "Lightning's --trainer.*, --optimizer.* and --lr_scheduler.* options are "
                    "accepted too (mohaq fit --help lists them)."
                )
                self.epilog = f"{self.epilog}\n\n{note}" if self.epilog else note
            return super().format_help(*args, **kwargs)
        finally:
            self._action_groups[:] = saved
            self.epilog = epilog


def command_description(method: Any) -> str:
    """A command's docstring up to its ``Args:`` section (the help's description;
    the command list shows its first line)."""
    doc = inspect.getdoc(method) or ""
    return doc.split("\nArgs:")[0].strip()


def subcommand_parser_kwargs(
    trainer_class: type, commands: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """``parser_kwargs`` of LightningCLI for each subcommand: description, usage,
    epilog, hidden groups."""
    out: dict[str, dict[str, Any]] = {}
    for name in commands:
        kwargs: dict[str, Any] = {"description": command_description(getattr(trainer_class, name))}
        if name in USAGES:
            kwargs["usage"] = USAGES[name]
        if name in EPILOGS:
            kwargs["lazy_epilog"] = EPILOGS[name]
        if name in NO_TRAINER_HELP:
            kwargs["hidden_help_groups"] = ("trainer", "optimizer", "lr_scheduler", "divergence")
        out[name] = kwargs
    return out


def main_parser_kwargs() -> dict[str, Any]:
    return {"description": DESCRIPTION, "lazy_epilog": main_epilog}


__all__ = [
    "DESCRIPTION",
    "HelpFormatter",
    "MohaqArgumentParser",
    "algorithms_help",
    "main_parser_kwargs",
    "platforms_help",
    "subcommand_parser_kwargs",
]
