"""Choosing the bit assignment to export: given bits, a uniform width, or a search record.

A search record is read from the run directory's verified evaluation log
(:class:`~mohaq.search.records.EvaluationLog`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mohaq.export.program import ExportError, ExportFileNotFoundError
from mohaq.quant.assignment import BitAssignment, BitAssignmentError
from mohaq.quant.points import Workload
from mohaq.search.records import EvaluationLog


def read_search_record(run_dir: str | Path, index: int) -> dict[str, Any]:
    """The record with ``index`` of a search's verified evaluation log.

    Raises:
        ExportFileNotFoundError: if the run directory has no evaluation log.
        DamagedLogError: a damaged log line (names it).
        ExportError: if no record has that index.
    """
    log = EvaluationLog(run_dir)
    if not log.path.is_file():
        raise ExportFileNotFoundError(
            f"{str(log.path)!r} does not exist; --run_dir must be a search run directory"
        )
    records = log.read()
    for record in records:
        if record.index == index:
            return asdict(record)
    shown = f"{records[0].index} to {records[-1].index}" if records else "none"
    raise ExportError(
        f"{str(log.path)!r} has no record with index {index}; indices present: {shown}"
    )


def resolve_assignment(
    workload: Workload,
    *,
    bits: Mapping[str, int] | None = None,
    uniform_bits: int | None = None,
    run_dir: str | Path | None = None,
    index: int | None = None,
) -> tuple[BitAssignment, dict[str, Any]]:
    """The assignment to export and a description of where it came from.

    Exactly one source: ``bits``, ``uniform_bits``, or ``run_dir`` with ``index``.
    The assignment must give every point of ``workload`` its bits.

    Raises:
        ExportError: on no source or several, a half-given record reference,
            unknown points or points left in float.
    """
    given = [bits is not None, uniform_bits is not None, run_dir is not None or index is not None]
    if sum(given) != 1:
        raise ExportError(
            "give exactly one of --bits (point -> bits), --uniform_bits, or --run_dir with --index "
            f"(a search record); got bits={bits!r}, uniform_bits={uniform_bits!r}, "
            f"run_dir={run_dir!r}, index={index!r}"
        )
    source: dict[str, Any]
    try:
        if uniform_bits is not None:
            assignment = BitAssignment.uniform(workload.names, uniform_bits)
            source = {"assignment": f"uniform {uniform_bits} bits"}
        elif bits is not None:
            assignment = BitAssignment(dict(bits))
            source = {"assignment": "given bits"}
        else:
            if run_dir is None or index is None:
                raise ExportError("a search record needs both --run_dir and --index")
            record = read_search_record(run_dir, index)
            assignment = BitAssignment.from_dict(record["bits"])
            source = {
                "assignment": "search record",
                "run_dir": str(run_dir),
                "index": index,
                **{
                    key: record[key]
                    for key in ("label", "error", "objectives", "evaluator")
                    if key in record
                },
            }
        assignment.validate_for(workload)
    except BitAssignmentError as error:
        raise ExportError(str(error)) from error
    missing = [name for name in workload.names if name not in assignment.bits]
    if missing:
        raise ExportError(
            f"integer export needs bits for every quantization point; missing: {missing}"
        )
    return assignment, source
