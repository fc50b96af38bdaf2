"""The registry of cost models: name -> CostModel subclass.

Names are registered once; registering a name twice is an error, so a plug-in
cannot silently replace a built-in model. The built-in models register
themselves when their modules are imported; the lookup functions import them
first, so ``get_cost_model("silago")`` works without importing anything else.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from mohaq.hardware.base import ConstantError, CostModel, CostModelError

_BUILTIN_MODULES: tuple[str, ...] = (
    "mohaq.hardware.silago",
    "mohaq.hardware.bitfusion",
    "mohaq.hardware.bismo",
    "mohaq.hardware.proxies",
    "mohaq.hardware.lookup_table",
)

ModelT = TypeVar("ModelT", bound=type[CostModel])


class UnknownCostModelError(CostModelError, KeyError):
    """No cost model is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CostModelRegistry:
    """Name -> cost model class; a name can be registered only once."""

    def __init__(self) -> None:
        self._models: dict[str, type[CostModel]] = {}

    def register(self, name: str, cls: type[CostModel]) -> type[CostModel]:
        if not isinstance(cls, type) or not issubclass(cls, CostModel):
            raise CostModelError(f"cost model {name!r}: {cls!r} is not a CostModel subclass")
        if name in self._models:
            raise CostModelError(
                f"cost model name {name!r} is already registered (by "
                f"{self._models[name].__module__}.{self._models[name].__qualname__})"
            )
        cls.name = name
        self._models[name] = cls
        return cls

    def get(self, name: str) -> type[CostModel]:
        try:
            return self._models[name]
        except KeyError:
            raise UnknownCostModelError(
                f"unknown cost model {name!r}; registered: {', '.join(sorted(self._models))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._models)


_REGISTRY = CostModelRegistry()


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def register_cost_model(name: str) -> Callable[[ModelT], ModelT]:
    """Class decorator registering a CostModel subclass under ``name``.

    Raises:
        CostModelError: ``name`` is already registered, or the class is not a CostModel.
    """

    def decorate(cls: ModelT) -> ModelT:
        _REGISTRY.register(name, cls)
        return cls

    return decorate


def available_cost_models() -> list[str]:
    """The registered cost model names, sorted."""
    _load_builtins()
    return _REGISTRY.names()


def cost_model_class(name: str) -> type[CostModel]:
    """The class registered under ``name``.

    Raises:
        UnknownCostModelError: for an unknown name (lists the registered ones).
    """
    _load_builtins()
    return _REGISTRY.get(name)


def constructor_keys(cls: type[CostModel]) -> list[str]:
    """The keyword arguments (platform constants) a cost model class accepts."""
    parameters = inspect.signature(cls.__init__).parameters
    return [
        p.name
        for p in parameters.values()
        if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def constructor_defaults(cls: type[CostModel]) -> dict[str, Any]:
    """Constant -> its built-in default, for the constants that have one."""
    parameters = inspect.signature(cls.__init__).parameters
    return {
        key: parameters[key].default
        for key in constructor_keys(cls)
        if parameters[key].default is not inspect.Parameter.empty
    }


def get_cost_model(name: str, **overrides: Any) -> CostModel:
    """Builds the cost model registered under ``name`` with constants overridden.

    Raises:
        UnknownCostModelError: unknown name (lists the registered ones).
        CostModelError: an override key the model does not have (lists the
            valid ones), or a constant without a default left out.
        ConstantError: a constant of the wrong type or range (names the key,
            the value and what is allowed).
    """
    cls = cost_model_class(name)
    valid = constructor_keys(cls)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise CostModelError(
            f"cost model {name!r} has no constant(s) {unknown}; valid: {', '.join(valid)}"
        )
    needed = sorted(set(valid) - set(constructor_defaults(cls)) - set(overrides))
    if needed:
        raise CostModelError(f"cost model {name!r} needs constant(s) {needed} (no default)")
    try:
        return cls(**overrides)
    except ConstantError as exc:
        raise exc.with_source(f"cost model {name!r}") from exc
