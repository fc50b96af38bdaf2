"""Applying a bit assignment to a model's quantizers."""

from __future__ import annotations

from torch import nn

from mohaq.quant.assignment import MAX_BITS, MIN_BITS, BitAssignment, BitAssignmentError
from mohaq.quant.quantizer import FakeQuantizer

# Attribute of the model that remembers the assignment applied last.
_ASSIGNMENT_ATTRIBUTE = "_mohaq_bit_assignment"


def _is_fixed_extra(quantizer: FakeQuantizer) -> bool:
    return quantizer.point_name is None or quantizer.role == "fixed"


def quantizers(model: nn.Module) -> dict[str, FakeQuantizer]:
    """The model's searchable quantizers, keyed by point name, in module order.

    Quantizers without a point name, and those with role ``"fixed"``, are the
    fixed-precision extras (see :func:`fixed_quantizers`) and are left out.

    Raises:
        ValueError: if two quantizers share a point name.
    """
    found: dict[str, FakeQuantizer] = {}
    paths: dict[str, str] = {}
    for path, module in model.named_modules():
        if not isinstance(module, FakeQuantizer) or _is_fixed_extra(module):
            continue
        name = module.point_name
        assert name is not None
        if name in found:
            raise ValueError(
                f"quantization point {name!r} is implemented by two quantizers: "
                f"{paths[name]!r} and {path!r}"
            )
        found[name] = module
        paths[name] = path
    return found


def fixed_quantizers(model: nn.Module) -> list[FakeQuantizer]:
    """Quantizers of tensors that are never searched (biases, recurrent vectors)."""
    return [m for m in model.modules() if isinstance(m, FakeQuantizer) and _is_fixed_extra(m)]


def apply_bit_assignment(
    model: nn.Module, assignment: BitAssignment, *, fixed_bits: int | None = 16
) -> None:
    """Sets every quantizer of ``model`` from ``assignment``, in place.

    A named quantizer gets its point's bits, or None (float) if the assignment
    leaves the point out. Fixed-precision extras get ``fixed_bits`` when the
    assignment is non-empty and None when it is empty (the float model).

    Args:
        model: the model; if it has a ``workload()`` method the assignment is
            validated against it.
        assignment: bits per point name.
        fixed_bits: precision of the fixed extras (MOHAQ: 16); None keeps
            them in float.

    Raises:
        BitAssignmentError: if the assignment names a point that is not in the
            workload or has no quantizer, or ``fixed_bits`` is out of range.
    """
    if fixed_bits is not None and (
        isinstance(fixed_bits, bool)
        or not isinstance(fixed_bits, int)
        or not MIN_BITS <= fixed_bits <= MAX_BITS
    ):
        raise BitAssignmentError(
            f"fixed_bits must be None or an integer from {MIN_BITS} to {MAX_BITS}; "
            f"got {fixed_bits!r}"
        )
    workload = getattr(model, "workload", None)
    if callable(workload):
        assignment.validate_for(workload())
    named = quantizers(model)
    missing = sorted(set(assignment.bits) - set(named))
    if missing:
        raise BitAssignmentError(
            f"no quantizer implements point(s) {missing}; valid points: {', '.join(named)}"
        )
    for name, quantizer in named.items():
        quantizer.bits = assignment.bits.get(name)
    extras_bits = fixed_bits if len(assignment) > 0 else None
    for quantizer in fixed_quantizers(model):
        quantizer.bits = extras_bits
    # A plain attribute: not a buffer, so it never enters the state dict.
    object.__setattr__(model, _ASSIGNMENT_ATTRIBUTE, assignment)


def current_bit_assignment(model: nn.Module) -> BitAssignment:
    """The bits the model's named quantizers hold now (empty: all float).

    Returns the assignment applied last when the quantizers still hold it,
    otherwise one rebuilt from the quantizers (bits set by hand).
    """
    actual = {name: q.bits for name, q in quantizers(model).items() if q.bits is not None}
    stored = getattr(model, _ASSIGNMENT_ATTRIBUTE, None)
    if isinstance(stored, BitAssignment) and stored.to_dict() == actual:
        return stored
    return BitAssignment(actual)
