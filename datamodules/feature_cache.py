"""An on-disk cache of computed features that is never trusted half-written.

One folder per cache key holds one file per split (``train.pt``, ...) and a
``manifest.json`` written last. Every file is written to a temporary file in
the same folder, fsynced, then moved into place with ``os.replace`` (atomic on
one file system). A folder without a manifest, or whose manifest does not
match the files, is incomplete: a run killed mid-way leaves at most stray
temporary files, which the next run deletes before recomputing.

The manifest holds each split's size and SHA-256. Loading a split verifies its
content (once per process: a loaded split is kept by its DataModule); a damaged
one raises :class:`CacheDamagedError`, naming the file, so its owner recomputes
that split (see ``TIMITDataModule``). A failed write (full disk) raises
:class:`FeatureCacheError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from mohaq.datamodules.checksums import file_sha256

MANIFEST = "manifest.json"
#: 2: the manifest holds a SHA-256 per split (caches of format 1 are recomputed once).
CACHE_FORMAT_VERSION = 2
_TEMP_PREFIX = ".tmp-"


class FeatureCacheError(RuntimeError):
    """The feature cache cannot be written (full or read-only disk, permissions)."""


class CacheDamagedError(FeatureCacheError):
    """A cached split whose content does not match its manifest.

    Attributes:
        split: the split.
        path: its file.
    """

    def __init__(self, message: str, *, split: str, path: Path) -> None:
        super().__init__(message)
        self.split, self.path = split, path


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/mohaq`` or ``~/.cache/mohaq``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mohaq"


def fingerprint(payload: Any) -> str:
    """A short stable hash of JSON-serializable data (dict keys are sorted)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def files_fingerprint(paths: Iterable[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime in ns) of each file: any edit of the corpus changes the key."""
    entries = []
    for path in paths:
        stat = path.stat()
        entries.append((str(path), stat.st_size, stat.st_mtime_ns))
    return entries


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Writes ``path`` through a fsynced temporary file in the same folder.

    Args:
        path: the destination.
        write: called with the open binary temporary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    # The rename itself must reach the disk before the manifest claims the file.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Holds an exclusive advisory lock on ``path`` (created if needed) while inside.

    Several processes (search workers, one per GPU) may prepare the same cache
    at once; the lock makes one compute while the others wait and then find
    the result complete. The lock dies with its process, so a killed run never
    leaves it held.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class FeatureCache:
    """The cache folder of one corpus + feature configuration.

    Args:
        directory: the folder (created on the first write).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive lock of this cache folder; hold it from the completeness check to commit."""
        return file_lock(self.directory.with_name(self.directory.name + ".lock"))

    def split_path(self, split: str) -> Path:
        return self.directory / f"{split}.pt"

    def manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when absent or unreadable."""
        try:
            return json.loads((self.directory / MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def is_complete(self, splits: Iterable[str]) -> bool:
        """Whether the manifest exists and lists every split with the size on disk."""
        manifest = self.manifest()
        if manifest is None or manifest.get("format") != CACHE_FORMAT_VERSION:
            return False
        files = manifest.get("files", {})
        for split in splits:
            path = self.split_path(split)
            if split not in files or not path.is_file() or path.stat().st_size != files[split]:
                return False
        return True

    def begin(self) -> None:
        """Forgets any previous content: removes the manifest first, then stray temporary files.

        Call it under :meth:`lock`: then the temporary files can only be left
        over by a killed run, never be another process's work in progress.
        """
        (self.directory / MANIFEST).unlink(missing_ok=True)
        if self.directory.is_dir():
            for stray in self.directory.glob(f"{_TEMP_PREFIX}*"):
                stray.unlink(missing_ok=True)

    def _write(self, path: Path, write: Callable[[BinaryIO], None]) -> None:
        try:
            atomic_write(path, write)
        except OSError as error:
            raise FeatureCacheError(
                f"cannot write the feature cache file {path}: {error.strerror or error} (errno "
                f"{error.errno}); make room, or put the cache on another disk (the DataModule's "
                "cache_dir, e.g. --data.cache_dir)"
            ) from error

    def save_split(self, split: str, payload: Mapping[str, Any]) -> None:
        """Writes one split atomically (not trusted until :meth:`commit`).

        Raises:
            FeatureCacheError: the disk refused it.
        """
        self._write(self.split_path(split), lambda handle: torch.save(dict(payload), handle))

    def commit(self, splits: Iterable[str], metadata: Mapping[str, Any]) -> None:
        """Writes the manifest, last: from now on the splits are trusted.

        Raises:
            FeatureCacheError: the disk refused it.
        """
        splits = list(splits)
        files = {split: self.split_path(split).stat().st_size for split in splits}
        digests = {split: file_sha256(self.split_path(split)) for split in splits}
        manifest = {"format": CACHE_FORMAT_VERSION, "files": files, "sha256": digests, **metadata}
        self._write_manifest(manifest)

    def _write_manifest(self, manifest: Mapping[str, Any]) -> None:
        text = json.dumps(manifest, indent=1, sort_keys=True, default=str).encode()
        self._write(self.directory / MANIFEST, lambda handle: handle.write(text))

    def replace_split(self, split: str, payload: Mapping[str, Any]) -> None:
        """Rewrites one split of a complete cache and its manifest entry (a repair).

        Call it under :meth:`lock`.
        """
        manifest = self.manifest()
        if manifest is None:
            raise FileNotFoundError(f"feature cache {str(self.directory)!r} has no manifest")
        self.save_split(split, payload)
        path = self.split_path(split)
        manifest["files"][split] = path.stat().st_size
        manifest["sha256"][split] = file_sha256(path)
        self._write_manifest(manifest)

    def verify_split(self, split: str) -> None:
        """Checks one split's content against the manifest.

        Raises:
            CacheDamagedError: naming the file.
        """
        path = self.split_path(split)
        expected = (self.manifest() or {}).get("sha256", {}).get(split)
        actual = file_sha256(path)
        if actual != expected:
            raise CacheDamagedError(
                f"feature cache file {path} is damaged: its SHA-256 {actual[:12]}... does not "
                f"match the manifest's {str(expected)[:12]}...",
                split=split,
                path=path,
            )

    def load_split(self, split: str) -> dict[str, Any]:
        """Loads one split of a complete cache, verified against its checksum.

        Raises:
            FileNotFoundError: if the cache is incomplete (``prepare_data`` did not finish).
            CacheDamagedError: if the file's content does not match the manifest.
        """
        if not self.is_complete([split]):
            raise FileNotFoundError(
                f"feature cache {str(self.directory)!r} has no complete {split!r} split; "
                "call prepare_data() first (Lightning's Trainer does)"
            )
        self.verify_split(split)
        try:
            return torch.load(self.split_path(split), map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, ValueError, OSError) as error:  # pragma: no cover
            # A file that matches its checksum but does not load: written by a broken run.
            raise CacheDamagedError(
                f"feature cache file {self.split_path(split)} cannot be loaded ({error})",
                split=split,
                path=self.split_path(split),
            ) from error
