"""What the commands show while they work.

Library code reports its steps through the ``logging`` module (``mohaq.*``
loggers, INFO: "computing train features (224 utterances)") and wraps long
loops in :func:`progress`; the command-line entry points call
:func:`show_progress_lines` so those lines reach the terminal (Python shows
only warnings otherwise). The bars appear on a terminal only (``tqdm``'s
``disable=None``); ``TQDM_DISABLE=1`` turns them off there too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

#: The logger every toolkit module's logger is a child of.
ROOT_LOGGER = "mohaq"
_HANDLER_NAME = "mohaq-console"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test may replace it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def show_progress_lines(level: int = logging.INFO) -> None:
    """Prints the toolkit's log lines of ``level`` and above on stderr (once per
    process, however often it is called)."""
    logger = logging.getLogger(ROOT_LOGGER)
    if any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        return
    handler = _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)


def progress(
    items: Iterable[T], *, total: int | None = None, description: str, unit: str = "it"
) -> Iterator[T]:
    """``items`` with a progress bar on a terminal (nothing elsewhere)."""
    from tqdm.auto import tqdm

    yield from tqdm(items, total=total, desc=description, unit=unit, leave=False, disable=None)


def progress_bar(total: int, *, description: str, unit: str = "it") -> Any:
    """A manual progress bar (``update(n)``, ``close()``) on a terminal only."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit, leave=False, disable=None)
