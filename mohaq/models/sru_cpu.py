"""The SRU recurrence as one compiled CPU kernel, forward and backward.

The recurrence is element-wise: every (sequence, direction, unit) runs its own
scalar loop over time, so the kernel gives each thread whole
(sequence, direction) pairs and the compiler vectorizes over units. It reads
the product ``U = W x`` where the matrix product left it, batch-first
``(B, T, D, M, H)``, walks direction 1 backwards from each sequence's last
valid frame, and writes ``h`` straight into the layer's output layout
``(B, T, D*H)``: no flipped copies, no per-step calls. The highway term is
read in place too, from ``U``'s 4th matrix or from the layer input.

Per step, with ``c`` the state before the step (the equations of
:mod:`mohaq.models.sru_recurrence`)::

    f = sigmoid(F + v_f c + b_f);  r = sigmoid(R + v_r c + b_r)
    c' = q(U + f (c - U));          h = hw + r (c' - hw),  hw = alpha * highway

where ``q`` is the optional state fake quantization. The backward pass walks
each sequence in reverse with one carried gradient per unit; it recomputes
``f`` and ``r`` from the saved states instead of storing them.

float32 uses a vectorizable ``exp`` (Cody-Waite reduction and a degree-7
Taylor polynomial, relative error below 2e-7); float64 uses ``std::exp``.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
from torch import Tensor

from mohaq.models.native import VECTOR_MATH, load_library

# Below this many element-steps (B*T*D*H) one thread is faster than starting more.
PARALLEL_MIN_WORK = 1 << 20

SOURCE = (
    VECTOR_MATH
    + r"""
template <typename T> struct Args {
  const T *u, *hw; i64 hw_sb, hw_st, hw_sd;
  const T *vf, *vr, *bf, *br; const i64* lengths;
  T alpha, scale, qmin, qmax; int quantize;
  T *h, *c;                       // forward outputs (c may be null)
  const T *gh;                    // backward: dL/dh, (B, T, D*H)
  T *du, *dhw; i64 dhw_sb, dhw_st, dhw_sd; T* dvec;  // backward outputs (dhw may be null)
  i64 B, T_, D, M, H;
};

static inline i64 time_of(i64 d, i64 k, i64 len) {
  return d == 0 ? k : len - 1 - k;  // direction 1 runs from the last valid frame
}

// One step of one (sequence, direction) over its H units. The pointers never
// alias and the flags are compile-time constants, so the loop vectorizes.
template <typename T, bool Quantize>
static inline void forward_step(
    i64 H, const T* __restrict__ uc, const T* __restrict__ uf, const T* __restrict__ ur,
    const T* __restrict__ hw, const T* __restrict__ vf, const T* __restrict__ vr,
    const T* __restrict__ bf, const T* __restrict__ br, T alpha, T scale, T qmin, T qmax,
    T* __restrict__ c, T* __restrict__ h) {
  for (i64 j = 0; j < H; ++j) {
    const T previous = c[j];
    const T f = sigmoid(uf[j] + vf[j] * previous + bf[j]);
    const T r = sigmoid(ur[j] + vr[j] * previous + br[j]);
    T next = uc[j] + f * (previous - uc[j]);
    if (Quantize) {
      T level = __builtin_rint(next / scale);
      level = level < qmin ? qmin : (level > qmax ? qmax : level);
      next = level * scale;
    }
    const T highway = hw[j] * alpha;
    h[j] = highway + r * (next - highway);
    c[j] = next;
  }
}

template <typename T, bool Quantize>
static void forward_pairs(const Args<T>& a, i64 first, i64 last) {
  const i64 H = a.H, D = a.D, M = a.M;
  std::vector<T> state(H);
  for (i64 pair = first; pair < last; ++pair) {
    const i64 b = pair / D, d = pair % D, len = a.lengths[b];
    std::fill(state.begin(), state.end(), T(0));
    T* c = state.data();
    const T *vf = a.vf + d * H, *vr = a.vr + d * H, *bf = a.bf + d * H, *br = a.br + d * H;
    for (i64 k = 0; k < len; ++k) {
      const i64 t = time_of(d, k, len), row = (b * a.T_ + t) * D + d;
      const T* uc = a.u + row * M * H;
      const T* hw = a.hw + b * a.hw_sb + t * a.hw_st + d * a.hw_sd;
      forward_step<T, Quantize>(H, uc, uc + H, uc + 2 * H, hw, vf, vr, bf, br, a.alpha, a.scale,
                                a.qmin, a.qmax, c, a.h + row * H);
      if (a.c) std::memcpy(a.c + row * H, c, H * sizeof(T));
    }
    for (i64 t = len; t < a.T_; ++t) {  // padded frames: zero (outputs are never left unset)
      const i64 row = (b * a.T_ + t) * D + d;
      std::fill(a.h + row * H, a.h + (row + 1) * H, T(0));
      if (a.c) std::fill(a.c + row * H, a.c + (row + 1) * H, T(0));
    }
  }
}

template <typename T, bool Quantize, bool HighwayGrad>
static inline void backward_step(
    i64 H, const T* __restrict__ uc, const T* __restrict__ uf, const T* __restrict__ ur,
    const T* __restrict__ hw, const T* __restrict__ vf, const T* __restrict__ vr,
    const T* __restrict__ bf, const T* __restrict__ br, T alpha, T scale, T qmin, T qmax,
    const T* __restrict__ c_prev, const T* __restrict__ c_now, const T* __restrict__ gh,
    T* __restrict__ g_next, T* __restrict__ duc, T* __restrict__ duf, T* __restrict__ dur,
    T* __restrict__ dhw, T* __restrict__ dvf, T* __restrict__ dvr, T* __restrict__ dbf,
    T* __restrict__ dbr) {
  for (i64 j = 0; j < H; ++j) {
    const T previous = c_prev[j];
    const T f = sigmoid(uf[j] + vf[j] * previous + bf[j]);
    const T r = sigmoid(ur[j] + vr[j] * previous + br[j]);
    const T highway = hw[j] * alpha;
    const T dh = gh[j];
    const T d_reset = dh * (c_now[j] - highway) * r * (T(1) - r);
    if (HighwayGrad) dhw[j] = dh * (T(1) - r) * alpha;
    T g = g_next[j] + dh * r;  // dL/dc_k, then through the quantizer's STE
    if (Quantize) {
      const T level = __builtin_rint((uc[j] + f * (previous - uc[j])) / scale);
      g = (level >= qmin && level <= qmax) ? g : T(0);
    }
    const T d_forget = g * (previous - uc[j]) * f * (T(1) - f);
    duc[j] = g * (T(1) - f);
    duf[j] = d_forget;
    dur[j] = d_reset;
    g_next[j] = g * f + d_forget * vf[j] + d_reset * vr[j];
    dvf[j] += d_forget * previous;
    dvr[j] += d_reset * previous;
    dbf[j] += d_forget;
    dbr[j] += d_reset;
  }
}

template <typename T, bool Quantize, bool HighwayGrad>
static void backward_pairs(const Args<T>& a, i64 first, i64 last) {
  const i64 H = a.H, D = a.D, M = a.M;
  std::vector<T> carry(H), zeros(H, T(0));
  for (i64 pair = first; pair < last; ++pair) {
    const i64 b = pair / D, d = pair % D, len = a.lengths[b];
    std::fill(carry.begin(), carry.end(), T(0));
    const T *vf = a.vf + d * H, *vr = a.vr + d * H, *bf = a.bf + d * H, *br = a.br + d * H;
    T* dvec = a.dvec + pair * 4 * H;  // d v_f, d v_r, d b_f, d b_r of this pair
    for (i64 k = len - 1; k >= 0; --k) {
      const i64 t = time_of(d, k, len), row = (b * a.T_ + t) * D + d;
      const T* c_prev = k > 0 ? a.c + ((b * a.T_ + time_of(d, k - 1, len)) * D + d) * H
                              : zeros.data();
      const T* uc = a.u + row * M * H;
      T* duc = a.du + row * M * H;
      T* dhw = HighwayGrad ? a.dhw + b * a.dhw_sb + t * a.dhw_st + d * a.dhw_sd : nullptr;
      backward_step<T, Quantize, HighwayGrad>(
          H, uc, uc + H, uc + 2 * H, a.hw + b * a.hw_sb + t * a.hw_st + d * a.hw_sd, vf, vr, bf,
          br, a.alpha, a.scale, a.qmin, a.qmax, c_prev, a.c + row * H, a.gh + row * H,
          carry.data(), duc, duc + H, duc + 2 * H, dhw, dvec, dvec + H, dvec + 2 * H,
          dvec + 3 * H);
    }
    for (i64 t = len; t < a.T_; ++t) {  // padded frames get no gradient
      const i64 row = (b * a.T_ + t) * D + d;
      std::fill(a.du + row * M * H, a.du + (row + 1) * M * H, T(0));
      if (HighwayGrad) {
        T* dhw = a.dhw + b * a.dhw_sb + t * a.dhw_st + d * a.dhw_sd;
        std::fill(dhw, dhw + H, T(0));
      }
    }
  }
}

template <typename T>
static void run(void (*body)(const Args<T>&, i64, i64), const Args<T>& a, int threads) {
  const i64 pairs = a.B * a.D;
  if (threads > pairs) threads = (int)pairs;
  if (threads <= 1) { body(a, 0, pairs); return; }
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i)
    pool.emplace_back(body, std::cref(a), pairs * i / threads, pairs * (i + 1) / threads);
  body(a, 0, pairs / threads);
  for (auto& worker : pool) worker.join();
}

#define SRU_ENTRY_POINTS(T, SUFFIX)                                                          \
  extern "C" void sru_forward_##SUFFIX(                                                      \
      const T* u, const T* hw, i64 hw_sb, i64 hw_st, i64 hw_sd, const T* vf, const T* vr,    \
      const T* bf, const T* br, const i64* lengths, T alpha, T scale, T qmin, T qmax,        \
      int quantize, T* h, T* c, i64 B, i64 T_, i64 D, i64 M, i64 H, int threads) {           \
    Args<T> a{u, hw, hw_sb, hw_st, hw_sd, vf, vr, bf, br, lengths, alpha, scale, qmin, qmax, \
              quantize, h, c, nullptr, nullptr, nullptr, 0, 0, 0, nullptr, B, T_, D, M, H};  \
    run<T>(quantize ? forward_pairs<T, true> : forward_pairs<T, false>, a, threads);        \
  }                                                                                          \
  extern "C" void sru_backward_##SUFFIX(                                                     \
      const T* u, const T* hw, i64 hw_sb, i64 hw_st, i64 hw_sd, const T* vf, const T* vr,    \
      const T* bf, const T* br, const i64* lengths, T alpha, T scale, T qmin, T qmax,        \
      int quantize, const T* c, const T* gh, T* du, T* dhw, i64 dhw_sb, i64 dhw_st,          \
      i64 dhw_sd, T* dvec, i64 B, i64 T_, i64 D, i64 M, i64 H, int threads) {                \
    Args<T> a{u, hw, hw_sb, hw_st, hw_sd, vf, vr, bf, br, lengths, alpha, scale, qmin, qmax, \
              quantize, nullptr, const_cast<T*>(c), gh, du, dhw, dhw_sb, dhw_st, dhw_sd,     \
              dvec, B, T_, D, M, H};                                                         \
    auto body = quantize ? (dhw ? backward_pairs<T, true, true> : backward_pairs<T, true, false>) \
                         : (dhw ? backward_pairs<T, false, true> : backward_pairs<T, false, false>); \
    run<T>(body, a, threads);                                                                \
  }

SRU_ENTRY_POINTS(float, f32)
SRU_ENTRY_POINTS(double, f64)
"""
)

_SUFFIXES = {torch.float32: ("f32", ctypes.c_float), torch.float64: ("f64", ctypes.c_double)}


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    pointer, i64, flag = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for suffix, real in _SUFFIXES.values():
        head = [pointer, pointer, i64, i64, i64, pointer, pointer, pointer, pointer, pointer]
        quant = [real, real, real, real, flag]
        sizes = [i64, i64, i64, i64, i64, flag]
        forward = getattr(library, f"sru_forward_{suffix}")
        forward.argtypes = [*head, *quant, pointer, pointer, *sizes]
        forward.restype = None
        backward = getattr(library, f"sru_backward_{suffix}")
        backward.argtypes = [*head, *quant, pointer, pointer, pointer, pointer, i64, i64, i64,
                             pointer, *sizes]  # fmt: skip
        backward.restype = None
    return library


def _library() -> ctypes.CDLL | None:
    library = load_library("sru_cpu", SOURCE)
    if library is not None and not hasattr(library, "_mohaq_declared"):
        _declare(library)
        library._mohaq_declared = True  # type: ignore[attr-defined]
    return library


def cpu_kernel_available(*tensors: Tensor | None) -> bool:
    """Whether the compiled kernel can run on these tensors (CPU, float32 or float64)."""
    dtypes = {t.dtype for t in tensors if t is not None}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _SUFFIXES:
        return False
    if any(t.device.type != "cpu" for t in tensors if t is not None):
        return False
    return _library() is not None


def _pointer(tensor: Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _threads(work: int) -> int:
    return torch.get_num_threads() if work >= PARALLEL_MIN_WORK else 1


class _Problem:
    """Checked, kernel-ready views of one call's tensors."""

    def __init__(
        self,
        u: Tensor,
        highway: Tensor | None,
        vectors: tuple[Tensor, Tensor, Tensor, Tensor],
        lengths: Tensor,
        alpha: float,
        scale: float,
        bits: int,
    ) -> None:
        self.batch, self.steps, self.directions, self.matrices, self.hidden = u.shape
        self.u = u.contiguous()
        if highway is None:
            # The 4th matrix of U: same rows as U, 3 * H further along each row.
            self.highway, self.highway_offset = self.u, 3 * self.hidden
            self.highway_strides = self.u.stride()[:2] + (self.matrices * self.hidden,)
        else:
            if highway.stride(-1) != 1:
                highway = highway.contiguous()
            self.highway, self.highway_offset = highway, 0
            self.highway_strides = highway.stride()[:2] + (self.hidden,)
        self.vectors = tuple(v.contiguous() for v in vectors)
        # A length beyond T would read past the tensors; the masks of the
        # torch implementation treat it as T, and so does the kernel.
        self.lengths = lengths.to(device="cpu", dtype=torch.int64).clamp(0, self.steps).contiguous()
        self.alpha, self.scale = alpha, scale
        quantize = bits > 0
        qmax = float(2 ** (bits - 1) - 1) if quantize else 0.0
        self.quant = (scale, -qmax - 1.0 if quantize else 0.0, qmax, int(quantize))
        suffix, self.real = _SUFFIXES[u.dtype]
        library = _library()
        assert library is not None
        self.forward_kernel = getattr(library, f"sru_forward_{suffix}")
        self.backward_kernel = getattr(library, f"sru_backward_{suffix}")
        work = self.batch * self.steps * self.directions * self.hidden
        self.sizes = (self.batch, self.steps, self.directions, self.matrices, self.hidden)
        self.threads = _threads(work)

    def _new(self, *shape: int) -> Tensor:
        # The kernels write every frame, padded ones as zeros.
        return torch.empty(*shape, dtype=self.u.dtype)

    def _head(self) -> list[Any]:
        element = self.u.element_size()
        highway = self.highway.data_ptr() + self.highway_offset * element
        return [self.u.data_ptr(), highway, *self.highway_strides,
                *(v.data_ptr() for v in self.vectors), self.lengths.data_ptr(),
                self.alpha, *self.quant]  # fmt: skip

    def forward(self, keep_states: bool) -> tuple[Tensor, Tensor | None]:
        b, t, d, _, h = self.sizes
        out = self._new(b, t, d * h)
        states = self._new(b, t, d, h) if keep_states else None
        self.forward_kernel(*self._head(), out.data_ptr(), _pointer(states), *self.sizes,
                            self.threads)  # fmt: skip
        return out, states

    def backward(
        self, states: Tensor, grad_h: Tensor, highway_grad: bool
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        b, t, d, m, h = self.sizes
        grad_h = grad_h.contiguous()
        grad_u = self._new(b, t, d, m, h)
        if self.highway is self.u:
            grad_highway, target = None, grad_u.data_ptr() + 3 * h * grad_u.element_size()
            target_strides = grad_u.stride()[:2] + (m * h,)
        elif highway_grad:
            grad_highway = self._new(b, t, d * h)
            target, target_strides = grad_highway.data_ptr(), grad_highway.stride()[:2] + (h,)
        else:
            grad_highway, target, target_strides = None, None, (0, 0, 0)
        per_pair = torch.zeros(b, d, 4, h, dtype=self.u.dtype)
        self.backward_kernel(*self._head(), states.data_ptr(), grad_h.data_ptr(),
                             grad_u.data_ptr(), target, *target_strides, per_pair.data_ptr(),
                             *self.sizes, self.threads)  # fmt: skip
        return grad_u, grad_highway, per_pair.sum(0)


class _SRUCPUFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        u: Tensor,
        highway: Tensor | None,
        v_forget: Tensor,
        v_reset: Tensor,
        b_forget: Tensor,
        b_reset: Tensor,
        lengths: Tensor,
        alpha: float,
        scale: float,
        bits: int,
    ) -> tuple[Tensor, Tensor]:
        vectors = (v_forget, v_reset, b_forget, b_reset)
        out, states = _Problem(u, highway, vectors, lengths, alpha, scale, bits).forward(True)
        assert states is not None
        ctx.save_for_backward(u, highway, *vectors, lengths, states)
        ctx.constants = (alpha, scale, bits)
        ctx.mark_non_differentiable(states)
        return out, states

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor, grad_states: Tensor | None):  # type: ignore[override]
        u, highway, *vectors, lengths, states = ctx.saved_tensors
        problem = _Problem(u, highway, tuple(vectors), lengths, *ctx.constants)  # type: ignore[arg-type]
        grad_u, grad_highway, grad_vectors = problem.backward(
            states, grad_h, ctx.needs_input_grad[1]
        )
        return (grad_u, grad_highway, *grad_vectors.unbind(1), None, None, None, None)


def sru_cpu_recurrence(
    u: Tensor,
    highway: Tensor | None,
    v_forget: Tensor,
    v_reset: Tensor,
    b_forget: Tensor,
    b_reset: Tensor,
    lengths: Tensor,
    *,
    alpha: float,
    state_quant: tuple[Tensor | float, int] | None = None,
    keep_states: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """The SRU recurrence of a layer on the CPU; see :func:`cpu_kernel_available`.

    Args:
        u: the product, ``(B, T, D, M, H)``: candidate, forget, reset and, with
            ``M = 4``, the highway matrix.
        highway: the highway source ``(B, T, D*H)`` when ``M = 3``; None reads
            ``U``'s 4th matrix.
        v_forget, v_reset, b_forget, b_reset: ``(D, H)``.
        lengths: valid frames per sequence ``(B,)``.
        alpha: the highway scale.
        state_quant: ``(scale, bits)`` to fake-quantize the state at every step.
        keep_states: also return the states ``(B, T, D, H)`` (zero at padded frames).

    Returns:
        ``h`` as ``(B, T, D*H)``, zero at padded frames, and the states or None.
        The states are not differentiable.
    """
    scale, bits = (float(state_quant[0]), int(state_quant[1])) if state_quant else (1.0, 0)
    inputs = (u, highway, v_forget, v_reset, b_forget, b_reset)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        out, states = _SRUCPUFunction.apply(*inputs, lengths, alpha, scale, bits)
        return out, states if keep_states else None
    problem = _Problem(u, highway, (v_forget, v_reset, b_forget, b_reset), lengths, alpha, scale,
                       bits)  # fmt: skip
    return problem.forward(keep_states)
