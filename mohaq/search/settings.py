"""One typed settings object for a precision search.

:class:`SearchSettings` holds every knob of a search. LightningCLI builds the
``mohaq search`` options and YAML keys from its fields (see
:func:`settings_parameters`); the search writes it to its run directory
(``search_settings.json``); the beacon stage reads it from there and refuses a
contradicting value (:func:`continue_settings`).

The algorithm and the executor are typed options too: a name
(``--algorithm nsga2``, ``--algorithm TwoPointsDE-LHS``, ``--executor process``)
selects one with its defaults; ``--algorithm NSGA2 --algorithm.population 20``
(or ``algorithm: {class_path: NSGA2, init_args: {population: 20}}`` in YAML)
sets its own options.
"""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mohaq.quant.ptq import PTQ_PRESETS, PTQConfig, PTQConfigError
from mohaq.search.evaluators import EvaluatorError, Racing
from mohaq.search.executors import (
    ExecutorOptions,
    InProcess,
    ProcessPool,
    Submitit,
    executor_name,
    resolve_executor,
)
from mohaq.search.proposers import AlgorithmOptions, algorithm_name, resolve_algorithm
from mohaq.search.proposers.registry import load_builtin_algorithms, options_from_dict

# The options classes must be imported for LightningCLI to resolve their short
# names (``--algorithm NSGA2``).
load_builtin_algorithms()

# The winner of benchmarks/results/search_quality_quickstart.md (HV at 100
# evaluations above NSGA-II's at 400 on the quickstart model's real PTQ error).
DEFAULT_ALGORITHM = "surrogate"

#: What defines the problem: a later stage (beacons) must not contradict them.
PROBLEM_FIELDS: tuple[str, ...] = (
    "platform",
    "platform_overrides",
    "objectives",
    "constraints",
    "bit_choices",
    "ptq",
    "ptq_overrides",
)
#: What a resume may change (everything else must stay as it was).
RESUMABLE_FIELDS: tuple[str, ...] = (
    "budget",
    "workers",
    "executor",
    "batch_size",
    "rescore_test",
    "report_every",
    "run_dir",
)


class SearchConfigError(ValueError):
    """A search setting that is invalid before any evaluation starts."""


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SearchConfigError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass
class SearchSettings:
    """Every knob of a precision search.

    Args:
        platform: a shipped platform name (silago, bitfusion, bitfusion-mohaq,
            bismo_pynq, bismo_ultra96, size, bops, ...) or a platform YAML file.
        platform_overrides: platform constants to override, e.g. ``{batch: 16}``.
        objectives: ``error`` plus metrics of the platform (e.g. speedup, energy, memory_mb).
        constraints: bounds, e.g. ``{max_error: 0.24, max_memory_mb: 2, min_speedup: 4}``.
        bit_choices: precisions to search (default: 2/4/8/16 that the platform allows).
        budget: distinct evaluations, uniform baselines included.
        algorithm: the search algorithm: a registered name (surrogate, the
            default; nevergrad, nsga2, random, haq), any nevergrad optimizer name (TwoPointsDE-LHS, DE, CMA, ...),
            or typed options (``--algorithm NSGA2 --algorithm.population 40``).
        seed: random seed of the algorithm.
        workers: evaluations in flight at once.
        executor: where evaluations run: auto (in-process for one worker,
            processes for more), inline, process, submitit, or typed options.
        run_dir: where evaluations, the front, plots and the summary go.
        batch_size: utterances per padded batch when scoring a candidate.
        rescore_test: re-score the final front on the test set.
        report_every: evaluations per hypervolume point in TensorBoard.
        racing: multi-fidelity evaluation: score a candidate on a growing share
            of the optimization set and stop once its error is confidently
            above what the front reaches at its cost (such records keep their
            fidelity and never enter the front).
        racing_fractions: the shares of the optimization set where racing checks.
        racing_confidence: the one-sided confidence of racing's stopping bound.
        ptq: the post-training quantization preset that scores candidates:
            ``mohaq`` (MOHAQ's recipe) or ``best`` (output-aware activation
            thresholds and AdaRound at 2 and 4 bits); see
            :meth:`mohaq.quant.ptq.PTQConfig.preset`.
        ptq_overrides: PTQConfig fields that replace the preset's, e.g.
            ``{per_channel_weights: true}`` (the platform must support them).
    """

    platform: str = "silago"
    platform_overrides: dict[str, Any] = field(default_factory=dict)
    objectives: list[str] = field(default_factory=lambda: ["error", "speedup"])
    constraints: dict[str, float] = field(default_factory=dict)
    bit_choices: list[int] | None = None
    budget: int = 200
    algorithm: AlgorithmOptions | str = DEFAULT_ALGORITHM
    seed: int = 0
    workers: int = 1
    executor: ExecutorOptions | str = "auto"
    run_dir: str = "runs/search"
    batch_size: int = 16
    rescore_test: bool = True
    report_every: int = 10
    racing: bool = False
    racing_fractions: list[float] = field(default_factory=lambda: [0.25, 0.5])
    racing_confidence: float = 0.99
    ptq: str = "mohaq"
    ptq_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("budget", "workers", "batch_size", "report_every"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SearchConfigError(f"seed must be an integer, got {self.seed!r}")
        if not isinstance(self.platform, str) or not self.platform:
            raise SearchConfigError(
                f"platform must be a platform name or YAML path, got {self.platform!r}"
            )
        self.objectives = [str(o) for o in self.objectives]
        self.platform_overrides = dict(self.platform_overrides or {})
        self.constraints = dict(self.constraints or {})
        if self.bit_choices is not None:
            self.bit_choices = list(self.bit_choices)
            if not self.bit_choices:
                raise SearchConfigError(
                    "bit_choices is empty; give at least one precision (2 to 16 bits) "
                    "or leave it unset for 2/4/8/16 that the platform allows"
                )
        self.run_dir = str(self.run_dir)
        self.racing_fractions = [float(f) for f in self.racing_fractions]
        try:
            Racing(tuple(self.racing_fractions), float(self.racing_confidence))
        except EvaluatorError as error:
            raise SearchConfigError(str(error)) from error
        self.ptq_overrides = dict(self.ptq_overrides or {})
        if self.ptq not in PTQ_PRESETS:
            raise SearchConfigError(
                f"ptq must be a preset name, one of {', '.join(PTQ_PRESETS)}; got {self.ptq!r}"
            )
        try:
            self.ptq_options()
        except (PTQConfigError, TypeError) as error:
            raise SearchConfigError(f"ptq_overrides: {error}") from error
        self.algorithm = resolve_algorithm(self.algorithm)
        self.executor = resolve_executor(self.executor, self.workers)
        if isinstance(self.executor, InProcess) and self.workers > 1:
            raise SearchConfigError(
                f"workers={self.workers} needs a process or submitit executor; the inline "
                "executor evaluates one candidate at a time"
            )

    # -- names --------------------------------------------------------------------------
    @property
    def algorithm_options(self) -> AlgorithmOptions:
        return self.algorithm  # type: ignore[return-value]

    @property
    def algorithm_name(self) -> str:
        return algorithm_name(self.algorithm_options)

    @property
    def executor_options(self) -> ExecutorOptions:
        return self.executor  # type: ignore[return-value]

    def racing_options(self) -> Racing | None:
        """The evaluator's multi-fidelity setting, or None when racing is off."""
        if not self.racing:
            return None
        return Racing(tuple(self.racing_fractions), float(self.racing_confidence), seed=self.seed)

    def ptq_options(self) -> PTQConfig:
        """The post-training quantization methods: the preset with the overrides."""
        values = dict(self.ptq_overrides)
        for name in ("adaround_bits", "output_aware_bits"):
            if name in values and isinstance(values[name], list):
                values[name] = tuple(values[name])
        return PTQConfig.preset(self.ptq, **values)

    # -- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (``from_dict`` inverts it)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["algorithm"] = {
            "name": self.algorithm_name,
            "options": self.algorithm_options.to_dict(),
        }
        values["executor"] = {
            "name": executor_name(self.executor_options),
            "options": dataclasses.asdict(self.executor_options),  # type: ignore[call-overload]
        }
        return values

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSettings:
        """Settings from :meth:`to_dict`'s form.

        Raises:
            SearchConfigError: unknown keys (lists the valid ones).
        """
        values = dict(data)
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise SearchConfigError(f"unknown search setting(s) {unknown}; valid: {valid}")
        algorithm = values.get("algorithm")
        if isinstance(algorithm, Mapping):
            values["algorithm"] = options_from_dict(
                algorithm["name"], dict(algorithm.get("options", {}))
            )
        executor = values.get("executor")
        if isinstance(executor, Mapping):
            kind = {"inline": InProcess, "process": ProcessPool, "submitit": Submitit}.get(
                executor["name"]
            )
            if kind is None:
                raise SearchConfigError(f"unknown executor {executor['name']!r} in settings")
            values["executor"] = kind(**dict(executor.get("options", {})))
        return cls(**values)

    def replace(self, **changes: Any) -> SearchSettings:
        return dataclasses.replace(self, **changes)


def changed_fields(
    stored: SearchSettings, current: SearchSettings, fields: tuple[str, ...]
) -> list[tuple[str, Any, Any]]:
    """``(name, stored value, current value)`` for each of ``fields`` that differs."""
    old, new = stored.to_dict(), current.to_dict()
    return [(name, old[name], new[name]) for name in fields if old[name] != new[name]]


def continue_settings(stored: SearchSettings, overrides: Mapping[str, Any]) -> SearchSettings:
    """The settings of a stage that continues a stored search (the beacon stage).

    Problem fields (platform, objectives, constraints, bit choices, platform
    overrides) given in ``overrides`` must equal the stored ones; the others
    replace them.

    Raises:
        SearchConfigError: naming each contradicting field with both values.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    candidate = SearchSettings.from_dict({**stored.to_dict(), **overrides})
    given = tuple(f for f in PROBLEM_FIELDS if f in overrides)
    clashes = changed_fields(stored, candidate, given)
    if clashes:
        details = "; ".join(f"{name}: search {a!r}, given {b!r}" for name, a, b in clashes)
        raise SearchConfigError(
            f"the beacon stage continues the search in {stored.run_dir} and cannot change its "
            f"problem ({details}); leave them out to use the search's values"
        )
    return candidate


# -- the CLI schema -----------------------------------------------------------------------
def _field_docs(cls: type) -> dict[str, str]:
    """Field name -> its text in the class docstring's ``Args:`` section."""
    doc = inspect.getdoc(cls) or ""
    docs: dict[str, str] = {}
    current = None
    in_args = False
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Attributes:"):
            in_args = True
            continue
        if not in_args:
            continue
        if line and not line.startswith(" "):
            break
        stripped = line.strip()
        if line.startswith("    ") and not line.startswith("        ") and ":" in stripped:
            current, text = stripped.split(":", 1)
            docs[current] = text.strip()
        elif current and stripped:
            docs[current] += " " + stripped
    return docs


def settings_parameters(
    cls: type, *, optional: bool = False
) -> tuple[list[inspect.Parameter], dict[str, Any], list[str]]:
    """Keyword-only parameters for each field of the dataclass ``cls``, their
    type hints, and their ``Args:`` docstring lines.

    With ``optional=True`` every parameter defaults to None ("not given"),
    for commands that read the values from a previous run.
    """
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    parameters, annotations, lines = [], {}, []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if optional:
            hint = hint | None
            default: Any = None
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()  # type: ignore[misc]
        parameters.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint
            )
        )
        annotations[f.name] = hint
        lines.append(f"{f.name}: {docs.get(f.name, '')}")
    return parameters, annotations, lines


def takes_settings(*classes: type, optional: tuple[bool, ...] | None = None) -> Callable:
    """Gives a method (``def search(self, ..., **settings)``) one keyword
    parameter per field of each settings dataclass, with the field's type and
    docstring, so LightningCLI builds the command's options and YAML keys from
    the dataclasses themselves.
    """
    flags = optional or tuple(False for _ in classes)

    def decorate(method: Callable) -> Callable:
        signature = inspect.signature(method)
        kept = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        annotations = dict(typing.get_type_hints(method))
        extra_docs: list[str] = []
        for cls, is_optional in zip(classes, flags, strict=True):
            parameters, hints, lines = settings_parameters(cls, optional=is_optional)
            kept += parameters
            annotations.update(hints)
            extra_docs += lines
        method.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]
        method.__annotations__ = annotations
        doc = inspect.getdoc(method) or ""
        method.__doc__ = doc + "\n" + textwrap.indent("\n".join(extra_docs), "    ") + "\n"
        return method

    return decorate


def split_settings(values: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """The entries of ``values`` that are fields of the dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}
