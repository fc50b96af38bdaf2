"""The run-directory lock: one holder, its name in the error, takeover after a
kill -9, the O_EXCL fallback where flock is missing, unwritable directories."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from fault_tools import dead_pid, fork, wait, wait_for

from mohaq.search import lock as lock_module
from mohaq.search.lock import (
    LOCK_FILE,
    LockHolder,
    RunDirectoryInUseError,
    RunLock,
    RunLockError,
    ensure_free,
)
from mohaq.search.records import ResumeError


def hold_until_killed(directory: Path) -> None:
    held = RunLock(directory, "mohaq search").acquire()
    time.sleep(60)
    held.release()


def holder_written(directory: Path) -> bool:
    path = directory / LOCK_FILE
    return path.exists() and LockHolder.parse(path.read_bytes()) is not None


def test_second_process_gets_an_error_naming_the_holder_then_takes_over_after_kill_9(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    child = fork(hold_until_killed, tmp_path)
    wait_for(lambda: holder_written(tmp_path), timeout_s=20)
    with pytest.raises(RunDirectoryInUseError) as caught:
        RunLock(tmp_path, "mohaq beacons").acquire()
    message = str(caught.value)
    assert f"pid {child} on host {socket.gethostname()}" in message
    assert "in use by mohaq search" in message and "choose another run_dir" in message
    assert caught.value.holder is not None and caught.value.holder.pid == child
    assert isinstance(caught.value, ResumeError)  # what callers of run_search already catch
    with pytest.raises(RunDirectoryInUseError, match=f"pid {child}"):
        ensure_free(tmp_path)

    os.kill(child, signal.SIGKILL)
    assert wait(child) == -signal.SIGKILL
    ensure_free(tmp_path)  # the kernel dropped the dead process's lock
    with caplog.at_level(logging.WARNING), RunLock(tmp_path, "mohaq search") as taken:
        assert taken.took_over is not None and taken.took_over.pid == child
        record = json.loads((tmp_path / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["purpose"] == "mohaq search"
    assert f"took over the lock left by mohaq search (pid {child}" in caplog.text
    assert (tmp_path / LOCK_FILE).read_bytes() == b""  # released: emptied, never deleted


def test_the_same_process_cannot_hold_one_directory_twice(tmp_path: Path) -> None:
    with RunLock(tmp_path, "mohaq search"):
        with pytest.raises(RunDirectoryInUseError, match="this very process"):
            RunLock(tmp_path, "mohaq search").acquire()
    with RunLock(tmp_path, "mohaq search") as again:  # released on exit
        assert again.took_over is None


def test_unwritable_run_directory_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).startswith(str(tmp_path)) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(lock_module.os, "open", read_only)
    with pytest.raises(
        RunLockError, match=r"cannot lock the run directory .*Read-only file system"
    ):
        RunLock(tmp_path / "run", "mohaq search").acquire()


@pytest.fixture
def no_flock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system without flock (some cluster file systems): ENOLCK."""

    def flock(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock_module.fcntl, "flock", flock)


def write_holder(directory: Path, holder: LockHolder) -> Path:
    path = directory / (LOCK_FILE + ".pid")
    path.write_bytes(holder.to_bytes())
    return path


def test_without_flock_a_pid_file_keeps_others_out_and_a_dead_holder_is_taken_over(
    tmp_path: Path, no_flock: None
) -> None:
    with RunLock(tmp_path, "mohaq search"):
        with pytest.raises(RunDirectoryInUseError, match="this very process"):
            RunLock(tmp_path, "mohaq search").acquire()
        with pytest.raises(RunDirectoryInUseError):
            ensure_free(tmp_path)
    assert not (tmp_path / (LOCK_FILE + ".pid")).exists()

    dead = LockHolder(dead_pid(), socket.gethostname(), time.time(), "mohaq search")
    write_holder(tmp_path, dead)
    ensure_free(tmp_path)  # a dead holder on this host does not count
    with RunLock(tmp_path, "mohaq beacons") as taken:
        assert taken.took_over == dead
        assert LockHolder.parse((tmp_path / (LOCK_FILE + ".pid")).read_bytes()).pid == os.getpid()


def test_without_flock_a_holder_on_another_host_cannot_be_checked(
    tmp_path: Path, no_flock: None
) -> None:
    path = write_holder(tmp_path, LockHolder(12345, "node-elsewhere", time.time(), "mohaq search"))
    with pytest.raises(RunDirectoryInUseError, match=f"once it is known to be gone, delete {path}"):
        RunLock(tmp_path, "mohaq search").acquire()
    assert path.exists()


def child_sleeps() -> None:
    time.sleep(60)


def test_a_forked_child_does_not_keep_the_lock_of_a_killed_parent(tmp_path: Path) -> None:
    """As a DataLoader worker forked by the search would, after a kill -9 of the search."""

    def parent_with_a_child() -> None:
        held = RunLock(tmp_path, "mohaq search").acquire()
        worker = fork(child_sleeps)
        (tmp_path / "worker").write_text(str(worker))
        time.sleep(60)
        held.release()

    parent = fork(parent_with_a_child)
    wait_for(lambda: (tmp_path / "worker").exists() and holder_written(tmp_path), timeout_s=20)
    worker = int((tmp_path / "worker").read_text())
    try:
        os.kill(parent, signal.SIGKILL)
        wait(parent)
        with RunLock(tmp_path, "mohaq search --resume") as taken:  # the worker still lives
            assert taken.took_over is not None and taken.took_over.pid == parent
    finally:
        os.kill(worker, signal.SIGKILL)
