"""Small C++ kernels for the CPU, compiled once per machine and loaded with ctypes.

Why: a recurrence whose per-step work is a few thousand element-wise
operations (the SRU's state update) is dominated by the cost of calling the
framework once per operation and step, about 3 to 6 microseconds each in a
TorchScript loop. A C++ loop over all steps, vectorized by the compiler, does
the same work in one call, typically 5 to 10 times faster.

The kernels use no torch headers: plain C functions over raw pointers, built
in about a second by the system's C++ compiler (``$CXX``, else ``c++``,
``g++`` or ``clang++``) with ``-march=native`` into the user's cache
(``$MOHAQ_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/mohaq/kernels``, else
``~/.cache/mohaq/kernels``). The file name holds a hash of the source, the
flags, the compiler and the CPU, so a cache shared between different machines
never loads code built for another CPU. Without a compiler, or when the build
fails, :func:`load_library` returns None once with a warning, and callers
fall back to their torch implementation.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

# -O3 vectorizes the inner loops; no -ffast-math: in a shared library it would
# set flush-to-zero for the whole process, and the kernels need IEEE rounding.
BASE_FLAGS: tuple[str, ...] = (
    "-O3", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared", "-std=c++17", "-pthread",
)  # fmt: skip
# Tried first; dropped if the compiler rejects it (some targets lack it).
NATIVE_FLAG = "-march=native"
COMPILE_TIMEOUT_SECONDS = 300


def kernel_cache_dir() -> Path:
    """Where compiled kernels are kept (see the module docstring)."""
    explicit = os.environ.get("MOHAQ_KERNEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mohaq" / "kernels"


def find_compiler() -> str | None:
    """The C++ compiler to use, or None."""
    explicit = os.environ.get("CXX")
    if explicit:
        return shutil.which(explicit) or explicit
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _cpu_signature() -> str:
    """Identifies the instruction set ``-march=native`` targets."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _compile(compiler: str, source: Path, target: Path) -> str | None:
    """Builds ``target``; returns None on success, else the compiler's complaint."""
    error = ""
    for flags in ((*BASE_FLAGS, NATIVE_FLAG), BASE_FLAGS):
        # Built next to the target and renamed into place, so processes that
        # compile at the same time never load a half-written library.
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:
            result = subprocess.run(
                [compiler, *flags, str(source), "-o", str(partial)],
                capture_output=True, text=True, timeout=COMPILE_TIMEOUT_SECONDS, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        if result.returncode == 0:
            os.replace(partial, target)
            return None
        partial.unlink(missing_ok=True)
        error = result.stderr.strip()[-2000:]
    return error


@functools.cache
def load_library(name: str, source: str) -> ctypes.CDLL | None:
    """Compiles ``source`` (C++ with ``extern "C"`` functions) once and loads it.

    Args:
        name: a short name for the file (e.g. ``"sru_cpu"``).
        source: the C++ source text.

    Returns:
        The loaded library, or None (with a warning) when kernels cannot be
        built here: not a POSIX system, no compiler, or a failed build.
    """
    if os.name != "posix":
        return None
    compiler = find_compiler()
    if compiler is None:
        warnings.warn(
            f"no C++ compiler found (set CXX); {name} runs its slower torch implementation",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    key = "\n".join((source, " ".join(BASE_FLAGS), NATIVE_FLAG, compiler, _cpu_signature()))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    directory = kernel_cache_dir()
    target = directory / f"{name}-{digest}.so"
    if not target.exists():
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            directory = Path(tempfile.gettempdir()) / "mohaq-kernels"
            directory.mkdir(parents=True, exist_ok=True)
            target = directory / target.name
        source_file = directory / f"{name}-{digest}.{os.getpid()}.cpp"
        source_file.write_text(source)
        try:
            error = _compile(compiler, source_file, target)
        finally:
            source_file.unlink(missing_ok=True)
        if error is not None:
            warnings.warn(
                f"building the {name} CPU kernel with {compiler} failed; using the slower torch "
                f"implementation. Compiler output:\n{error}",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
    try:
        return ctypes.CDLL(str(target))
    except OSError as exc:
        warnings.warn(
            f"loading the {name} CPU kernel {target} failed ({exc}); using the torch implementation",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
