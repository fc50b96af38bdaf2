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
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mohaq.hardware.base import (
    CostModel,
    CostModelError,
    CostReport,
    InfeasibleAssignmentError,
    Product,
    memory_totals,
    product_row,
    products,
)
from mohaq.hardware.registry import register_cost_model
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload

TableKey = tuple[str, int, int]
CSV_COLUMNS = ("layer", "weight_bits", "activation_bits", "latency", "energy")


class LookupTableError(CostModelError):
    """A lookup table file is malformed."""


def _number(value: Any, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise LookupTableError(f"{where}: {value!r} is not a number") from exc


def _bits(value: Any, where: str) -> int:
    try:
        bits = int(str(value).strip())
    except ValueError as exc:
        raise LookupTableError(f"{where}: bits {value!r} is not an integer") from exc
    return bits


def read_table_csv(path: Path) -> dict[TableKey, tuple[float, float]]:
    """(layer, weight bits, activation bits) -> (latency, energy) from a CSV file."""
    table: dict[TableKey, tuple[float, float]] = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise LookupTableError(
                f"{path}: missing column(s) {missing}; the header must be {','.join(CSV_COLUMNS)}"
            )
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            key = (
                row["layer"].strip(),
                _bits(row["weight_bits"], where),
                _bits(row["activation_bits"], where),
            )
            if key in table:
                raise LookupTableError(f"{where}: duplicate entry for {key}")
            table[key] = (_number(row["latency"], where), _number(row["energy"], where))
    return table


def read_table_yaml(path: Path) -> dict[TableKey, tuple[float, float]]:
    """(layer, weight bits, activation bits) -> (latency, energy) from a YAML file."""
    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, Mapping) and "layers" in data:
        data = data["layers"]
    if not isinstance(data, Mapping):
        raise LookupTableError(
            f"{path}: expected a mapping layer -> {{'<w>x<a>': {{latency, energy}}}}"
        )
    table: dict[TableKey, tuple[float, float]] = {}
    for layer, entries in data.items():
        if not isinstance(entries, Mapping):
            raise LookupTableError(f"{path}: layer {layer!r} must map '<w>x<a>' to latency/energy")
        for bits_key, values in entries.items():
            where = f"{path}: {layer} {bits_key}"
            parts = str(bits_key).lower().split("x")
            if len(parts) != 2:
                raise LookupTableError(f"{where}: key must be '<weight bits>x<activation bits>'")
            if not isinstance(values, Mapping) or not {"latency", "energy"} <= set(values):
                raise LookupTableError(f"{where}: needs latency and energy")
            key = (str(layer), _bits(parts[0], where), _bits(parts[1], where))
            table[key] = (_number(values["latency"], where), _number(values["energy"], where))
    return table


def read_table(path: str | Path) -> dict[TableKey, tuple[float, float]]:
    """Reads a CSV (``.csv``) or YAML (``.yaml``/``.yml``) lookup table."""
    path = Path(path)
    if not path.is_file():
        raise LookupTableError(f"lookup table {path} does not exist")
    if path.suffix.lower() == ".csv":
        return read_table_csv(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return read_table_yaml(path)
    raise LookupTableError(f"lookup table {path}: use a .csv, .yaml or .yml file")


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
        baseline_bits: uniform precision of speedup 1 (8/8 as HAQ).

    Raises:
        LookupTableError: an unreadable or malformed table.
    """

    metric_names = ("speedup", "latency", "energy", "energy_saving", "memory_mb", "memory_bytes")
    higher_is_better = {"speedup": True, "energy_saving": True}

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
    ) -> None:
        if isinstance(table, (str, Path)):
            self.table_path: Path | None = Path(table)
            self.table = read_table(table)
        else:
            self.table_path = None
            self.table = {
                (str(k[0]), int(k[1]), int(k[2])): (float(v[0]), float(v[1]))
                for k, v in table.items()
            }
        if not self.table:
            raise LookupTableError("the lookup table is empty")
        if allowed_bits is None:
            allowed_bits = sorted({k[1] for k in self.table} | {k[2] for k in self.table})
        self.latency_unit, self.energy_unit = latency_unit, energy_unit
        self.units = {
            "latency": latency_unit,
            "energy": energy_unit,
            "memory_mb": "MiB",
            "memory_bytes": "B",
        }
        super().__init__(
            allowed_bits=allowed_bits,
            shared_layer_precision=shared_layer_precision,
            memory_capacity_bytes=memory_capacity_bytes,
            baseline_bits=baseline_bits,
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
