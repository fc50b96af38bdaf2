"""Platforms: cost models described in YAML, every constant overridable.

A platform file names a registered cost model and its constants::

    cost_model: bismo
    name: bismo_ultra96          # optional; defaults to the file's stem
    description: BISMO on Ultra96 ...
    constants:
      dm: 10
      frequency_hz: 300.0e+6

``load_platform`` accepts a path to such a file, a bare name (a YAML shipped in
``lightning_configs/hardware``, installed as ``mohaq.configs.hardware``; ``-``
and ``_`` are interchangeable), a registered cost model name (its built-in
defaults), or a mapping ``{"name": <any of those>, "overrides": {...}}``.
Relative paths in constants ending in ``_path`` or named ``table`` resolve
against the YAML's folder.

A platform file is checked when it loads: it must state every constant of its
cost model except the optional ones (an error lists the missing ones with
their built-in values, to copy if they apply), and every value must have the
constant's type and range (a negative energy or speedup, a table without an
allowed bit width are refused). Errors name the file, the key, the value and
what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mohaq.hardware.base import ConstantError, CostModel, CostModelError
from mohaq.hardware.registry import (
    available_cost_models,
    constructor_defaults,
    constructor_keys,
    cost_model_class,
    get_cost_model,
)

PLATFORM_KEYS = ("cost_model", "name", "description", "constants")


class PlatformError(CostModelError):
    """A platform name, file or override is not valid."""


class PlatformConstantError(PlatformError, ConstantError):
    """A platform file or override gives a constant a value its cost model refuses."""


class MissingConstantError(PlatformError):
    """A platform file leaves out constants that are not optional.

    Attributes:
        path: the platform file.
        missing: the constants left out.
    """

    def __init__(self, path: Path, model_name: str, missing: list[str]) -> None:
        self.path, self.missing = path, missing
        cls = cost_model_class(model_name)
        defaults = constructor_defaults(cls)
        shown = "; ".join(
            f"{key} ({cls.constants[key].doc}): "
            + (f"built-in value {defaults[key]!r}" if key in defaults else "no built-in value")
            for key in missing
        )
        optional = sorted(k for k, spec in cls.constants.items() if spec.optional)
        super().__init__(
            f"platform file {path} (cost model {model_name}): missing constant(s) {missing}; "
            f"a platform file states every constant but the optional ones ({', '.join(optional)}). "
            f"{shown}"
        )


def shipped_platform_dir() -> Path:
    """The folder of the shipped platform YAML files."""
    return Path(str(resources.files("mohaq.configs.hardware")))


def shipped_platforms() -> list[str]:
    """Names (file stems) of the shipped platform YAML files."""
    return sorted(p.stem for p in shipped_platform_dir().glob("*.yaml"))


def describe_platforms() -> list[tuple[str, str]]:
    """``(name, description)`` of each shipped platform file, for help texts.

    Raises:
        PlatformError: a shipped file that is not valid YAML.
    """
    rows = []
    for name in shipped_platforms():
        path = shipped_platform_dir() / f"{name}.yaml"
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise PlatformError(f"platform file {path} is not valid YAML: {error}") from error
        text = str(data.get("description", "")) if isinstance(data, Mapping) else ""
        rows.append((name, " ".join(text.split()) or f"cost model {data.get('cost_model', '?')}"))
    return rows


def _find_yaml(name: str) -> Path | None:
    candidate = Path(name)
    if candidate.suffix.lower() in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise PlatformError(f"platform file {name} does not exist")
        return candidate
    folder = shipped_platform_dir()
    for stem in (name, name.replace("-", "_"), name.replace("_", "-")):
        path = folder / f"{stem}.yaml"
        if path.is_file():
            return path
    return None


def _resolve_paths(constants: dict[str, Any], folder: Path) -> dict[str, Any]:
    resolved = dict(constants)
    for key, value in constants.items():
        if (key == "table" or key.endswith("_path")) and isinstance(value, str):
            path = Path(value)
            if not path.is_absolute():
                resolved[key] = str(folder / path)
    return resolved


def read_platform_file(path: str | Path) -> tuple[str, str, dict[str, Any]]:
    """(cost model name, platform name, constants) of a platform YAML file.

    Raises:
        PlatformError: the file is not a mapping with a ``cost_model`` key and
            known top-level keys, or its ``constants`` is not a mapping.
    """
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, Mapping) or "cost_model" not in data:
        raise PlatformError(
            f"platform file {path}: needs a 'cost_model' key; keys: {PLATFORM_KEYS}"
        )
    unknown = sorted(set(data) - set(PLATFORM_KEYS))
    if unknown:
        raise PlatformError(
            f"platform file {path}: unknown key(s) {unknown}; valid: {PLATFORM_KEYS}"
        )
    constants = data.get("constants") or {}
    if not isinstance(constants, Mapping):
        raise PlatformError(
            f"platform file {path}: 'constants' = {constants!r} is not a mapping constant -> value"
        )
    return (
        str(data["cost_model"]),
        str(data.get("name") or path.stem),
        _resolve_paths(dict(constants), path.parent),
    )


def load_platform(path_or_name: str | Path | Mapping[str, Any], **overrides: Any) -> CostModel:
    """Builds a platform's cost model.

    Args:
        path_or_name: a platform YAML path, a shipped platform name
            (``silago``, ``bitfusion``, ``bitfusion_mohaq``, ``bismo_pynq``,
            ``bismo_ultra96``, ``size``, ``bops``, ``lookup_table_example``), a
            registered cost model name, or ``{"name": ..., "overrides": {...}}``.
        **overrides: constants replacing the file's (keyword arguments of the
            cost model class).

    Raises:
        PlatformError: an unknown name (lists the shipped platforms and the
            registered models), a bad file, or an unknown override key (lists
            the valid ones).
        MissingConstantError: a platform file leaves out a constant that is
            not optional (lists the built-in values).
        PlatformConstantError: a constant of the wrong type or range, or a
            table that does not cover the allowed bit widths (names the file or
            the override, the key, the value and what is allowed).
    """
    if isinstance(path_or_name, Mapping):
        spec = dict(path_or_name)
        extra = sorted(set(spec) - {"name", "overrides"})
        if "name" not in spec or extra:
            raise PlatformError(
                f"a platform mapping takes 'name' and optional 'overrides'; got keys {sorted(spec)}"
            )
        return load_platform(spec["name"], **{**dict(spec.get("overrides") or {}), **overrides})
    name = str(path_or_name)
    path = _find_yaml(name)
    if path is not None:
        model_name, platform_name, constants = read_platform_file(path)
    elif name in available_cost_models():
        model_name, platform_name, constants = name, name, {}
    else:
        raise PlatformError(
            f"unknown platform {name!r}: not a file; shipped platforms: "
            f"{', '.join(shipped_platforms())}; registered cost models: "
            f"{', '.join(available_cost_models())}"
        )
    cls = cost_model_class(model_name)
    valid = constructor_keys(cls)
    for source, keys in (("platform file", constants), ("override", overrides)):
        unknown = sorted(set(keys) - set(valid))
        if unknown:
            raise PlatformError(
                f"platform {platform_name!r} ({model_name}): unknown {source} key(s) {unknown}; "
                f"valid: {', '.join(valid)}"
            )
    if path is not None:
        required = [k for k in valid if k in cls.constants and not cls.constants[k].optional]
        missing = [k for k in required if k not in constants and k not in overrides]
        if missing:
            raise MissingConstantError(path, model_name, missing)
    try:
        model = get_cost_model(model_name, **{**constants, **overrides})
    except ConstantError as exc:
        origin = (
            f"platform {platform_name!r}: override"
            if exc.key in overrides or path is None
            else f"platform file {path}"
        )
        raise exc.with_source(origin, PlatformConstantError) from exc
    model.name = platform_name
    return model
