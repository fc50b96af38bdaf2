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
and ``_`` are interchangeable), a registered cost model name (its defaults), or
a mapping ``{"name": <any of those>, "overrides": {...}}``. Relative paths in
constants ending in ``_path`` or named ``table`` resolve against the YAML's folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mohaq.hardware.base import CostModel, CostModelError
from mohaq.hardware.registry import (
    available_cost_models,
    constructor_keys,
    cost_model_class,
    get_cost_model,
)

PLATFORM_KEYS = ("cost_model", "name", "description", "constants")


class PlatformError(CostModelError):
    """A platform name, file or override is not valid."""


def shipped_platform_dir() -> Path:
    """The folder of the shipped platform YAML files."""
    return Path(str(resources.files("mohaq.configs.hardware")))


def shipped_platforms() -> list[str]:
    """Names (file stems) of the shipped platform YAML files."""
    return sorted(p.stem for p in shipped_platform_dir().glob("*.yaml"))


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
    """(cost model name, platform name, constants) of a platform YAML file."""
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
    constants = dict(data.get("constants") or {})
    return (
        str(data["cost_model"]),
        str(data.get("name") or path.stem),
        _resolve_paths(constants, path.parent),
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
    valid = constructor_keys(cost_model_class(model_name))
    for source, keys in (("platform file", constants), ("override", overrides)):
        unknown = sorted(set(keys) - set(valid))
        if unknown:
            raise PlatformError(
                f"platform {platform_name!r} ({model_name}): unknown {source} key(s) {unknown}; "
                f"valid: {', '.join(valid)}"
            )
    model = get_cost_model(model_name, **{**constants, **overrides})
    model.name = platform_name
    return model
