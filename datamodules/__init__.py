"""MOHAQ data: TIMIT (or the synthetic TIMIT-format corpus) for frame phone classification.

`TIMITDataModule` is imported on first use, so importing the phone tables
(`mohaq.datamodules.phones`) does not pull in Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mohaq.datamodules.timit import TIMITDataModule

__all__ = ["TIMITDataModule"]


def __getattr__(name: str) -> Any:
    if name == "TIMITDataModule":
        from mohaq.datamodules.timit import TIMITDataModule

        return TIMITDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
