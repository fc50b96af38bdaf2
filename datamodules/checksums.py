"""Content checksums of the files our stores write (feature cache, synthetic corpus).

A file damaged in place (a disk error, a stray ``dd``, a half-restored backup)
keeps its name and often its size; only its content tells. Each store records
the SHA-256 of every file it wrote in its manifest and checks it when it reads
the file (one pass over bytes that are read anyway: about 1 GB/s).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def checksums(root: Path, paths: Iterable[Path]) -> dict[str, str]:
    """Relative POSIX path (from ``root``) -> SHA-256 of each file."""
    return {path.relative_to(root).as_posix(): file_sha256(path) for path in paths}


def mismatches(root: Path, expected: Mapping[str, str]) -> list[str]:
    """The relative paths whose file is missing or whose content differs, sorted."""
    bad = []
    for name, digest in sorted(expected.items()):
        path = root / name
        if not path.is_file() or file_sha256(path) != digest:
            bad.append(name)
    return bad
