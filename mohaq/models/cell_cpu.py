"""The GRU and LSTM per-step loops as compiled CPU kernels, forward and backward.

Same contract as the scripted loops of :mod:`mohaq.models.cell_loops` (same
inputs, same quantization points and modes, same results), but the whole
loop over the steps is one C++ call: the recurrent product of every step is
a small matrix product (rows: the batch) done by a register-blocked kernel,
the gates are vectorized loops, and nothing returns to Python between steps.
The backward pass walks the steps in reverse with hand-written gradients:
straight-through at every quantized point (1 inside the integer range, 0
where clamped, as :func:`mohaq.quant.functional.fake_quantize`); the weight
gradient of the recurrent product is one matrix product over all steps,
done by torch afterwards.

Padded rows are computed like valid ones (as in the scripted loop, so that a
per-step dynamic scale sees the same values) but their state is carried and
their output is zero.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
from torch import Tensor

from mohaq.models.cell_loops import GRU_LOOP_POINTS, LSTM_LOOP_POINTS
from mohaq.models.native import VECTOR_MATH, load_library

# Point indices inside the kernels: the scripted loops' order.
CELLS: dict[str, tuple[str, ...]] = {"gru": GRU_LOOP_POINTS, "lstm": LSTM_LOOP_POINTS}
GATES = {"gru": 3, "lstm": 4}
# Saved per step for the backward pass: the gate activations (GRU r, z, n,
# rhn; LSTM i, f, g, o) and, for the LSTM, tanh(c) and the state c.
ACTIVATIONS = {"gru": 4, "lstm": 4}
# Below this many multiply-adds per step the directions run on one thread.
PARALLEL_MIN_MACS = 1 << 17

SOURCE = (
    VECTOR_MATH
    + r"""
#include <algorithm>

// Vector width of the register-blocked products: the widest registers the compiler
// targets (-march=native), and rows per register tile such that the tile's 2 * rows
// accumulators and 2 weight vectors fit in the 32 (AVX-512) or 16 (AVX2, SSE) vector
// registers. 64-byte vectors on a CPU without AVX-512 are each two registers and the
// 8-row tile's accumulators spill: on an AVX2-only EPYC the GRU/LSTM loops then ran
// 10x slower than with 32-byte vectors and 4-row tiles.
#if defined(__AVX512F__)
#define MOHAQ_VBYTES 64
#define MOHAQ_TILE_ROWS 8
#elif defined(__AVX__)
#define MOHAQ_VBYTES 32
#define MOHAQ_TILE_ROWS 4
#else
#define MOHAQ_VBYTES 16
#define MOHAQ_TILE_ROWS 4
#endif

template <typename T> struct Vec;
template <> struct Vec<float> { typedef float type __attribute__((vector_size(MOHAQ_VBYTES))); };
template <> struct Vec<double> { typedef double type __attribute__((vector_size(MOHAQ_VBYTES))); };

template <typename T> static inline typename Vec<T>::type load(const T* p) {
  typename Vec<T>::type v; std::memcpy(&v, p, sizeof v); return v;
}
template <typename T> static inline void store(T* p, typename Vec<T>::type v) {
  std::memcpy(p, &v, sizeof v);
}

// The right-hand matrix of the per-step products, packed once per call into panels
// of NP columns, each K x NP contiguous and zero-padded: every step then reads it
// in order instead of striding across rows (the matrix rarely fits in L2).
// Element (k, n) of the matrix is w[k * stride_k + n * stride_n].
template <typename T> struct Panels {
  static constexpr int L = MOHAQ_VBYTES / sizeof(T), NP = 2 * L;
  i64 K, N, count;
  std::vector<T> data;
  Panels(i64 K_, i64 N_, const T* w, i64 stride_k, i64 stride_n)
      : K(K_), N(N_), count((N_ + NP - 1) / NP), data(count * K_ * NP, T(0)) {
    for (i64 p = 0; p < count; ++p) {
      const i64 n0 = p * NP, width = std::min<i64>(NP, N - n0);
      for (i64 k = 0; k < K; ++k)
        for (i64 c = 0; c < width; ++c)
          data[(p * K + k) * NP + c] = w[k * stride_k + (n0 + c) * stride_n];
    }
  }
};

// out[b][0:width] += sum_k a[b][k] panel[k][:] for NB rows, accumulators in registers.
template <typename T, int NB>
static inline void panel_tile(i64 K, const T* __restrict__ a, i64 lda, const T* __restrict__ panel,
                              T* __restrict__ out, i64 ldo, i64 width) {
  typedef typename Vec<T>::type vt;
  constexpr int L = MOHAQ_VBYTES / sizeof(T);
  vt acc[NB][2];
  T edge[NB][2 * L];  // the last panel's columns, padded
  const bool full = width == 2 * L;
  for (int b = 0; b < NB; ++b) {
    const T* row = out + b * ldo;
    if (!full) {
      std::fill(edge[b], edge[b] + 2 * L, T(0));
      std::memcpy(edge[b], row, width * sizeof(T));
      row = edge[b];
    }
    acc[b][0] = load<T>(row);
    acc[b][1] = load<T>(row + L);
  }
  for (i64 k = 0; k < K; ++k) {
    const vt w0 = load<T>(panel + k * 2 * L), w1 = load<T>(panel + k * 2 * L + L);
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) {
      const T ab = a[b * lda + k];
      acc[b][0] += ab * w0;
      acc[b][1] += ab * w1;
    }
  }
  for (int b = 0; b < NB; ++b) {
    T* row = full ? out + b * ldo : edge[b];
    store<T>(row, acc[b][0]);
    store<T>(row + L, acc[b][1]);
    if (!full) std::memcpy(out + b * ldo, edge[b], width * sizeof(T));
  }
}

// out (B x N) += a (B x K) @ w (K x N, packed in panels).
template <typename T>
static void gemm(i64 B, const T* a, i64 lda, const Panels<T>& w, T* out, i64 ldo) {
  for (i64 p = 0; p < w.count; ++p) {
    const i64 n0 = p * Panels<T>::NP, width = std::min<i64>(Panels<T>::NP, w.N - n0);
    const T* panel = w.data.data() + p * w.K * Panels<T>::NP;
    i64 b = 0;
    for (; b + MOHAQ_TILE_ROWS <= B; b += MOHAQ_TILE_ROWS)
      panel_tile<T, MOHAQ_TILE_ROWS>(w.K, a + b * lda, lda, panel, out + b * ldo + n0, ldo, width);
    for (; b + 4 <= B; b += 4)
      panel_tile<T, 4>(w.K, a + b * lda, lda, panel, out + b * ldo + n0, ldo, width);
    for (; b < B; ++b) panel_tile<T, 1>(w.K, a + b * lda, lda, panel, out + b * ldo + n0, ldo, width);
  }
}

// W_hh of directions [d0, d1), (G*H, H) each, packed: for the forward product
// h_in @ W^T (K = H, N = G*H), or for the backward dhh @ W (K = G*H, N = H).
template <typename T>
static std::vector<Panels<T>> pack_directions(const T* w, i64 d0, i64 d1, i64 GH, i64 H,
                                              bool transposed) {
  std::vector<Panels<T>> packed;
  for (i64 d = d0; d < d1; ++d) {
    const T* wd = w + d * GH * H;
    if (transposed) packed.emplace_back(H, GH, wd, 1, H);
    else packed.emplace_back(GH, H, wd, H, 1);
  }
  return packed;
}

// Quantization points. mode: 0 float, 1 fixed scale, 2 scale = max|x| of the step,
// 3 record (calibration): the value passes and is copied out.
template <typename T> struct Point {
  int mode; T scale, low, high;
  T* record;        // (T, D, B, width) or null
  uint8_t* inside;  // STE mask (T, D, B, width) or null
};

template <typename T> struct Problem {
  i64 T_, D, B, H, G;
  const T* ih;      // (T, D, B, G*H)
  const T* w;       // (D, G*H, H): W_hh
  const T* b_hh;    // (D, G*H)
  const i64* lengths;
  Point<T>* points;
  T* out;           // (T, D, B, H)
  // forward: saved for the backward pass (null without grad)
  T *s_hin, *s_hh, *s_act, *s_tc, *s_c;
  // backward
  const T* d_out;
  T *d_ih, *d_hh;   // (T, D, B, G*H)
};

template <typename T, bool Mask>
static inline void quantize(i64 n, T scale, T low, T high, T* __restrict__ x,
                            uint8_t* __restrict__ inside) {
  for (i64 j = 0; j < n; ++j) {
    const T level = __builtin_rint(x[j] / scale);
    const T clamped = level < low ? low : (level > high ? high : level);
    if (Mask) inside[j] = level == clamped;
    x[j] = clamped * scale;
  }
}

// Applies a point to n contiguous values of one step (all rows of the directions run
// here); offset: where these values sit in the point's (T, D, B, width) buffers.
template <typename T>
static void apply_point(const Point<T>& p, T* __restrict__ x, i64 n, i64 offset) {
  if (p.mode == 0) return;
  if (p.mode == 3) { std::memcpy(p.record + offset, x, n * sizeof(T)); return; }
  T scale = p.scale;
  if (p.mode == 2) {
    T top = 0;
    for (i64 j = 0; j < n; ++j) top = std::max(top, std::fabs(x[j]));
    scale = std::max(top, T(1e-12)) / p.high;
  }
  if (p.inside) quantize<T, true>(n, scale, p.low, p.high, x, p.inside + offset);
  else quantize<T, false>(n, scale, p.low, p.high, x, nullptr);
}

// The STE mask of a point at offset, or all ones (float points pass everything).
template <typename T>
static inline const uint8_t* mask(const Point<T>& p, i64 offset, const uint8_t* ones) {
  return p.inside ? p.inside + offset : ones;
}

// Element-wise loops over contiguous rows, on non-aliasing pointers (they vectorize).
#define R_ __restrict__
template <typename T> static inline void sigmoid_sum(i64 n, const T* R_ a, const T* R_ b, T* R_ out) {
  for (i64 j = 0; j < n; ++j) out[j] = sigmoid(a[j] + b[j]);
}
template <typename T> static inline void tanh_sum(i64 n, const T* R_ a, const T* R_ b, T* R_ out) {
  for (i64 j = 0; j < n; ++j) out[j] = tanh_approx(a[j] + b[j]);
}
template <typename T> static inline void tanh_of(i64 n, const T* R_ a, T* R_ out) {
  for (i64 j = 0; j < n; ++j) out[j] = tanh_approx(a[j]);
}
template <typename T> static inline void product(i64 n, const T* R_ a, const T* R_ b, T* R_ out) {
  for (i64 j = 0; j < n; ++j) out[j] = a[j] * b[j];
}
template <typename T> static inline void sum(i64 n, const T* R_ a, const T* R_ b, T* R_ out) {
  for (i64 j = 0; j < n; ++j) out[j] = a[j] + b[j];
}
// (1 - z) * n
template <typename T>
static inline void complement_product(i64 n, const T* R_ z, const T* R_ v, T* R_ out) {
  for (i64 j = 0; j < n; ++j) out[j] = (T(1) - z[j]) * v[j];
}
// A gradient through a point's straight-through mask.
template <typename T>
static inline void through(i64 n, const T* R_ grad, const uint8_t* R_ inside, T* R_ out) {
  for (i64 j = 0; j < n; ++j) out[j] = grad[j] * T(inside[j]);
}
// Valid rows take the new state and output it; padded rows keep the state, output 0.
template <typename T>
static inline void commit(i64 n, bool valid, const T* R_ next, T* R_ state, T* R_ out) {
  if (valid) {
    std::memcpy(state, next, n * sizeof(T));
    std::memcpy(out, next, n * sizeof(T));
  } else {
    std::fill(out, out + n, T(0));
  }
}

// Directions [d0, d1) of one step: rows (d, b) are contiguous, d-major.
template <typename T> struct Rows {
  i64 d0, d1, B;
  i64 count() const { return (d1 - d0) * B; }
};

enum GruPoint { G_H, G_HH, G_R, G_Z, G_N, G_RHN, G_ZH, G_ZN };
enum LstmPoint { L_H, L_C, L_HH, L_I, L_F, L_G, L_O, L_FC, L_IG, L_TANH_C, L_OC };

template <typename T>
static void recurrent_product(const Problem<T>& p, const std::vector<Panels<T>>& w, i64 d0,
                              i64 d1, const T* hin, T* hh) {
  const i64 H = p.H, GH = p.G * p.H, B = p.B;
  for (i64 d = d0; d < d1; ++d) {
    T* rows = hh + (d - d0) * B * GH;
    for (i64 b = 0; b < B; ++b) std::memcpy(rows + b * GH, p.b_hh + d * GH, GH * sizeof(T));
    gemm<T>(B, hin + (d - d0) * B * H, H, w[d - d0], rows, GH);
  }
}

template <typename T>
static void gru_forward(Problem<T>& p, i64 d0, i64 d1) {
  const i64 H = p.H, GH = 3 * H, B = p.B, R = (d1 - d0) * B, D = p.D, n = R * H;
  std::vector<T> h(n, T(0)), hin(n), hh(R * GH), r(n), z(n), nn(n), rhn(n), zh(n), zn(n), next(n);
  const std::vector<Panels<T>> w = pack_directions(p.w, d0, d1, GH, H, true);
  const Point<T>* q = p.points;
  for (i64 k = 0; k < p.T_; ++k) {
    const i64 row0 = (k * D + d0) * B, at = row0 * H;  // this step's rows in (T, D, B) order
    const T* x = p.ih + row0 * GH;
    std::copy(h.begin(), h.end(), hin.begin());
    apply_point(q[G_H], hin.data(), n, at);
    recurrent_product(p, w, d0, d1, hin.data(), hh.data());
    apply_point(q[G_HH], hh.data(), R * GH, row0 * GH);
    for (i64 i = 0; i < R; ++i) {
      sigmoid_sum(H, x + i * GH, &hh[i * GH], &r[i * H]);
      sigmoid_sum(H, x + i * GH + H, &hh[i * GH + H], &z[i * H]);
    }
    apply_point(q[G_R], r.data(), n, at);
    apply_point(q[G_Z], z.data(), n, at);
    for (i64 i = 0; i < R; ++i) product(H, &r[i * H], &hh[i * GH + 2 * H], &rhn[i * H]);
    apply_point(q[G_RHN], rhn.data(), n, at);
    for (i64 i = 0; i < R; ++i) tanh_sum(H, x + i * GH + 2 * H, &rhn[i * H], &nn[i * H]);
    apply_point(q[G_N], nn.data(), n, at);
    complement_product(n, z.data(), nn.data(), zn.data());
    apply_point(q[G_ZN], zn.data(), n, at);
    product(n, z.data(), hin.data(), zh.data());
    apply_point(q[G_ZH], zh.data(), n, at);
    sum(n, zn.data(), zh.data(), next.data());
    for (i64 i = 0; i < R; ++i)
      commit(H, k < p.lengths[i % B], &next[i * H], &h[i * H], p.out + at + i * H);
    if (p.s_hin) {
      std::memcpy(p.s_hin + at, hin.data(), n * sizeof(T));
      std::memcpy(p.s_hh + row0 * GH, hh.data(), R * GH * sizeof(T));
      T* act = p.s_act + row0 * 4 * H;
      for (i64 i = 0; i < R; ++i) {
        const T* parts[4] = {&r[i * H], &z[i * H], &nn[i * H], &rhn[i * H]};
        for (int part = 0; part < 4; ++part)
          std::memcpy(act + (i * 4 + part) * H, parts[part], H * sizeof(T));
      }
    }
  }
}

// One valid row of one GRU step, backwards: the gate gradients (dg, also dL/d ih),
// the recurrent product's (dh, through the hh point) and dL/d h_in from z * h_in.
template <typename T>
static inline void gru_backward_row(
    i64 H, const T* R_ x, const T* R_ hh, const T* R_ hin, const T* R_ act, const T* R_ dout,
    const T* R_ carry, const uint8_t* R_ m_r, const uint8_t* R_ m_z, const uint8_t* R_ m_n,
    const uint8_t* R_ m_rhn, const uint8_t* R_ m_zh, const uint8_t* R_ m_zn,
    const uint8_t* R_ m_hh, T* R_ dg, T* R_ dh, T* R_ dhin) {
  const T *r = act, *z = act + H, *n = act + 2 * H, *rhn = act + 3 * H;
  for (i64 j = 0; j < H; ++j) {
    const T dnext = carry[j] + dout[j];
    const T dzn = dnext * T(m_zn[j]), dzh = dnext * T(m_zh[j]);
    const T dz = dzh * hin[j] - dzn * n[j];
    const T tn = tanh_approx(x[2 * H + j] + rhn[j]);
    const T dn_pre = dzn * (T(1) - z[j]) * T(m_n[j]) * (T(1) - tn * tn);
    const T drhn = dn_pre * T(m_rhn[j]);
    const T sr = sigmoid(x[j] + hh[j]), sz = sigmoid(x[H + j] + hh[H + j]);
    const T dr_pre = drhn * hh[2 * H + j] * T(m_r[j]) * sr * (T(1) - sr);
    const T dz_pre = dz * T(m_z[j]) * sz * (T(1) - sz);
    dg[j] = dr_pre;
    dg[H + j] = dz_pre;
    dg[2 * H + j] = dn_pre;
    dh[j] = dr_pre * T(m_hh[j]);
    dh[H + j] = dz_pre * T(m_hh[H + j]);
    dh[2 * H + j] = drhn * r[j] * T(m_hh[2 * H + j]);
    dhin[j] = dzh * z[j];
  }
}

template <typename T>
static void gru_backward(Problem<T>& p, i64 d0, i64 d1) {
  const i64 H = p.H, GH = 3 * H, B = p.B, R = (d1 - d0) * B, D = p.D;
  std::vector<T> carry(R * H, T(0)), dhin(R * H), dhh(R * GH);
  const std::vector<uint8_t> ones(GH, 1);
  const std::vector<Panels<T>> w = pack_directions(p.w, d0, d1, GH, H, false);
  const Point<T>* q = p.points;
  for (i64 k = p.T_ - 1; k >= 0; --k) {
    const i64 row0 = (k * D + d0) * B;
    for (i64 i = 0; i < R; ++i) {
      const i64 row = row0 + i, at = row * H;
      T* dg = p.d_ih + row * GH;
      T* dh = &dhh[i * GH];
      if (k >= p.lengths[i % B]) {  // padded: the state was carried, the output was zero
        std::fill(dg, dg + GH, T(0));
        std::fill(dh, dh + GH, T(0));
        std::fill(&dhin[i * H], &dhin[i * H] + H, T(0));
        continue;
      }
      const uint8_t* o = ones.data();
      gru_backward_row(H, p.ih + row * GH, p.s_hh + row * GH, p.s_hin + at, p.s_act + row * 4 * H,
                       p.d_out + at, &carry[i * H], mask(q[G_R], at, o), mask(q[G_Z], at, o),
                       mask(q[G_N], at, o), mask(q[G_RHN], at, o), mask(q[G_ZH], at, o),
                       mask(q[G_ZN], at, o), mask(q[G_HH], row * GH, o), dg, dh, &dhin[i * H]);
    }
    for (i64 d = d0; d < d1; ++d)
      gemm<T>(B, &dhh[(d - d0) * B * GH], GH, w[d - d0], &dhin[(d - d0) * B * H], H);
    std::memcpy(p.d_hh + row0 * GH, dhh.data(), R * GH * sizeof(T));
    for (i64 i = 0; i < R; ++i) {
      if (k >= p.lengths[i % B]) continue;
      through(H, &dhin[i * H], mask(q[G_H], (row0 + i) * H, ones.data()), &carry[i * H]);
    }
  }
}

template <typename T>
static void lstm_forward(Problem<T>& p, i64 d0, i64 d1) {
  const i64 H = p.H, GH = 4 * H, B = p.B, R = (d1 - d0) * B, D = p.D, n = R * H;
  std::vector<T> h(n, T(0)), c(n, T(0)), hin(n), hh(R * GH), gi(n), gf(n), gg(n), go(n), fc(n),
      ig(n), cn(n), tc(n), oc(n), out_c(H);
  const std::vector<Panels<T>> w = pack_directions(p.w, d0, d1, GH, H, true);
  const Point<T>* q = p.points;
  for (i64 k = 0; k < p.T_; ++k) {
    const i64 row0 = (k * D + d0) * B, at = row0 * H;
    const T* x = p.ih + row0 * GH;
    std::copy(h.begin(), h.end(), hin.begin());
    apply_point(q[L_H], hin.data(), n, at);
    recurrent_product(p, w, d0, d1, hin.data(), hh.data());
    apply_point(q[L_HH], hh.data(), R * GH, row0 * GH);
    for (i64 i = 0; i < R; ++i) {
      const T *xi = x + i * GH, *hi = &hh[i * GH];
      sigmoid_sum(H, xi, hi, &gi[i * H]);
      sigmoid_sum(H, xi + H, hi + H, &gf[i * H]);
      tanh_sum(H, xi + 2 * H, hi + 2 * H, &gg[i * H]);
      sigmoid_sum(H, xi + 3 * H, hi + 3 * H, &go[i * H]);
    }
    apply_point(q[L_I], gi.data(), n, at);
    apply_point(q[L_F], gf.data(), n, at);
    apply_point(q[L_G], gg.data(), n, at);
    apply_point(q[L_O], go.data(), n, at);
    product(n, gf.data(), c.data(), fc.data());
    apply_point(q[L_FC], fc.data(), n, at);
    product(n, gi.data(), gg.data(), ig.data());
    apply_point(q[L_IG], ig.data(), n, at);
    sum(n, fc.data(), ig.data(), cn.data());
    apply_point(q[L_C], cn.data(), n, at);
    tanh_of(n, cn.data(), tc.data());
    apply_point(q[L_TANH_C], tc.data(), n, at);
    product(n, go.data(), tc.data(), oc.data());
    apply_point(q[L_OC], oc.data(), n, at);
    for (i64 i = 0; i < R; ++i) {
      const bool valid = k < p.lengths[i % B];
      commit(H, valid, &oc[i * H], &h[i * H], p.out + at + i * H);
      commit(H, valid, &cn[i * H], &c[i * H], out_c.data());  // out_c: unused output
    }
    if (p.s_hin) {
      std::memcpy(p.s_hin + at, hin.data(), n * sizeof(T));
      std::memcpy(p.s_hh + row0 * GH, hh.data(), R * GH * sizeof(T));
      std::memcpy(p.s_tc + at, tc.data(), n * sizeof(T));
      std::memcpy(p.s_c + at, c.data(), n * sizeof(T));
      T* act = p.s_act + row0 * 4 * H;
      for (i64 i = 0; i < R; ++i) {
        const T* parts[4] = {&gi[i * H], &gf[i * H], &gg[i * H], &go[i * H]};
        for (int part = 0; part < 4; ++part)
          std::memcpy(act + (i * 4 + part) * H, parts[part], H * sizeof(T));
      }
    }
  }
}

// One valid row of one LSTM step, backwards, in two loops (each simple enough to
// vectorize): first through the cell state, then through the gates. carry_c
// becomes dL/d c_{k-1}; part holds dL/d o, dL/d fc and dL/d ig in between.
template <typename T>
static inline void lstm_backward_cell(
    i64 H, const T* R_ tc, const T* R_ go, const T* R_ gf, const T* R_ c_now,
    const T* R_ dout, const T* R_ carry_h, T* R_ carry_c, const uint8_t* R_ m_c,
    const uint8_t* R_ m_tanh_c, const uint8_t* R_ m_oc, const uint8_t* R_ m_fc,
    const uint8_t* R_ m_ig, T* R_ part) {
  for (i64 j = 0; j < H; ++j) {
    const T doc = (carry_h[j] + dout[j]) * T(m_oc[j]);
    const T dtc = doc * go[j] * T(m_tanh_c[j]);
    const T tcn = tanh_approx(c_now[j]);
    const T dcn = (carry_c[j] + dtc * (T(1) - tcn * tcn)) * T(m_c[j]);
    const T dfc = dcn * T(m_fc[j]);
    carry_c[j] = dfc * gf[j];
    part[j] = doc * tc[j];
    part[H + j] = dfc;
    part[2 * H + j] = dcn * T(m_ig[j]);
  }
}

template <typename T>
static inline void lstm_backward_gates(
    i64 H, const T* R_ x, const T* R_ hh, const T* R_ act, const T* R_ c_prev,
    const T* R_ part, const uint8_t* R_ m_i, const uint8_t* R_ m_f, const uint8_t* R_ m_g,
    const uint8_t* R_ m_o, T* R_ dg) {
  const T *gi = act, *gg = act + 2 * H;
  for (i64 j = 0; j < H; ++j) {
    const T d_o = part[j], dfc = part[H + j], dig = part[2 * H + j];
    const T si = sigmoid(x[j] + hh[j]), sf = sigmoid(x[H + j] + hh[H + j]);
    const T tg = tanh_approx(x[2 * H + j] + hh[2 * H + j]);
    const T so = sigmoid(x[3 * H + j] + hh[3 * H + j]);
    const T di = dig * gg[j] * T(m_i[j]) * si * (T(1) - si);
    const T df = dfc * c_prev[j] * T(m_f[j]) * sf * (T(1) - sf);
    const T dgg = dig * gi[j] * T(m_g[j]) * (T(1) - tg * tg);
    const T dog = d_o * T(m_o[j]) * so * (T(1) - so);
    dg[j] = di;
    dg[H + j] = df;
    dg[2 * H + j] = dgg;
    dg[3 * H + j] = dog;
  }
}

template <typename T>
static void lstm_backward(Problem<T>& p, i64 d0, i64 d1) {
  const i64 H = p.H, GH = 4 * H, B = p.B, R = (d1 - d0) * B, D = p.D;
  std::vector<T> carry_h(R * H, T(0)), carry_c(R * H, T(0)), dhin(R * H), dhh(R * GH),
      zeros(H, T(0)), part(3 * H);
  const std::vector<uint8_t> ones(GH, 1);
  const std::vector<Panels<T>> w = pack_directions(p.w, d0, d1, GH, H, false);
  const Point<T>* q = p.points;
  for (i64 k = p.T_ - 1; k >= 0; --k) {
    const i64 row0 = (k * D + d0) * B;
    std::fill(dhin.begin(), dhin.end(), T(0));
    for (i64 i = 0; i < R; ++i) {
      const i64 row = row0 + i, at = row * H;
      T* dg = p.d_ih + row * GH;
      T* dh = &dhh[i * GH];
      if (k >= p.lengths[i % B]) {  // padded: state carried, output zero
        std::fill(dg, dg + GH, T(0));
        std::fill(dh, dh + GH, T(0));
        continue;
      }
      const uint8_t* o = ones.data();
      const T* c_prev = k > 0 ? p.s_c + (row - D * B) * H : zeros.data();
      const T* act = p.s_act + row * 4 * H;
      lstm_backward_cell(H, p.s_tc + at, act + 3 * H, act + H, p.s_c + at, p.d_out + at,
                         &carry_h[i * H], &carry_c[i * H], mask(q[L_C], at, o),
                         mask(q[L_TANH_C], at, o), mask(q[L_OC], at, o), mask(q[L_FC], at, o),
                         mask(q[L_IG], at, o), part.data());
      lstm_backward_gates(H, p.ih + row * GH, p.s_hh + row * GH, act, c_prev, part.data(),
                          mask(q[L_I], at, o), mask(q[L_F], at, o), mask(q[L_G], at, o),
                          mask(q[L_O], at, o), dg);
      through(GH, dg, mask(q[L_HH], row * GH, o), dh);
    }
    for (i64 d = d0; d < d1; ++d)
      gemm<T>(B, &dhh[(d - d0) * B * GH], GH, w[d - d0], &dhin[(d - d0) * B * H], H);
    std::memcpy(p.d_hh + row0 * GH, dhh.data(), R * GH * sizeof(T));
    for (i64 i = 0; i < R; ++i) {
      if (k >= p.lengths[i % B]) continue;
      through(H, &dhin[i * H], mask(q[L_H], (row0 + i) * H, ones.data()), &carry_h[i * H]);
    }
  }
}

template <typename T>
static void run(void (*body)(Problem<T>&, i64, i64), Problem<T>& p, int threads) {
  if (threads <= 1 || p.D == 1) { body(p, 0, p.D); return; }
  std::thread worker(body, std::ref(p), 1, p.D);  // directions are independent
  body(p, 0, 1);
  worker.join();
}

template <typename T>
static Problem<T> problem(i64 T_, i64 D, i64 B, i64 H, i64 G, const T* ih, const T* w,
                          const T* b_hh, const i64* lengths, const int* modes,
                          const T* scales, const T* lows, const T* highs, T** records,
                          uint8_t** inside, Point<T>* points, i64 count) {
  for (i64 i = 0; i < count; ++i)
    points[i] = Point<T>{modes[i], scales[i], lows[i], highs[i], records[i], inside[i]};
  Problem<T> p{};
  p.T_ = T_; p.D = D; p.B = B; p.H = H; p.G = G;
  p.ih = ih; p.w = w; p.b_hh = b_hh; p.lengths = lengths; p.points = points;
  return p;
}

#define CELL_ENTRY_POINTS(CELL, G, COUNT, T, SUFFIX)                                          \
  extern "C" void CELL##_forward_##SUFFIX(                                                     \
      i64 T_, i64 D, i64 B, i64 H, const T* ih, const T* w, const T* b_hh,                     \
      const i64* lengths, const int* modes, const T* scales, const T* lows, const T* highs,    \
      T** records, uint8_t** inside, T* out, T* s_hin, T* s_hh, T* s_act, T* s_tc, T* s_c,     \
      int threads) {                                                                           \
    Point<T> points[COUNT];                                                                    \
    Problem<T> p = problem<T>(T_, D, B, H, G, ih, w, b_hh, lengths, modes, scales,            \
                              lows, highs, records, inside, points, COUNT);                    \
    p.out = out; p.s_hin = s_hin; p.s_hh = s_hh; p.s_act = s_act; p.s_tc = s_tc; p.s_c = s_c;  \
    run<T>(CELL##_forward<T>, p, threads);                                                     \
  }                                                                                            \
  extern "C" void CELL##_backward_##SUFFIX(                                                    \
      i64 T_, i64 D, i64 B, i64 H, const T* ih, const T* w, const i64* lengths,                \
      const int* modes, const T* scales, const T* lows, const T* highs, uint8_t** inside,     \
      const T* s_hin, const T* s_hh, const T* s_act, const T* s_tc, const T* s_c,             \
      const T* d_out, T* d_ih, T* d_hh, int threads) {                                         \
    Point<T> points[COUNT];                                                                    \
    T* no_records[COUNT] = {};                                                                 \
    Problem<T> p = problem<T>(T_, D, B, H, G, ih, w, nullptr, lengths, modes, scales,         \
                              lows, highs, no_records, inside, points, COUNT);                 \
    p.s_hin = const_cast<T*>(s_hin); p.s_hh = const_cast<T*>(s_hh);                            \
    p.s_act = const_cast<T*>(s_act); p.s_tc = const_cast<T*>(s_tc);                            \
    p.s_c = const_cast<T*>(s_c); p.d_out = d_out; p.d_ih = d_ih; p.d_hh = d_hh;                \
    run<T>(CELL##_backward<T>, p, threads);                                                    \
  }

CELL_ENTRY_POINTS(gru, 3, 8, float, f32)
CELL_ENTRY_POINTS(gru, 3, 8, double, f64)
CELL_ENTRY_POINTS(lstm, 4, 11, float, f32)
CELL_ENTRY_POINTS(lstm, 4, 11, double, f64)
"""
)

_REALS = {torch.float32: ("f32", ctypes.c_float), torch.float64: ("f64", ctypes.c_double)}


def _declare(library: ctypes.CDLL) -> None:
    pointer, i64, flag = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for cell in CELLS:
        for suffix, _ in _REALS.values():
            forward = getattr(library, f"{cell}_forward_{suffix}")
            forward.argtypes = [i64, i64, i64, i64, *[pointer] * 16, flag]
            forward.restype = None
            backward = getattr(library, f"{cell}_backward_{suffix}")
            backward.argtypes = [i64, i64, i64, i64, *[pointer] * 16, flag]
            backward.restype = None


def _library() -> ctypes.CDLL | None:
    library = load_library("cell_cpu", SOURCE)
    if library is not None and not hasattr(library, "_mohaq_declared"):
        _declare(library)
        library._mohaq_declared = True  # type: ignore[attr-defined]
    return library


def cpu_cell_available(*tensors: Tensor) -> bool:
    """Whether the compiled loops can run on these tensors (CPU, float32 or float64)."""
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _REALS:
        return False
    if any(t.device.type != "cpu" for t in tensors):
        return False
    return _library() is not None


def _address(tensor: Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


class _Loop:
    """One call's checked tensors and the point tables the kernels read."""

    def __init__(
        self,
        cell: str,
        ih: Tensor,
        w_hh: Tensor,
        b_hh: Tensor,
        lengths: Tensor,
        modes: list[int],
        scales: Tensor,
        lows: list[float],
        highs: list[float],
    ) -> None:
        self.cell = cell
        self.steps, self.directions, self.batch, gates_hidden = ih.shape
        self.hidden = gates_hidden // GATES[cell]
        self.ih = ih.contiguous()
        self.w_hh = w_hh.contiguous()  # (D, G*H, H)
        self.b_hh = b_hh.contiguous()  # (D, G*H)
        self.dtype = ih.dtype
        self.lengths = lengths.to(device="cpu", dtype=torch.int64).contiguous()
        self.modes = torch.tensor(modes, dtype=torch.int32)
        self.scales = scales.to(device="cpu", dtype=self.dtype).contiguous()
        self.lows = torch.tensor(lows, dtype=self.dtype)
        self.highs = torch.tensor(highs, dtype=self.dtype)
        self.widths = [gates_hidden if name == "hh" else self.hidden for name in CELLS[cell]]
        suffix = _REALS[self.dtype][0]
        library = _library()
        assert library is not None
        self.forward_kernel = getattr(library, f"{cell}_forward_{suffix}")
        self.backward_kernel = getattr(library, f"{cell}_backward_{suffix}")
        macs = self.directions * self.batch * self.hidden * gates_hidden
        self.threads = torch.get_num_threads() if macs >= PARALLEL_MIN_MACS else 1
        if 2 in modes:  # a per-step max couples the directions
            self.threads = 1

    def _rows(self, width: int) -> tuple[int, ...]:
        return (self.steps, self.directions, self.batch, width)

    def _pointer_table(self, buffers: list[Tensor | None]) -> Any:
        return (ctypes.c_void_p * len(buffers))(*(_address(b) for b in buffers))

    def forward(
        self, *, keep: bool, record: bool
    ) -> tuple[Tensor, list[Tensor | None], list[Tensor | None], tuple[Tensor | None, ...]]:
        records: list[Tensor | None] = [
            torch.empty(self._rows(w), dtype=self.dtype) if record and mode == 3 else None
            for mode, w in zip(self.modes.tolist(), self.widths, strict=True)
        ]
        inside: list[Tensor | None] = [
            torch.empty(self._rows(w), dtype=torch.uint8) if keep and mode in (1, 2) else None
            for mode, w in zip(self.modes.tolist(), self.widths, strict=True)
        ]
        hidden, gates = self.hidden, GATES[self.cell]
        saved: tuple[Tensor | None, ...] = (None,) * 5
        if keep:
            saved = (
                torch.empty(self._rows(hidden), dtype=self.dtype),
                torch.empty(self._rows(gates * hidden), dtype=self.dtype),
                torch.empty(self._rows(ACTIVATIONS[self.cell] * hidden), dtype=self.dtype),
                torch.empty(self._rows(hidden), dtype=self.dtype) if self.cell == "lstm" else None,
                torch.empty(self._rows(hidden), dtype=self.dtype) if self.cell == "lstm" else None,
            )
        out = torch.empty(self._rows(hidden), dtype=self.dtype)
        self.forward_kernel(
            self.steps, self.directions, self.batch, hidden, self.ih.data_ptr(),
            self.w_hh.data_ptr(),
            self.b_hh.data_ptr(), self.lengths.data_ptr(), self.modes.data_ptr(),
            self.scales.data_ptr(), self.lows.data_ptr(), self.highs.data_ptr(),
            self._pointer_table(records), self._pointer_table(inside), out.data_ptr(),
            *(_address(t) for t in saved), self.threads,
        )  # fmt: skip
        return out, records, inside, saved

    def backward(
        self, grad_out: Tensor, inside: list[Tensor | None], saved: tuple[Tensor | None, ...]
    ) -> tuple[Tensor, Tensor]:
        hidden, gates = self.hidden, GATES[self.cell]
        # Held in a name: a temporary's memory would be freed before the kernel reads it.
        grad_out = grad_out.contiguous()
        grad_ih = torch.empty(self._rows(gates * hidden), dtype=self.dtype)
        grad_hh = torch.empty(self._rows(gates * hidden), dtype=self.dtype)
        self.backward_kernel(
            self.steps, self.directions, self.batch, hidden, self.ih.data_ptr(),
            self.w_hh.data_ptr(), self.lengths.data_ptr(), self.modes.data_ptr(),
            self.scales.data_ptr(), self.lows.data_ptr(), self.highs.data_ptr(),
            self._pointer_table(inside), *(_address(t) for t in saved),
            grad_out.data_ptr(), grad_ih.data_ptr(), grad_hh.data_ptr(),
            self.threads,
        )  # fmt: skip
        return grad_ih, grad_hh


class _CellFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        ih: Tensor,
        w_hh: Tensor,
        b_hh: Tensor,
        loop: _Loop,
    ) -> Tensor:
        out, _, inside, saved = loop.forward(keep=True, record=False)
        ctx.loop, ctx.inside = loop, inside
        ctx.save_for_backward(*(t for t in saved if t is not None))
        ctx.lstm = loop.cell == "lstm"
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):  # type: ignore[override]
        tensors = list(ctx.saved_tensors)
        saved = tuple(tensors) if ctx.lstm else (*tensors, None, None)
        loop: _Loop = ctx.loop
        grad_ih, grad_hh = loop.backward(grad_out, ctx.inside, saved)
        ctx.loop = ctx.inside = None
        # dW_hh = sum over steps and batch of dhh^T h_in: one product per direction.
        d, rows = loop.directions, loop.steps * loop.batch
        hin = saved[0].transpose(0, 1).reshape(d, rows, loop.hidden)  # type: ignore[union-attr]
        dhh = grad_hh.transpose(0, 1).reshape(d, rows, -1)
        grad_w = torch.bmm(dhh.transpose(1, 2), hin)
        return grad_ih, grad_w, dhh.sum(1), None


def cell_cpu_loop(
    cell: str,
    ih: Tensor,
    w_hh: Tensor,
    b_hh: Tensor,
    lengths: Tensor,
    modes: list[int],
    scales: Tensor,
    lows: list[float],
    highs: list[float],
) -> tuple[Tensor, list[list[Tensor]]]:
    """The ``cell`` loop (``"gru"``, ``"lstm"``) on the CPU; see :func:`cpu_cell_available`.

    Args:
        cell: ``"gru"`` or ``"lstm"``.
        ih: the input products ``(T, D, B, G*H)``, direction 1 reversed within lengths.
        w_hh: the recurrent weights ``(D, G*H, H)``.
        b_hh: ``(D, G*H)``.
        lengths: valid steps per sequence ``(B,)``.
        modes, scales, lows, highs: the points, as built by
            :func:`mohaq.models.cell_loops.loop_quantization`.

    Returns:
        The outputs ``(T, D, B, H)`` (zero at padded steps) and, per point,
        its recorded values (one ``(T, D, B, width)`` tensor when recording).
    """
    loop = _Loop(cell, ih, w_hh, b_hh, lengths, modes, scales, lows, highs)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (ih, w_hh, b_hh)):
        return _CellFunction.apply(ih, w_hh, b_hh, loop), [[] for _ in modes]
    out, records, _, _ = loop.forward(keep=False, record=True)
    return out, [[r] if r is not None else [] for r in records]
