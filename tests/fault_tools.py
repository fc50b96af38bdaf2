"""Helpers of the fault-injection tests: real processes killed with SIGKILL.

A child is forked from the test process (no interpreter start-up, so a kill
costs milliseconds) and runs a function; it kills itself with SIGKILL at a
chosen point (``kill_self``), or the test kills it. A child never returns into
pytest: it leaves with ``os._exit``.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def kill_self() -> None:
    """``kill -9`` of the calling process, at exactly this point."""
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)  # never reached


def fork(function: Callable[..., Any], *args: Any, errors: Path | None = None) -> int:
    """Runs ``function(*args)`` in a forked child; returns its pid.

    The child exits with 0 when the function returns, 1 (after writing the
    traceback to ``errors``) when it raises.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            function(*args)
        except BaseException:  # noqa: BLE001 - reported to the parent through the file
            code = 1
            if errors is not None:
                errors.write_text(traceback.format_exc())
        finally:
            os._exit(code)
    return pid


def wait(pid: int, timeout_s: float = 60.0) -> int:
    """The child's exit status as ``subprocess`` gives it (-9: killed by SIGKILL)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise TimeoutError(f"child {pid} did not end within {timeout_s} s")


def run_killed_at(function: Callable[..., Any], *args: Any, errors: Path) -> int:
    """Runs ``function`` in a child that is expected to kill itself; returns the
    exit status (asserting it was SIGKILL, else showing the child's traceback)."""
    code = wait(fork(function, *args, errors=errors))
    if code != -signal.SIGKILL:
        detail = errors.read_text() if errors.exists() else ""
        raise AssertionError(f"the child was not killed (exit {code}); {detail[-3000:]}")
    return code


def dead_pid() -> int:
    """The pid of a process that has ended (reaped)."""
    pid = fork(lambda: None)
    wait(pid)
    return pid


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.005)


# -- retraining fakes, picklable by reference from a module without heavy imports ------------
def retrain_killed_from_outside(job: Any) -> dict[str, float]:
    """A retraining process that gets SIGKILL (as from a user or the OOM killer)."""
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def retrain_crashes(job: Any) -> dict[str, float]:
    """A retraining process that crashes by itself (segmentation fault)."""
    os.kill(os.getpid(), signal.SIGSEGV)
    return {}


def retrain_killed_or_crashes(job: Any) -> dict[str, float]:
    """Killed from outside for 8-bit ``l0.weight``, a crash otherwise."""
    if job.bits["l0.weight"] == 8:
        return retrain_killed_from_outside(job)
    return retrain_crashes(job)


def retrain_sleeps(job: Any) -> dict[str, float]:
    """Writes its pid to ``<beacon_dir>/pid``, then trains "forever"."""
    (Path(job.beacon_dir) / "pid").write_text(str(os.getpid()))
    time.sleep(120)
    return {}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not reaped by its parent) counts as dead
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True
