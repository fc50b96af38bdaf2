"""What the toolkit's stages ask of a model, for the toolkit's systems and for
a user's converted model alike.

The toolkit's LightningModules (:class:`mohaq.system.AcousticSystem`) have
``workload()``, ``apply_bit_assignment()``, ``bit_assignment`` and a
``(features, targets, lengths)`` batch. A user's model converted by
:func:`mohaq.convert.make_quantizable` has none of them: its workload is read
from its layers, assignments go to its quantizers directly, and a batch is run
as :func:`mohaq.search.metric_evaluator.default_outputs` runs it (the
module's ``metric_outputs(batch)`` hook, else ``module(batch[0])``). The
functions here pick whichever applies, so a stage such as the QAT callback
serves both.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mohaq.convert.conversion import model_workload
from mohaq.quant.apply import apply_bit_assignment, current_bit_assignment
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload


def is_toolkit_system(module: nn.Module) -> bool:
    """Whether ``module`` is one of the toolkit's systems (it lists its own workload)."""
    return callable(getattr(module, "workload", None)) and callable(
        getattr(module, "apply_bit_assignment", None)
    )


def workload_of(module: nn.Module) -> Workload:
    """The module's workload: its own, or the one of its quantizable layers.

    Raises:
        ConversionError: for a user's module that was not converted.
    """
    if is_toolkit_system(module):
        return module.workload()  # type: ignore[operator]
    return model_workload(module)


def apply_assignment(
    module: nn.Module, assignment: BitAssignment, *, fixed_bits: int | None = 16
) -> None:
    """Applies ``assignment`` to the module's quantizers (its own method if it has one)."""
    if is_toolkit_system(module):
        module.apply_bit_assignment(assignment, fixed_bits=fixed_bits)  # type: ignore[operator]
    else:
        apply_bit_assignment(module, assignment, fixed_bits=fixed_bits)


def assignment_of(module: nn.Module) -> BitAssignment:
    """The assignment the module's quantizers hold now (empty: float)."""
    if is_toolkit_system(module):
        return module.bit_assignment  # type: ignore[return-value]
    return current_bit_assignment(module)


def forward_batch(module: nn.Module, batch: Any) -> Any:
    """The module's output for one batch of its DataModule (for calibration)."""
    if is_toolkit_system(module):
        return module(batch[0], batch[2])
    from mohaq.search.metric_evaluator import default_outputs

    return default_outputs(module, batch)[0]
