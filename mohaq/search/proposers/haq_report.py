"""What a HAQ user reads: the best evaluated assignment within each budget.

:class:`BudgetReport` is the search callback that HAQ's options add to every
HAQ search. At the end it writes ``haq_budgets.json`` and ``haq_budgets.md``
into the run directory and appends the table to ``summary.md``: per budget,
the lowest-error feasible record that fits it (from any origin: a record
found under a tighter budget fits a looser one), the best uniform precision
that fits it, and how many evaluations fit it; plus how many of HAQ's own
proposals exceed the loosest budget (0 unless something is wrong).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mohaq.search.callbacks import SearchCallback
from mohaq.search.records import EvaluationRecord, write_json_atomic
from mohaq.search.report import SUMMARY, markdown_table

if TYPE_CHECKING:
    from mohaq.search.proposers.haq import HAQ
    from mohaq.search.run import SearchResult

BUDGETS_JSON = "haq_budgets.json"
BUDGETS_MD = "haq_budgets.md"


def _best(records: Sequence[EvaluationRecord], metric: str) -> EvaluationRecord | None:
    return min(records, key=lambda r: (r.error, r.metrics[metric], r.index), default=None)


def budget_table(
    options: HAQ, records: Sequence[EvaluationRecord], test_errors: dict[int, float]
) -> dict[str, Any]:
    """The report's content (see the module docstring) as JSON-able data."""
    metric = options.budget_metric
    baseline = next(
        (
            r
            for r in records
            if r.origin == "baseline" and r.label == f"uniform-{options.baseline_bits}"
        ),
        None,
    )
    budgets: list[tuple[float | None, float]] = []
    if options.budget_value is not None:
        budgets.append((None, float(options.budget_value)))
    if baseline is not None:
        reference = baseline.metrics[metric]
        budgets += [(f, f * reference) for f in options.fractions]
    rows = []
    for fraction, bound in budgets:
        fitting = [r for r in records if r.metrics[metric] <= bound]
        best = _best([r for r in fitting if r.feasible], metric)
        uniform = _best([r for r in fitting if r.origin == "baseline"], metric)
        rows.append(
            {
                "fraction": fraction,
                "bound": bound,
                "evaluations_fitting": len(fitting),
                "best": None
                if best is None
                else {
                    "index": best.index,
                    "origin": best.origin,
                    "error": best.error,
                    "test_error": test_errors.get(best.index),
                    "value": best.metrics[metric],
                    "bits": best.bits,
                },
                "best_uniform": None
                if uniform is None
                else {
                    "label": uniform.label,
                    "error": uniform.error,
                    "value": uniform.metrics[metric],
                },
            }
        )
    loosest = max((bound for _, bound in budgets), default=None)
    over = (
        []
        if loosest is None
        else [r.index for r in records if r.origin == "optimizer" and r.metrics[metric] > loosest]
    )
    return {
        "metric": metric,
        "baseline_bits": options.baseline_bits,
        "budgets": rows,
        "proposals_over_the_loosest_budget": over,
    }


def budget_markdown(table: dict[str, Any]) -> str:
    metric = table["metric"]
    rows = [
        [
            "budget",
            "best error (opt. set)",
            "its test error",
            f"its {metric}",
            "record",
            "best uniform that fits",
            "evaluations fitting",
        ]
    ]
    for row in table["budgets"]:
        fraction = row["fraction"]
        label = f"{metric} <= {row['bound']:g}" + (
            ""
            if fraction is None
            else f" ({100 * fraction:g}% of uniform-{table['baseline_bits']})"
        )
        best, uniform = row["best"], row["best_uniform"]
        test = None if best is None else best["test_error"]
        rows.append(
            [
                label,
                "none fits" if best is None else f"{100 * best['error']:.2f}%",
                "" if test is None else f"{100 * test:.2f}%",
                "" if best is None else f"{best['value']:g}",
                "" if best is None else f"#{best['index']} ({best['origin']})",
                "none"
                if uniform is None
                else f"{uniform['label']}: {100 * uniform['error']:.2f}% at {uniform['value']:g}",
                str(row["evaluations_fitting"]),
            ]
        )
    over = table["proposals_over_the_loosest_budget"]
    return "\n".join(
        [
            "## Budgets (HAQ)",
            "",
            markdown_table(rows),
            "",
            f"- HAQ proposals over the loosest budget: {len(over)}"
            + (f" (records {over})" if over else ""),
            "",
        ]
    )


class BudgetReport(SearchCallback):
    """Writes the per-budget report of a HAQ search (see the module docstring).

    Args:
        options: the HAQ options of the search.
    """

    def __init__(self, options: HAQ) -> None:
        self.options = options

    def on_search_end(self, result: SearchResult) -> None:
        run_dir = Path(result.run_dir)
        table = budget_table(self.options, result.records, result.test_errors)
        text = budget_markdown(table)
        write_json_atomic(run_dir / BUDGETS_JSON, table)
        (run_dir / BUDGETS_MD).write_text(text, encoding="utf-8")
        summary = run_dir / SUMMARY
        if summary.exists():
            with open(summary, "a", encoding="utf-8") as stream:
                stream.write("\n" + text)
        result.files["haq_budgets"] = run_dir / BUDGETS_MD
        result.files["haq_budgets_json"] = run_dir / BUDGETS_JSON
