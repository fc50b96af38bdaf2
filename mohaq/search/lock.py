"""An exclusive lock on a run directory, held for a run's whole life.

Two processes writing one run directory (two ``mohaq search`` on the same
``--run_dir``, a search resumed while the beacon stage reads its log)
interleave their evaluation logs and leave a directory that can no longer be
resumed. :class:`RunLock` keeps a second process out with a clear error naming
the holder.

How: an exclusive ``flock`` on ``<run_dir>/mohaq.lock``, which also records
who holds it (pid, host, start time, purpose, command line) for the error
message. The kernel drops the lock when its process ends, however it ends
(``kill -9`` included), so a lock left by a dead process is never stale: the
next run takes it and says whose it was. The file is emptied on release and
never deleted (deleting a lock file while another process waits on it would
let two processes hold "the" lock).

File systems without ``flock`` (some cluster file systems answer ENOLCK or
ENOSYS): an ``O_EXCL`` lock file ``mohaq.lock.pid`` with the same record; a
holder on this host whose process is gone is detected (``kill(pid, 0)``) and
taken over under a ``mkdir`` guard, so two processes cannot both take it over.
A holder on another host cannot be checked: the error says which file to
delete once that process is known to be gone.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mohaq.search.records import ResumeError

log = logging.getLogger(__name__)

LOCK_FILE = "mohaq.lock"
#: errno values of file systems that do not implement flock.
_NO_FLOCK = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})
#: A takeover guard older than this was left by a process killed mid-takeover.
_GUARD_TIMEOUT_S = 30.0

#: Lock descriptors this process holds. A forked child (a DataLoader worker)
#: shares the parent's lock through them and would keep it alive after the
#: parent is killed: children close their copies right after the fork.
_HELD: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


class RunLockError(ResumeError):
    """A run directory whose lock cannot be taken (in use, or not writable)."""


class RunDirectoryInUseError(RunLockError):
    """Another process holds the run directory.

    Attributes:
        holder: who holds it, when the lock file says so.
    """

    def __init__(self, message: str, holder: LockHolder | None = None) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run directory, as recorded in its lock file."""

    pid: int
    host: str
    started: float
    purpose: str
    command: str = ""

    @classmethod
    def current(cls, purpose: str) -> LockHolder:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=time.time(),
            purpose=purpose,
            command=" ".join(sys.argv)[:300],
        )

    @classmethod
    def parse(cls, data: bytes) -> LockHolder | None:
        """The record in a lock file, or None (empty: released; unreadable)."""
        try:
            values: dict[str, Any] = json.loads(data)
            return cls(
                pid=int(values["pid"]),
                host=str(values["host"]),
                started=float(values["started"]),
                purpose=str(values.get("purpose", "")),
                command=str(values.get("command", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode()

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        command = f", command: {self.command}" if self.command else ""
        return f"{self.purpose or 'a mohaq run'} (pid {self.pid} on host {self.host}, started {started}{command})"

    def is_here(self) -> bool:
        return self.host == socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _in_use(directory: Path, holder: LockHolder | None, detail: str = "") -> RunDirectoryInUseError:
    who = (
        holder.describe()
        if holder is not None
        else "another process (it has not recorded its pid yet)"
    )
    if holder is not None and holder.pid == os.getpid() and holder.is_here():
        who = f"this very process ({holder.purpose}): a run cannot be started inside another on the same directory"
    elif holder is not None and holder.is_here() and not _pid_alive(holder.pid):
        who = (
            f"a child of {holder.describe()}, which has ended: the lock is released when that "
            "child ends"
        )
    return RunDirectoryInUseError(
        f"run directory {directory} is in use by {who}; wait for it to finish or choose "
        f"another run_dir{detail}",
        holder,
    )


def _storage_error(directory: Path, error: OSError) -> RunLockError:
    return RunLockError(
        f"cannot lock the run directory {directory}: {error.strerror or error} "
        f"({errno.errorcode.get(error.errno or 0, error.errno)}); the run directory must be "
        "writable: free space, fix its permissions or choose another run_dir"
    )


class RunLock:
    """Exclusive lock of a run directory (see the module docstring).

    Use as a context manager (``with RunLock(run_dir, "search"):``), or call
    :meth:`acquire` and :meth:`release`.

    Args:
        directory: the run directory (created if missing).
        purpose: what holds it, for other processes' errors (``"mohaq search"``).
        wait_s: how long to wait for a holder's record to appear in the error message.
    """

    def __init__(self, directory: str | Path, purpose: str, *, wait_s: float = 0.5) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.purpose = purpose
        self.wait_s = wait_s
        self.took_over: LockHolder | None = None
        self._fd: int | None = None
        self._pid_file: Path | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None or self._pid_file is not None

    # -- flock --------------------------------------------------------------------------
    def acquire(self) -> RunLock:
        """Takes the lock or raises.

        Raises:
            RunDirectoryInUseError: another process holds it (names pid, host, command).
            RunLockError: the directory cannot be written (read-only, full, no permission).
        """
        if self.held:
            return self
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise _storage_error(self.directory, error) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_record(fd)
            os.close(fd)
            raise _in_use(self.directory, holder) from None
        except OSError as error:
            os.close(fd)
            if error.errno in _NO_FLOCK:
                return self._acquire_pid_file()
            raise _storage_error(self.directory, error) from error
        previous = LockHolder.parse(_read_all(fd))
        try:
            record = LockHolder.current(self.purpose).to_bytes()
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
        except OSError as error:
            os.close(fd)  # closing drops the flock
            raise _storage_error(self.directory, error) from error
        self._fd = fd
        _HELD.add(fd)
        if previous is not None:
            self._report_takeover(previous)
        return self

    def _read_record(self, fd: int) -> LockHolder | None:
        # The holder writes its record right after taking the lock: wait a moment for it.
        deadline = time.monotonic() + self.wait_s
        while True:
            holder = LockHolder.parse(_read_all(fd))
            if holder is not None or time.monotonic() >= deadline:
                return holder
            time.sleep(0.02)

    def _report_takeover(self, previous: LockHolder) -> None:
        self.took_over = previous
        hint = ""
        if not previous.is_here():
            hint = (
                "; if that process still runs, this file system does not share locks between "
                "hosts (NFS mounted with nolock?): stop one of the two runs"
            )
        log.warning(
            "%s: took over the lock left by %s, which ended without releasing it (killed?)%s",
            self.directory,
            previous.describe(),
            hint,
        )

    def release(self) -> None:
        """Releases the lock (emptying the record); a no-op when not held."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _HELD.discard(fd)
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass  # a full or read-only disk: the record stays, the kernel lock goes
            finally:
                # LOCK_UN first: a descriptor a child still shares would keep it.
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        if self._pid_file is not None:
            path, self._pid_file = self._pid_file, None
            path.unlink(missing_ok=True)

    # -- O_EXCL fallback ---------------------------------------------------------------
    def _acquire_pid_file(self) -> RunLock:
        path = self.directory / (LOCK_FILE + ".pid")
        for _ in range(3):
            if self._create_pid_file(path):
                return self
            holder = LockHolder.parse(_read_path(path))
            if holder is None:
                time.sleep(self.wait_s)  # being written: look again
                holder = LockHolder.parse(_read_path(path))
            if holder is not None and holder.is_here() and not _pid_alive(holder.pid):
                if self._take_over(path, holder):
                    return self
                continue
            if holder is not None and not holder.is_here():
                raise _in_use(
                    self.directory,
                    holder,
                    f" (this file system has no flock, so a process on another host cannot be "
                    f"checked: once it is known to be gone, delete {path})",
                )
            raise _in_use(self.directory, holder)
        raise _in_use(self.directory, LockHolder.parse(_read_path(path)))

    def _create_pid_file(self, path: Path) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as error:
            raise _storage_error(self.directory, error) from error
        try:
            os.write(fd, LockHolder.current(self.purpose).to_bytes())
        except OSError as error:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise _storage_error(self.directory, error) from error
        os.close(fd)
        self._pid_file = path
        return True

    def _take_over(self, path: Path, stale: LockHolder) -> bool:
        """Replaces a dead holder's file; the mkdir guard lets one process at a time judge it."""
        guard = path.with_name(path.name + ".takeover")
        try:
            guard.mkdir()
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > _GUARD_TIMEOUT_S:
                    guard.rmdir()  # left by a process killed during its takeover
            except OSError:
                pass
            return False
        try:
            if LockHolder.parse(_read_path(path)) != stale:
                return False  # someone else took it over meanwhile
            path.unlink(missing_ok=True)
            if not self._create_pid_file(path):
                return False
        finally:
            guard.rmdir()
        self._report_takeover(stale)
        return True

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        # A lock object nobody can reach any more cannot be released by anyone else.
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def ensure_free(directory: str | Path) -> None:
    """Fails early (before loading models and data) when ``directory`` is in use.

    Probes with a shared lock, so it never keeps a starting run out for longer
    than the probe itself.

    Raises:
        RunDirectoryInUseError: naming the holder.
    """
    directory = Path(directory)
    path = directory / LOCK_FILE
    pid_file = directory / (LOCK_FILE + ".pid")
    if path.exists():
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return  # unreadable: the run's own acquire() will say why
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = LockHolder.parse(_read_all(fd))
            raise _in_use(directory, holder) from None
        except OSError:
            pass  # no flock here: the O_EXCL file below tells
        finally:
            os.close(fd)  # also drops the shared lock
    if pid_file.exists():
        holder = LockHolder.parse(_read_path(pid_file))
        if holder is not None and not (holder.is_here() and not _pid_alive(holder.pid)):
            raise _in_use(directory, holder)


def _read_all(fd: int) -> bytes:
    return os.pread(fd, 1 << 16, 0)


def _read_path(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
