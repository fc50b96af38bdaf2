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
from typing import Literal

# -O3 vectorizes the inner loops; no -ffast-math: in a shared library it would
# set flush-to-zero for the whole process, and the kernels need IEEE rounding.
BASE_FLAGS: tuple[str, ...] = (
    "-O3", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared", "-std=c++17", "-pthread",
)  # fmt: skip
# Tried first; dropped if the compiler rejects it (some targets lack it).
NATIVE_FLAG = "-march=native"
COMPILE_TIMEOUT_SECONDS = 300

# How a recurrent layer runs its per-step loop: "cpu" the compiled CPU kernel,
# "script" the TorchScript loop (any device), "auto" the fastest that applies.
KernelChoice = Literal["auto", "cpu", "script"]
KERNEL_CHOICES: tuple[str, ...] = ("auto", "cpu", "script")

# C++ shared by the kernels: headers, and exp, sigmoid and tanh that the
# compiler can vectorize in float32 (a Cody-Waite reduction and a degree-7
# Taylor polynomial, relative error below 2e-7); float64 uses the C library.
VECTOR_MATH = r"""
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

typedef int64_t i64;

static inline float exp_approx(float x) {
  // exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln(2) / 2, ln 2 split in two
  // parts so that n * LN2_HI is exact; exp(r) by its Taylor polynomial of degree 7.
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = __builtin_rintf(x * 1.44269504088896341f);
  const float r = (x - n * 0.693359375f) + n * 2.12194440054690583e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
static inline double exp_approx(double x) { return std::exp(x); }

template <typename T> static inline T sigmoid(T x) { return T(1) / (T(1) + exp_approx(-x)); }

// tanh(x) = 1 - 2 / (exp(2x) + 1); absolute error about 1e-7 in float32.
static inline float tanh_approx(float x) { return 1.0f - 2.0f / (exp_approx(2.0f * x) + 1.0f); }
static inline double tanh_approx(double x) { return std::tanh(x); }

"""


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
