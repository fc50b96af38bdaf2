"""Measured or simulated costs from a user table (HAQ-style hardware feedback).

The table gives, per layer and per (weight bits, activation bits), a latency
and an energy; the model's cost is the sum over its matrix products, and the
baseline is every layer at ``baseline_bits`` x ``baseline_bits`` (8/8, as HAQ).

A row's ``layer`` is a layer name (``sru1``) or, for a layer with several
matrix products (per-operator granularity), a weight point's name
(``gru1.ih_weight``); a point's own name is looked up before its layer's.

CSV: a header ``layer,weight_bits,activation_bits,latency,energy`` and one row
per entry. YAML: ``{layer: {"<w>x<a>": {latency: ..., energy: ...}}}``, under an
optional top-level ``layers:`` key. Units are the user's (``latency_unit``,
``energy_unit``).

The table is checked when the model is built: every latency and energy must be
a positive number, and every layer in it must have an entry for each allowed
(weight bits, activation bits) pair (equal pairs only with
``shared_layer_precision``), so a search never meets a hole in the table. A
workload layer the table does not name is reported by ``check``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mohaq.hardware.base import (
    ConstantError,
    CostModel,
    CostReport,
    InfeasibleAssignmentError,
    Product,
    memory_totals,
    product_row,
    products,
)
from mohaq.hardware.constants import GRID_CONSTANTS, Constant, check_constants, common_constants
from mohaq.hardware.registry import register_cost_model
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload

TableKey = tuple[str, int, int]
CSV_COLUMNS = ("layer", "weight_bits", "activation_bits", "latency", "energy")
TABLE_ALLOWED = (
    "a .csv file with the header layer,weight_bits,activation_bits,latency,energy or a "
    ".yaml file {layer: {'<w>x<a>': {latency, energy}}}, latency > 0 and energy > 0 in "
    "every entry, and each layer's entries covering every allowed (weight bits, activation "
    "bits) pair"
)


class LookupTableError(ConstantError):
    """A lookup table is unreadable, malformed or does not cover the allowed bit widths.

    Args:
        table: the table's file (or a description of an in-memory table).
        problem: what is wrong, with the line or entry where it is.
    """

    def __init__(
        self, table: Any, problem: str, allowed: str = TABLE_ALLOWED, source: str = ""
    ) -> None:
        super().__init__("table", str(table), problem, allowed, source)


def _number(value: Any, path: Path | str, where: str, column: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise LookupTableError(path, f"{where}: {column} {value!r} is not a number") from exc
    if not math.isfinite(number) or number <= 0:
        shown = (
            "is not finite"
            if not math.isfinite(number)
            else ("is negative" if number < 0 else "is zero")
        )
        raise LookupTableError(path, f"{where}: {column} {value!r} {shown}")
    return number


def _bits(value: Any, path: Path | str, where: str) -> int:
    try:
        bits = int(str(value).strip())
    except ValueError as exc:
        raise LookupTableError(path, f"{where}: bits {value!r} is not an integer") from exc
    if bits < 1:
        raise LookupTableError(path, f"{where}: bits {bits} is below 1")
    return bits


def _entry(values: tuple[Any, Any], path: Path | str, where: str) -> tuple[float, float]:
    return (
        _number(values[0], path, where, "latency"),
        _number(values[1], path, where, "energy"),
    )


def read_table_csv(path: Path) -> dict[TableKey, tuple[float, float]]:
    """(layer, weight bits, activation bits) -> (latency, energy) from a CSV file."""
    table: dict[TableKey, tuple[float, float]] = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise LookupTableError(
                path,
                f"has missing column(s) {missing} (the header must be {','.join(CSV_COLUMNS)})",
            )
        for line, row in enumerate(reader, start=2):
            where = f"line {line}"
            key = (
                row["layer"].strip(),
                _bits(row["weight_bits"], path, where),
                _bits(row["activation_bits"], path, where),
            )
            if key in table:
                raise LookupTableError(path, f"{where}: a second entry for {key}")
            table[key] = _entry((row["latency"], row["energy"]), path, where)
    return table


def read_table_yaml(path: Path) -> dict[TableKey, tuple[float, float]]:
    """(layer, weight bits, activation bits) -> (latency, energy) from a YAML file."""
    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, Mapping) and "layers" in data:
        data = data["layers"]
    if not isinstance(data, Mapping):
        raise LookupTableError(path, "is not a mapping layer -> {'<w>x<a>': {latency, energy}}")
    table: dict[TableKey, tuple[float, float]] = {}
    for layer, entries in data.items():
        if not isinstance(entries, Mapping):
            raise LookupTableError(path, f"layer {layer!r} does not map '<w>x<a>' to entries")
        for bits_key, values in entries.items():
            where = f"layer {layer} {bits_key}"
            parts = str(bits_key).lower().split("x")
            if len(parts) != 2:
                raise LookupTableError(
                    path, f"{where}: key must be '<weight bits>x<activation bits>'"
                )
            if not isinstance(values, Mapping) or not {"latency", "energy"} <= set(values):
                raise LookupTableError(path, f"{where}: needs latency and energy")
            key = (str(layer), _bits(parts[0], path, where), _bits(parts[1], path, where))
            table[key] = _entry((values["latency"], values["energy"]), path, where)
    return table


def read_table(path: str | Path) -> dict[TableKey, tuple[float, float]]:
    """Reads a CSV (``.csv``) or YAML (``.yaml``/``.yml``) lookup table.

    Raises:
        LookupTableError: a missing, unreadable or malformed file, or an entry
            whose latency or energy is not a positive number.
    """
    path = Path(path)
    if not path.is_file():
        raise LookupTableError(path, "does not exist")
    if path.suffix.lower() == ".csv":
        return read_table_csv(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return read_table_yaml(path)
    raise LookupTableError(path, "is neither a .csv nor a .yaml/.yml file")


def uncovered_entries(
    table: Mapping[TableKey, tuple[float, float]],
    allowed_bits: Sequence[int],
    shared_precision: bool,
) -> dict[str, list[tuple[int, int]]]:
    """Layer -> the allowed (weight bits, activation bits) pairs it has no entry for."""
    pairs = [(w, a) for w in allowed_bits for a in allowed_bits if not shared_precision or w == a]
    gaps: dict[str, list[tuple[int, int]]] = {}
    for layer in sorted({key[0] for key in table}):
        missing = [(w, a) for w, a in pairs if (layer, w, a) not in table]
        if missing:
            gaps[layer] = missing
    return gaps


@register_cost_model("lookup-table")
class LookupTableCostModel(CostModel):
    """Latency and energy summed from a per-layer, per-(w, a) table.

    Args:
        table: the table file (CSV or YAML), or an already read mapping
            (layer, weight bits, activation bits) -> (latency, energy).
        latency_unit: unit of the latency column, for reports.
        energy_unit: unit of the energy column, for reports.
        allowed_bits: operand precisions (default: every bit width in the table).
        shared_layer_precision: weights and input share one precision.
        memory_capacity_bytes: weight memory (None: unbounded).
        per_channel_weights, asymmetric_activations: the grids the platform
            supports (see :class:`~mohaq.hardware.base.CostModel`; default False).
        baseline_bits: uniform precision of speedup 1 (8/8 as HAQ).

    Raises:
        LookupTableError: an unreadable or malformed table, an entry whose
            latency or energy is not positive, or a layer without an entry for
            an allowed (weight bits, activation bits) pair (only equal pairs
            when ``shared_layer_precision``).
        ConstantError: another constant of the wrong type or range.
    """

    metric_names = ("speedup", "latency", "energy", "energy_saving", "memory_mb", "memory_bytes")
    higher_is_better = {"speedup": True, "energy_saving": True}
    metric_descriptions = {
        "speedup": "physical: latency at the baseline precision / latency",
        "energy_saving": "energy at the baseline precision / energy",
    }
    constants = {
        "table": Constant("file_or_mapping", TABLE_ALLOWED),
        "latency_unit": Constant("str", "unit of the table's latency, e.g. ms or cycles"),
        "energy_unit": Constant("str", "unit of the table's energy, e.g. mJ"),
        "allowed_bits": Constant(
            "optional_bits",
            "operand precisions; null or absent: every bit width in the table",
            optional=True,
        ),
        **common_constants(
            "shared_layer_precision", "memory_capacity_bytes", "baseline_bits", *GRID_CONSTANTS
        ),
    }

    def __init__(
        self,
        *,
        table: str | Path | Mapping[TableKey, tuple[float, float]],
        latency_unit: str = "ms",
        energy_unit: str = "mJ",
        allowed_bits: list[int] | None = None,
        shared_layer_precision: bool = False,
        memory_capacity_bytes: int | None = None,
        baseline_bits: int = 8,
        per_channel_weights: bool = False,
        asymmetric_activations: bool = False,
    ) -> None:
        c = check_constants(self.constants, locals())
        if isinstance(table, Mapping):
            self.table_path: Path | None = None
            where = "an in-memory table"
            self.table = {
                (str(k[0]), int(k[1]), int(k[2])): _entry((v[0], v[1]), where, f"entry {k}")
                for k, v in table.items()
            }
        else:
            self.table_path = Path(table)
            where = str(self.table_path)
            self.table = read_table(self.table_path)
        if not self.table:
            raise LookupTableError(where, "is empty")
        in_table = sorted({k[1] for k in self.table} | {k[2] for k in self.table})
        allowed = c["allowed_bits"] or tuple(in_table)
        gaps = uncovered_entries(self.table, allowed, c["shared_layer_precision"])
        if gaps:
            shown = "; ".join(
                f"layer {layer!r} lacks {', '.join(f'{w}x{a}' for w, a in pairs)}"
                for layer, pairs in list(gaps.items())[:4]
            )
            more = f"; ... ({len(gaps)} layers in all)" if len(gaps) > 4 else ""
            raise LookupTableError(
                where, f"does not cover allowed bits {list(allowed)}: {shown}{more}"
            )
        self.latency_unit, self.energy_unit = c["latency_unit"], c["energy_unit"]
        self.units = {
            "latency": self.latency_unit,
            "energy": self.energy_unit,
            "memory_mb": "MiB",
            "memory_bytes": "B",
        }
        super().__init__(
            allowed_bits=allowed,
            shared_layer_precision=c["shared_layer_precision"],
            memory_capacity_bytes=c["memory_capacity_bytes"],
            baseline_bits=c["baseline_bits"],
            per_channel_weights=c["per_channel_weights"],
            asymmetric_activations=c["asymmetric_activations"],
        )

    def _key(self, product: Product, weight_bits: int, activation_bits: int) -> TableKey | None:
        for name in (product.point.name, product.layer):
            key = (name, weight_bits, activation_bits)
            if key in self.table:
                return key
        return None

    def _missing(self, found: list[Product]) -> list[str]:
        problems = []
        for product in found:
            if self._key(product, product.weight_bits, product.activation_bits) is None:
                problems.append(
                    f"lookup table has no entry for layer {product.layer!r} (or point "
                    f"{product.point.name!r}) at weight bits {product.weight_bits}, "
                    f"activation bits {product.activation_bits}"
                )
        return problems

    def extra_violations(self, workload: Workload, assignment: BitAssignment) -> list[str]:
        found = products(workload, assignment)
        problems = self._missing(found)
        layers = [p.layer for p in found]
        for product in found:
            key = self._key(product, product.weight_bits, product.activation_bits)
            if key is not None and key[0] == product.layer and layers.count(product.layer) > 1:
                problems.append(
                    f"layer {product.layer!r} has {layers.count(product.layer)} matrix products; "
                    "its table rows must name each weight point, not the layer"
                )
        return problems

    def _sum(self, workload: Workload, assignment: BitAssignment) -> tuple[float, float, list[Any]]:
        found = products(workload, assignment)
        problems = self._missing(found)
        if problems:
            raise InfeasibleAssignmentError("; ".join(problems))
        entries = [(p, self.table[self._key(p, p.weight_bits, p.activation_bits)]) for p in found]
        return sum(e[0] for _, e in entries), sum(e[1] for _, e in entries), entries

    def metrics(self, workload: Workload, assignment: BitAssignment) -> CostReport:
        self.require_runnable(workload, assignment)
        latency, energy, entries = self._sum(workload, assignment)
        base_latency, base_energy, _ = self._sum(workload, self.baseline_assignment(workload))
        rows = [{**product_row(p), "latency": lat, "energy": en} for p, (lat, en) in entries]
        totals = {
            "speedup": base_latency / latency,
            "latency": latency,
            "energy": energy,
            "energy_saving": base_energy / energy,
            **memory_totals(workload, assignment),
        }
        source = str(self.table_path) if self.table_path else "an in-memory table"
        notes = [
            f"from {source}; speedup and energy_saving over all layers at "
            f"{self.baseline_bits}/{self.baseline_bits} bits"
        ]
        return self._report(totals, rows, notes)
