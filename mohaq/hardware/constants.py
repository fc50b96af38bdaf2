"""Platform constants: what each one is, its type and the values it may take.

Every cost model declares its constants (the keyword arguments of its
constructor, the keys under ``constants:`` in a platform YAML) as a mapping
name -> :class:`Constant`. The constructor checks every value against it, so a
negative energy, a speedup of -16, a bit width of 0 or a table without an
allowed bit width is refused with a :class:`ConstantError` that names the key,
the value and what is allowed (``load_platform`` adds the file's name).

A platform file must state every constant, except those declared
``optional`` (for example ``memory_capacity_bytes``: absent means unbounded):
an omitted optional constant takes the constructor's default, which the
constant's ``doc`` states.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any, Literal

from mohaq.hardware.base import ConstantError

ConstantKind = Literal[
    "int",
    "optional_int",
    "number",
    "bool",
    "str",
    "bits",
    "optional_bits",
    "bits_table",
    "file_or_mapping",
]


@dataclass(frozen=True)
class Constant:
    """One platform constant.

    Attributes:
        kind: ``"int"`` (an integer; an integral float such as ``6.0e+6`` is
            accepted), ``"optional_int"`` (an integer or null), ``"number"``
            (a finite real number), ``"bool"``, ``"str"``, ``"bits"`` (a
            non-empty list of bit widths), ``"optional_bits"`` (the same or
            null), ``"bits_table"`` (a mapping integer >= 1, a bit width or a
            product of bit widths -> number), ``"file_or_mapping"`` (a file
            path, or a mapping given in Python).
        doc: what the constant is, with its unit (printed in errors and docs).
        minimum: lower bound of the number (of the table's values for
            ``bits_table``); None: unbounded.
        strict: the bound is exclusive (``> minimum``) rather than ``>= minimum``.
        optional: a platform file may omit it (the constructor's default applies).
    """

    kind: ConstantKind
    doc: str
    minimum: float | None = None
    strict: bool = False
    optional: bool = False

    # -- what is allowed, in words ---------------------------------------------------
    def _bound(self) -> str:
        if self.minimum is None:
            return ""
        return f" {'>' if self.strict else '>='} {self.minimum:g}"

    def allowed(self) -> str:
        """What the constant accepts, for error messages."""
        bound = self._bound()
        described = {
            "int": f"an integer{bound}",
            "optional_int": f"an integer{bound}, or null",
            "number": f"a number{bound}",
            "bool": "true or false",
            "str": "a string",
            "bits": "a non-empty list of bit widths (integers >= 1)",
            "optional_bits": "a non-empty list of bit widths (integers >= 1), or null",
            "bits_table": f"a mapping integer >= 1 -> number{bound}",
            "file_or_mapping": "a file path, or a mapping",
        }[self.kind]
        return f"{described} ({self.doc})"

    # -- checks ------------------------------------------------------------------------
    def _fail(self, key: str, value: Any, problem: str) -> ConstantError:
        return ConstantError(key, value, problem, self.allowed())

    def _within(self, key: str, shown: Any, number: float, where: str) -> None:
        if self.minimum is None:
            return
        too_small = number <= self.minimum if self.strict else number < self.minimum
        if too_small:
            if number < 0 <= self.minimum:
                problem = "is negative"
            elif number == 0:
                problem = "is zero"
            else:
                problem = f"is below {self.minimum:g}"
            raise self._fail(key, shown, f"{where}{problem}")

    def _number(self, key: str, value: Any, where: str = "", shown: Any = None) -> float:
        """``value`` as a float; errors show ``shown`` (the whole table) when given."""
        shown = value if shown is None else shown
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._fail(key, shown, f"{where}is not a number")
        number = float(value)
        if not math.isfinite(number):
            raise self._fail(key, shown, f"{where}is not finite")
        self._within(key, shown, number, where)
        return number

    def _integer(self, key: str, value: Any) -> int:
        number = self._number(key, value)
        if number != int(number):
            raise self._fail(key, value, "is not an integer")
        return int(number)

    def _bits(self, key: str, value: Any) -> tuple[int, ...]:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            raise self._fail(key, value, "is not a list")
        if not value:
            raise self._fail(key, value, "is empty")
        widths = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                raise self._fail(key, value, f"holds {item!r}, not a bit width")
            widths.append(int(item))
        if len(set(widths)) != len(widths):
            raise self._fail(key, value, "repeats a bit width")
        return tuple(sorted(widths))

    def _table(self, key: str, value: Any) -> dict[int, float]:
        if not isinstance(value, Mapping) or not value:
            raise self._fail(key, value, "is not a non-empty mapping")
        table: dict[int, float] = {}
        for bits, entry in value.items():
            if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
                raise self._fail(key, value, f"has key {bits!r}, not an integer >= 1")
            table[int(bits)] = self._number(key, entry, f"entry {bits}: {entry!r} ", value)
        return table

    def check(self, key: str, value: Any) -> Any:
        """The value in its canonical type (int, float, tuple of bits, dict).

        Raises:
            ConstantError: wrong type, out of range, or a malformed list/table.
        """
        if self.kind == "int":
            return self._integer(key, value)
        if self.kind == "optional_int":
            return None if value is None else self._integer(key, value)
        if self.kind == "number":
            return self._number(key, value)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise self._fail(key, value, "is not true or false")
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise self._fail(key, value, "is not a string")
            return value
        if self.kind == "bits":
            return self._bits(key, value)
        if self.kind == "optional_bits":
            return None if value is None else self._bits(key, value)
        if self.kind == "file_or_mapping":
            if not isinstance(value, (str, PathLike, Mapping)):
                raise self._fail(key, value, "is neither a path nor a mapping")
            return value
        return self._table(key, value)


def check_constants(specs: Mapping[str, Constant], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of the constants ``specs`` declares, checked and in canonical types.

    A cost model's constructor passes its ``locals()``: names without a spec
    (``self``) are left out.

    Raises:
        ConstantError: a value of the wrong type or out of range.
    """
    return {key: spec.check(key, values[key]) for key, spec in specs.items() if key in values}


def require_table_covers(
    key: str, table: Mapping[int, float], bits: Sequence[int], what: str
) -> None:
    """Raises ConstantError when ``table`` lacks an entry for one of ``bits``."""
    missing = sorted(b for b in bits if b not in table)
    if missing:
        raise ConstantError(
            key,
            dict(table),
            f"has no entry for bit width(s) {missing}",
            f"an entry for every allowed bit width {sorted(bits)} ({what})",
        )


#: Constants every cost model shares (each model declares which of them it takes).
COMMON_CONSTANTS: dict[str, Constant] = {
    "allowed_bits": Constant("bits", "the precisions the platform runs"),
    "shared_layer_precision": Constant(
        "bool",
        "a layer's weights and input activation must share one precision",
        optional=True,
    ),
    "memory_capacity_bytes": Constant(
        "optional_int",
        "weight memory in bytes; null or absent: unbounded",
        minimum=0,
        strict=True,
        optional=True,
    ),
    "baseline_bits": Constant(
        "int", "the uniform precision speedups and savings are measured against", minimum=1
    ),
    "per_channel_weights": Constant(
        "bool",
        "the platform scales each output channel of a weight on its own, so post-training "
        "quantization may use per-channel weight scales",
        optional=True,
    ),
    "asymmetric_activations": Constant(
        "bool",
        "the platform runs activations with a zero point (an asymmetric grid), folding its "
        "correction into a per-output bias",
        optional=True,
    ),
}

#: The grids a platform supports (each cost model takes them; absent means False).
GRID_CONSTANTS: tuple[str, ...] = ("per_channel_weights", "asymmetric_activations")


def common_constants(*names: str) -> dict[str, Constant]:
    """The :data:`COMMON_CONSTANTS` named, for a model's ``constants``."""
    return {name: COMMON_CONSTANTS[name] for name in names}
