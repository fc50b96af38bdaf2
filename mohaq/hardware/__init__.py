"""Hardware cost models: SiLago, Bit Fusion, BISMO, size and BOPs proxies, lookup tables."""

from mohaq.hardware.base import (
    ConstantError,
    CostModel,
    CostModelError,
    CostReport,
    InfeasibleAssignmentError,
)
from mohaq.hardware.platform import (
    MissingConstantError,
    PlatformConstantError,
    PlatformError,
    load_platform,
    shipped_platforms,
)
from mohaq.hardware.registry import (
    UnknownCostModelError,
    available_cost_models,
    get_cost_model,
    register_cost_model,
)

__all__ = [
    "ConstantError",
    "CostModel",
    "CostModelError",
    "CostReport",
    "InfeasibleAssignmentError",
    "MissingConstantError",
    "PlatformConstantError",
    "PlatformError",
    "UnknownCostModelError",
    "available_cost_models",
    "get_cost_model",
    "load_platform",
    "register_cost_model",
    "shipped_platforms",
]
