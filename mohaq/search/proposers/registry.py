"""The registry of search algorithms: name -> proposer class and its options.

A name (and an options class) can be registered only once, so a plug-in cannot
silently replace a built-in. The built-ins register themselves when their
modules are imported; the lookup functions import them first.

A new algorithm is one file: an options dataclass subclassing
:class:`~mohaq.search.proposers.base.AlgorithmOptions`, a
:class:`~mohaq.search.proposers.base.Proposer` subclass, and::

    @register_proposer("mine", options=MineOptions, description="one line")
    class MineProposer(Proposer): ...

plus its module name in ``_BUILTIN_MODULES`` (or an import anywhere before the
search starts, for a plug-in).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from mohaq.search.proposers.base import AlgorithmOptions, Proposer, ProposerContext

_BUILTIN_MODULES: tuple[str, ...] = (
    "mohaq.search.proposers.nevergrad_family",
    "mohaq.search.proposers.nsga2",
    "mohaq.search.proposers.random_search",
    "mohaq.search.proposers.surrogate",
    "mohaq.search.proposers.haq",
)

ProposerT = TypeVar("ProposerT", bound=type[Proposer])


class AlgorithmError(ValueError):
    """An unknown algorithm name, invalid algorithm options, or a registry clash."""


@dataclass(frozen=True)
class ProposerEntry:
    """One registered algorithm."""

    name: str
    proposer: type[Proposer]
    options: type[AlgorithmOptions]
    description: str


class ProposerRegistry:
    """Name -> algorithm; names and options classes are registered once."""

    def __init__(self) -> None:
        self._entries: dict[str, ProposerEntry] = {}

    def register(self, entry: ProposerEntry) -> None:
        key = entry.name.lower()
        if key in self._entries:
            other = self._entries[key].proposer
            raise AlgorithmError(
                f"algorithm name {entry.name!r} is already registered "
                f"(by {other.__module__}.{other.__qualname__})"
            )
        for existing in self._entries.values():
            if existing.options is entry.options:
                raise AlgorithmError(
                    f"options class {entry.options.__qualname__} already belongs to "
                    f"algorithm {existing.name!r}"
                )
        if not (isinstance(entry.options, type) and issubclass(entry.options, AlgorithmOptions)):
            raise AlgorithmError(
                f"algorithm {entry.name!r}: options {entry.options!r} must subclass AlgorithmOptions"
            )
        self._entries[key] = entry

    def entries(self) -> list[ProposerEntry]:
        return sorted(self._entries.values(), key=lambda e: e.name)

    def get(self, name: str) -> ProposerEntry | None:
        return self._entries.get(name.lower())

    def for_options(self, options: AlgorithmOptions) -> ProposerEntry:
        for entry in self._entries.values():
            if type(options) is entry.options:
                return entry
        raise AlgorithmError(
            f"{type(options).__qualname__} is not the options class of a registered algorithm; "
            f"registered: {', '.join(e.name for e in self.entries())}"
        )


_REGISTRY = ProposerRegistry()


def load_builtin_algorithms() -> None:
    """Imports the built-in algorithms (registering them and their options classes)."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def register_proposer(
    name: str, *, options: type[AlgorithmOptions], description: str
) -> Callable[[ProposerT], ProposerT]:
    """Class decorator registering a proposer under ``name`` with its options class.

    Raises:
        AlgorithmError: the name or the options class is already registered.
    """

    def decorate(cls: ProposerT) -> ProposerT:
        _REGISTRY.register(ProposerEntry(name, cls, options, description))
        cls.options_type = options
        return cls

    return decorate


def available_algorithms() -> list[ProposerEntry]:
    """Every registered algorithm, sorted by name."""
    load_builtin_algorithms()
    return _REGISTRY.entries()


def describe_algorithms() -> str:
    """One line per registered algorithm: name, options class, description."""
    return "; ".join(
        f"{e.name} ({e.options.__name__}): {e.description}" for e in available_algorithms()
    )


def resolve_algorithm(value: AlgorithmOptions | str) -> AlgorithmOptions:
    """Typed options from options or a name.

    A name is, in order: a registered algorithm name (case-insensitive), the
    name of a registered options class, or a name an options class claims
    (every nevergrad optimizer name, e.g. ``TwoPointsDE-LHS``, ``DE``, ``CMA``).

    Raises:
        AlgorithmError: for an unknown name (lists the registered algorithms) or
            options of no registered algorithm.
    """
    load_builtin_algorithms()
    if isinstance(value, AlgorithmOptions):
        _REGISTRY.for_options(value)
        return value
    if not isinstance(value, str):
        raise AlgorithmError(
            f"algorithm must be a name or algorithm options, got {type(value).__name__} {value!r}"
        )
    name = value.strip()
    entry = _REGISTRY.get(name)
    if entry is not None:
        return entry.options()
    for entry in _REGISTRY.entries():
        if entry.options.__name__.lower() == name.lower():
            return entry.options()
    for entry in _REGISTRY.entries():
        claimed = entry.options.from_name(name)
        if claimed is not None:
            return claimed
    raise AlgorithmError(
        f"unknown algorithm {value!r}; registered: {describe_algorithms()}; "
        "or any name in nevergrad.optimizers.registry (e.g. TwoPointsDE-LHS, DE, CMA, NGOpt)"
    )


def algorithm_name(options: AlgorithmOptions) -> str:
    """The registered name of ``options``' algorithm."""
    load_builtin_algorithms()
    return _REGISTRY.for_options(options).name


def build_proposer(options: AlgorithmOptions, context: ProposerContext) -> Proposer:
    """The proposer of ``options``' algorithm, serving ``context``."""
    load_builtin_algorithms()
    return _REGISTRY.for_options(options).proposer(options, context)


def options_from_dict(name: str, values: dict) -> AlgorithmOptions:
    """Options of the algorithm registered as ``name`` (inverse of ``to_dict``).

    Raises:
        AlgorithmError: unknown name, or values the options class does not take.
    """
    load_builtin_algorithms()
    entry = _REGISTRY.get(name)
    if entry is None:
        raise AlgorithmError(f"unknown algorithm {name!r}; registered: {describe_algorithms()}")
    try:
        return entry.options(**values)
    except TypeError as error:
        raise AlgorithmError(f"algorithm {name!r}: {error}") from error
