"""Cost a bit assignment on several platforms without data or training.

``python -m mohaq.hardware.report --platform silago --bits 8`` prints the
per-layer tables of MOHAQ's reference SRU workload; ``mohaq cost`` calls
:func:`cost_table` with a model's own workload.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from mohaq.hardware.base import CostModel, CostModelError, CostReport
from mohaq.hardware.platform import load_platform
from mohaq.hardware.reference_workloads import mohaq_sru_workload
from mohaq.quant.assignment import BitAssignment, BitAssignmentError
from mohaq.quant.points import Workload

PlatformSpec = str | CostModel | Mapping[str, Any]

#: Shipped platforms costed by default (the example lookup table is tied to the SRU's layer names).
DEFAULT_PLATFORMS: tuple[str, ...] = (
    "silago",
    "bitfusion_mohaq",
    "bitfusion",
    "bismo_pynq",
    "bismo_ultra96",
    "size",
    "bops",
)


def default_platforms() -> list[str]:
    """The shipped platforms ``mohaq cost`` prices when none is named."""
    return list(DEFAULT_PLATFORMS)


def _model(spec: PlatformSpec) -> CostModel:
    return spec if isinstance(spec, CostModel) else load_platform(spec)


def platform_report(
    workload: Workload, assignment: BitAssignment, platform: PlatformSpec
) -> CostReport | list[str]:
    """The platform's report, or its violations when it cannot run the assignment."""
    model = _model(platform)
    problems = model.run_violations(workload, assignment)
    if problems:
        return problems
    report = model.metrics(workload, assignment)
    report.notes.extend(f"constraint: {v}" for v in model.check(workload, assignment))
    return report


def cost_table(
    workload: Workload,
    assignment: BitAssignment,
    platforms: Sequence[PlatformSpec],
    markdown: bool = False,
) -> str:
    """Per-layer tables and totals of ``assignment`` on each platform.

    Args:
        workload: the model's points (``model.workload()`` or a reference workload).
        assignment: point name -> bits; absent points are float.
        platforms: platform names, YAML paths, ``{"name", "overrides"}`` mappings
            or cost models.
        markdown: Markdown tables instead of fixed-width text.

    Raises:
        PlatformError: an unknown platform (a platform that cannot run the
            assignment is listed with its violations instead).
    """
    assignment.validate_for(workload)
    sections = []
    for platform in platforms:
        model = _model(platform)
        try:
            result = platform_report(workload, assignment, model)
        except CostModelError as exc:
            result = [str(exc)]
        if isinstance(result, CostReport):
            sections.append(result.to_markdown() if markdown else result.to_text())
        else:
            head = f"### {model.name}" if markdown else f"== {model.name} =="
            lines = [head, "  infeasible on this platform:"]
            lines.extend(f"  - {problem}" for problem in result)
            sections.append("\n".join(lines))
    return "\n\n".join(sections)


def _parse_assignment(workload: Workload, bits: int | None, assign: Sequence[str]) -> BitAssignment:
    """The assignment of ``--bits`` and ``--set`` items.

    Raises:
        BitAssignmentError: an item that is not ``name=bits`` or names no point or layer.
    """
    values: dict[str, int] = {}
    if bits is not None:
        values = {name: bits for name in workload.names}
    for item in assign:
        name, sep, width = item.partition("=")
        if not sep or not width.strip().isdigit():
            raise BitAssignmentError(f"--set expects name=bits, got {item!r}")
        matches = [n for n in workload.names if n == name or n.split(".")[0] == name]
        if not matches:
            raise BitAssignmentError(
                f"--set {item!r}: no point or layer {name!r}; points: {', '.join(workload.names)}"
            )
        for match in matches:
            values[match] = int(width)
    return BitAssignment(values)


def main(argv: Sequence[str] | None = None) -> str:
    """Prints the reference SRU workload's cost tables.

    Raises:
        PlatformError, BitAssignmentError: an unknown platform, a bad ``--set``
            (:func:`command_line` turns them into an exit status).
    """
    parser = argparse.ArgumentParser(
        prog="python -m mohaq.hardware.report",
        description="Cost MOHAQ's reference SRU workload (no data or training).",
    )
    parser.add_argument(
        "--platform",
        action="append",
        help=f"platform name or YAML (repeatable; default: {', '.join(DEFAULT_PLATFORMS)})",
    )
    parser.add_argument(
        "--bits", type=int, default=8, help="every point at this precision (default 8)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=BITS",
        help="override a point (sru1.weight=4) or a whole layer (sru1=4); repeatable",
    )
    parser.add_argument("--markdown", action="store_true", help="Markdown tables")
    args = parser.parse_args(argv)
    workload = mohaq_sru_workload()
    assignment = _parse_assignment(workload, args.bits, args.set)
    table = cost_table(
        workload, assignment, args.platform or default_platforms(), markdown=args.markdown
    )
    print(table)
    return table


def command_line(argv: Sequence[str] | None = None) -> int:
    """``python -m mohaq.hardware.report``: a toolkit error is one line and its exit status."""
    import sys

    from mohaq.cli_errors import run_command

    return run_command(main, sys.argv[1:] if argv is None else argv, "mohaq.hardware.report")


if __name__ == "__main__":
    raise SystemExit(command_line())
