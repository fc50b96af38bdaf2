"""What the command lines make of the toolkit's typed errors: one or two lines
on stderr and an exit code per kind of problem, instead of a traceback.

Library code raises typed errors and never exits; the entry points (``mohaq``,
``mohaq-synth-timit``, ``python -m mohaq.hardware.report``) run through
:func:`run_command`, which prints::

    mohaq search: platform error: unknown cost model 'nope'; registered: bismo, ...
      (UnknownCostModelError, exit status 5; --debug or MOHAQ_DEBUG=1 shows the traceback)

and returns the kind's exit status. ``--debug`` anywhere on the command line,
or ``MOHAQ_DEBUG=1`` in the environment, prints the traceback first. Any other
exception is a bug and keeps its traceback (exit status 1).

Errors are matched by their class's qualified name, most derived first (a
subclass that is not listed takes its parent's kind), so this module imports
none of the packages it covers and a command starts as fast as before.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

DEBUG_FLAG = "--debug"
DEBUG_ENV = "MOHAQ_DEBUG"
#: Exit status of an unexpected error (Python's own, with the traceback).
UNEXPECTED_EXIT = 1
#: Exit status of Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED_EXIT = 130


@dataclass(frozen=True)
class ErrorKind:
    """A kind of problem a user can fix, with its exit status.

    Attributes:
        name: what the first line calls it (``platform error``).
        exit_code: the process's exit status.
        what: one line for the help and the docs.
    """

    name: str
    exit_code: int
    what: str


USAGE = ErrorKind("usage error", 2, "a command-line option, a config file or a bit assignment")
DATA = ErrorKind("data error", 3, "the corpus (missing, unreadable, bad PHN/WAV) or its synthesis")
CHECKPOINT = ErrorKind("checkpoint error", 4, "a missing, unreadable or mismatched checkpoint")
PLATFORM = ErrorKind("platform error", 5, "a platform name, file, constant or lookup table")
SEARCH = ErrorKind(
    "search error", 6, "search or beacon settings: objectives, constraints, bit choices, algorithm"
)
STORAGE = ErrorKind(
    "run directory error", 7, "a run directory or cache: in use, damaged, full or read-only"
)
TRAINING = ErrorKind("training error", 8, "a diverged training or beacons that were not retrained")
EXPORT = ErrorKind("export error", 9, "an integer export that cannot be built")

KINDS: tuple[ErrorKind, ...] = (
    USAGE,
    DATA,
    CHECKPOINT,
    PLATFORM,
    SEARCH,
    STORAGE,
    TRAINING,
    EXPORT,
)

#: Qualified class name -> kind. Subclasses not named here take their parent's kind.
ERROR_KINDS: dict[str, ErrorKind] = {
    # usage
    "argparse.ArgumentError": USAGE,  # jsonargparse raises it when it does not exit itself
    "mohaq.quant.assignment.BitAssignmentError": USAGE,
    # data
    "mohaq.datamodules.timit_corpus.CorpusError": DATA,
    "mohaq.datamodules.synth_timit.SynthesisError": DATA,
    "mohaq.datamodules.espeak.EspeakError": DATA,
    "mohaq.datamodules.keywords.KeywordCorpusError": DATA,
    # checkpoint
    "mohaq.checkpoints.CheckpointMismatchError": CHECKPOINT,
    "mohaq.checkpoints.CheckpointNotFoundError": CHECKPOINT,
    "mohaq.models.sru_import.SRUImportError": CHECKPOINT,
    # platform
    "mohaq.hardware.base.CostModelError": PLATFORM,
    "mohaq.hardware.base.InfeasibleAssignmentError": PLATFORM,
    "mohaq.hardware.base.ConstantError": PLATFORM,
    "mohaq.hardware.lookup_table.LookupTableError": PLATFORM,
    "mohaq.hardware.platform.PlatformError": PLATFORM,
    "mohaq.hardware.platform.PlatformConstantError": PLATFORM,
    "mohaq.hardware.platform.MissingConstantError": PLATFORM,
    "mohaq.hardware.registry.UnknownCostModelError": PLATFORM,
    # search and beacon settings
    "mohaq.search.settings.SearchConfigError": SEARCH,
    "mohaq.search.objectives.ObjectiveError": SEARCH,
    "mohaq.search.space.SearchSpaceError": SEARCH,
    "mohaq.search.proposers.registry.AlgorithmError": SEARCH,
    "mohaq.search.proposers.haq_budget.BudgetError": SEARCH,
    "mohaq.quant.ptq.PTQConfigError": SEARCH,
    # a user's model that cannot be made quantizable
    "mohaq.convert.recurrent.ConversionError": USAGE,
    "mohaq.convert.recurrent.UnsupportedConfigurationError": USAGE,
    "mohaq.search.executors.ExecutorError": SEARCH,
    "mohaq.search.evaluators.EvaluatorError": SEARCH,
    "mohaq.beacons.selection.BeaconConfigError": SEARCH,
    "mohaq.beacons.retraining.RetrainingError": SEARCH,
    # run directories and caches
    "mohaq.search.records.ResumeError": STORAGE,
    "mohaq.search.records.RunStorageError": STORAGE,
    "mohaq.search.records.DamagedLogError": STORAGE,
    "mohaq.search.lock.RunLockError": STORAGE,
    "mohaq.search.lock.RunDirectoryInUseError": STORAGE,
    "mohaq.beacons.store.BeaconStoreError": STORAGE,
    "mohaq.datamodules.feature_cache.FeatureCacheError": STORAGE,
    "mohaq.datamodules.feature_cache.CacheDamagedError": STORAGE,
    # training
    "mohaq.callbacks.divergence.TrainingDivergedError": TRAINING,
    "mohaq.beacons.stage.BeaconsFailedError": TRAINING,
    # export
    "mohaq.export.program.ExportError": EXPORT,
    "mohaq.export.program.ExportFileNotFoundError": EXPORT,
    "mohaq.export.fixed_point.FixedPointError": EXPORT,
}


def qualified_name(cls: type) -> str:
    """``module.Class``; a class of a module run with ``python -m`` gets its real module name."""
    module = cls.__module__
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = getattr(spec, "name", None) or module
    return f"{module}.{cls.__qualname__}"


def classify(error: BaseException) -> ErrorKind | None:
    """The kind of a toolkit error (its class or the nearest listed base), or
    None for anything else (a bug: it keeps its traceback)."""
    for cls in type(error).__mro__:
        kind = ERROR_KINDS.get(qualified_name(cls))
        if kind is not None:
            return kind
    return None


def _message(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, KeyError) and len(error.args) == 1 and text == repr(error.args[0]):
        text = str(error.args[0])  # KeyError quotes its message
    return text or "(no message)"


def format_error(error: BaseException, kind: ErrorKind, prog: str) -> str:
    """The lines printed for a toolkit error (ends with a newline)."""
    return (
        f"{prog}: {kind.name}: {_message(error)}\n"
        f"  ({type(error).__name__}, exit status {kind.exit_code}; {DEBUG_FLAG} or "
        f"{DEBUG_ENV}=1 shows the traceback)\n"
    )


def debug_requested(environ: dict[str, str] | None = None) -> bool:
    """Whether ``MOHAQ_DEBUG`` asks for tracebacks (set, and not 0/false/no/empty)."""
    value = (os.environ if environ is None else environ).get(DEBUG_ENV, "")
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def split_debug_flag(argv: Sequence[str]) -> tuple[bool, list[str]]:
    """``(whether --debug was given, the arguments without it)``."""
    rest = [a for a in argv if a != DEBUG_FLAG]
    return len(rest) != len(argv), rest


def exit_status_table() -> str:
    """The exit statuses, one line each (for the help and the docs)."""
    lines = ["0  success", f"{UNEXPECTED_EXIT}  unexpected error (a bug: the traceback is shown)"]
    lines += [f"{k.exit_code}  {k.name}: {k.what}" for k in KINDS]
    lines.append(f"{INTERRUPTED_EXIT}  interrupted (Ctrl-C)")
    return "\n".join(lines)


def run_command(
    command: Callable[[list[str]], object],
    argv: Sequence[str],
    prog: str,
    *,
    stderr: TextIO | None = None,
    environ: dict[str, str] | None = None,
) -> int:
    """Runs ``command(argv without --debug)`` and turns a toolkit error into
    its lines on stderr and its exit status.

    Args:
        command: the command's body; receives the arguments.
        argv: the command-line arguments (``--debug`` is taken out).
        prog: the command's name in the message (``mohaq search``).
        stderr: where the lines go (default ``sys.stderr``).
        environ: the environment read for ``MOHAQ_DEBUG`` (default ``os.environ``).

    Returns:
        0, or the error kind's exit status.

    Raises:
        Exception: any error that is not the toolkit's, unchanged.
        SystemExit: as the command raised it (argument parsers exit by themselves).
    """
    flag, rest = split_debug_flag(argv)
    debug = flag or debug_requested(environ)
    stream = stderr if stderr is not None else sys.stderr
    try:
        command(rest)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc(file=stream)
        stream.write(f"{prog}: interrupted\n")
        return INTERRUPTED_EXIT
    except Exception as error:
        kind = classify(error)
        if kind is None:
            raise
        if debug:
            traceback.print_exc(file=stream)
        stream.write(format_error(error, kind, prog))
        stream.flush()
        return kind.exit_code
    return 0
