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

template <typename T> struct Vec;
template <> struct Vec<float> { typedef float type __attribute__((vector_size(64))); };
template <> struct Vec<double> { typedef double type __attribute__((vector_size(64))); };

template <typename T> static inline typename Vec<T>::type load(const T* p) {
  typename Vec<T>::type v; std::memcpy(&v, p, sizeof v); return v;
}
template <typename T> static inline void store(T* p, typename Vec<T>::type v) {
  std::memcpy(p, &v, sizeof v);
}

// out[b][n] += sum_k a[b][k] w[k][n] over a tile of NB rows and W vectors of columns,
// the accumulators held in registers.
template <typename T, int NB, int W>
static inline void gemm_tile(i64 K, const T* __restrict__ a, i64 lda, const T* __restrict__ w,
                             i64 ldw, T* __restrict__ out, i64 ldo) {
  typedef typename Vec<T>::type vt;
  constexpr int L = 64 / sizeof(T);
  vt acc[NB][W];
  for (int b = 0; b < NB; ++b)
    for (int v = 0; v < W; ++v) acc[b][v] = load<T>(out + b * ldo + v * L);
  for (i64 k = 0; k < K; ++k) {
    vt wk[W];
    for (int v = 0; v < W; ++v) wk[v] = load<T>(w + k * ldw + v * L);
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) {
      const T ab = a[b * lda + k];
      for (int v = 0; v < W; ++v) acc[b][v] += ab * wk[v];
    }
  }
  for (int b = 0; b < NB; ++b)
    for (int v = 0; v < W; ++v) store<T>(out + b * ldo + v * L, acc[b][v]);
}

template <typename T, int W>
static inline void gemm_columns(i64 B, i64 K, const T* a, i64 lda, const T* w, i64 ldw, T* out,
                                i64 ldo) {
  i64 b = 0;
  for (; b + 8 <= B; b += 8) gemm_tile<T, 8, W>(K, a + b * lda, lda, w, ldw, out + b * ldo, ldo);
  for (; b + 4 <= B; b += 4) gemm_tile<T, 4, W>(K, a + b * lda, lda, w, ldw, out + b * ldo, ldo);
  for (; b < B; ++b) gemm_tile<T, 1, W>(K, a + b * lda, lda, w, ldw, out + b * ldo, ldo);
}

// out (B x N) += a (B x K) @ w (K x N), all row-major.
template <typename T>
static void gemm(i64 B, i64 K, i64 N, const T* a, i64 lda, const T* w, i64 ldw, T* out, i64 ldo) {
  constexpr int L = 64 / sizeof(T);
  i64 n = 0;
  for (; n + 2 * L <= N; n += 2 * L) gemm_columns<T, 2>(B, K, a, lda, w + n, ldw, out + n, ldo);
  for (; n + L <= N; n += L) gemm_columns<T, 1>(B, K, a, lda, w + n, ldw, out + n, ldo);
  if (n == N) return;
  for (i64 k = 0; k < K; ++k)
    for (i64 b = 0; b < B; ++b) {
      const T ab = a[b * lda + k];
      for (i64 j = n; j < N; ++j) out[b * ldo + j] += ab * w[k * ldw + j];
    }
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
  const T* w_t;     // (D, H, G*H): W_hh transposed
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

// Applies a point to n contiguous values of one step (all rows of the directions run
// here); offset: where these values sit in the point's (T, D, B, width) buffers.
template <typename T>
static void apply_point(Point<T>& p, T* __restrict__ x, i64 n, i64 offset) {
  if (p.mode == 0) return;
  if (p.mode == 3) { std::memcpy(p.record + offset, x, n * sizeof(T)); return; }
  T scale = p.scale;
  if (p.mode == 2) {
    T top = 0;
    for (i64 j = 0; j < n; ++j) top = std::max(top, std::fabs(x[j]));
    scale = std::max(top, T(1e-12)) / p.high;
  }
  const T low = p.low, high = p.high;
  uint8_t* __restrict__ inside = p.inside ? p.inside + offset : nullptr;
  for (i64 j = 0; j < n; ++j) {
    const T level = __builtin_rint(x[j] / scale);
    const T clamped = level < low ? low : (level > high ? high : level);
    if (inside) inside[j] = level == clamped;
    x[j] = clamped * scale;
  }
}

template <typename T> static inline T passes(const Point<T>& p, i64 index) {
  return p.inside ? T(p.inside[index]) : T(1);
}

// Directions [d0, d1) of one step: rows (d, b) are contiguous, d-major.
template <typename T> struct Rows {
  i64 d0, d1, B;
  i64 count() const { return (d1 - d0) * B; }
};

enum GruPoint { G_H, G_HH, G_R, G_Z, G_N, G_RHN, G_ZH, G_ZN };
enum LstmPoint { L_H, L_C, L_HH, L_I, L_F, L_G, L_O, L_FC, L_IG, L_TANH_C, L_OC };

template <typename T>
static void recurrent_product(const Problem<T>& p, i64 d0, i64 d1, const T* hin, T* hh) {
  const i64 H = p.H, GH = p.G * p.H, B = p.B;
  for (i64 d = d0; d < d1; ++d) {
    T* rows = hh + (d - d0) * B * GH;
    for (i64 b = 0; b < B; ++b) std::memcpy(rows + b * GH, p.b_hh + d * GH, GH * sizeof(T));
    gemm<T>(B, H, GH, hin + (d - d0) * B * H, H, p.w_t + d * H * GH, GH, rows, GH);
  }
}

template <typename T>
static void gru_forward(Problem<T>& p, i64 d0, i64 d1) {
  const i64 H = p.H, GH = 3 * H, B = p.B, R = (d1 - d0) * B, D = p.D;
  std::vector<T> h(R * H, T(0)), hin(R * H), hh(R * GH), r(R * H), z(R * H), n(R * H),
      rhn(R * H), zh(R * H), zn(R * H);
  Point<T>* q = p.points;
  for (i64 k = 0; k < p.T_; ++k) {
    const i64 row0 = (k * D + d0) * B;  // first row of this step in (T, D, B) order
    const T* x = p.ih + row0 * GH;
    std::copy(h.begin(), h.end(), hin.begin());
    apply_point(q[G_H], hin.data(), R * H, row0 * H);
    recurrent_product(p, d0, d1, hin.data(), hh.data());
    apply_point(q[G_HH], hh.data(), R * GH, row0 * GH);
    for (i64 i = 0; i < R; ++i)
      for (i64 j = 0; j < H; ++j) {
        r[i * H + j] = sigmoid(x[i * GH + j] + hh[i * GH + j]);
        z[i * H + j] = sigmoid(x[i * GH + H + j] + hh[i * GH + H + j]);
      }
    apply_point(q[G_R], r.data(), R * H, row0 * H);
    apply_point(q[G_Z], z.data(), R * H, row0 * H);
    for (i64 i = 0; i < R; ++i)
      for (i64 j = 0; j < H; ++j) rhn[i * H + j] = r[i * H + j] * hh[i * GH + 2 * H + j];
    apply_point(q[G_RHN], rhn.data(), R * H, row0 * H);
    for (i64 i = 0; i < R; ++i)
      for (i64 j = 0; j < H; ++j) n[i * H + j] = tanh_approx(x[i * GH + 2 * H + j] + rhn[i * H + j]);
    apply_point(q[G_N], n.data(), R * H, row0 * H);
    for (i64 j = 0; j < R * H; ++j) zn[j] = (T(1) - z[j]) * n[j];
    apply_point(q[G_ZN], zn.data(), R * H, row0 * H);
    for (i64 j = 0; j < R * H; ++j) zh[j] = z[j] * hin[j];
    apply_point(q[G_ZH], zh.data(), R * H, row0 * H);
    for (i64 i = 0; i < R; ++i) {
      const bool valid = k < p.lengths[i % B];
      T* out = p.out + (row0 + i) * H;
      for (i64 j = 0; j < H; ++j) {
        const T next = zn[i * H + j] + zh[i * H + j];
        out[j] = valid ? next : T(0);
        if (valid) h[i * H + j] = next;
      }
    }
    if (p.s_hin) {
      std::memcpy(p.s_hin + row0 * H, hin.data(), R * H * sizeof(T));
      std::memcpy(p.s_hh + row0 * GH, hh.data(), R * GH * sizeof(T));
      T* act = p.s_act + row0 * 4 * H;
      for (i64 i = 0; i < R; ++i) {
        std::memcpy(act + (i * 4 + 0) * H, &r[i * H], H * sizeof(T));
        std::memcpy(act + (i * 4 + 1) * H, &z[i * H], H * sizeof(T));
        std::memcpy(act + (i * 4 + 2) * H, &n[i * H], H * sizeof(T));
        std::memcpy(act + (i * 4 + 3) * H, &rhn[i * H], H * sizeof(T));
      }
    }
  }
}

template <typename T>
static void gru_backward(Problem<T>& p, i64 d0, i64 d1) {
  const i64 H = p.H, GH = 3 * H, B = p.B, R = (d1 - d0) * B, D = p.D;
  std::vector<T> carry(R * H, T(0)), dhin(R * H), dhh(R * GH);
  Point<T>* q = p.points;
  for (i64 k = p.T_ - 1; k >= 0; --k) {
    const i64 row0 = (k * D + d0) * B;
    for (i64 i = 0; i < R; ++i) {
      const i64 row = row0 + i, at = row * H;
      T* dg = p.d_ih + row * GH;
      T* dh = dhh.data() + i * GH;
      if (k >= p.lengths[i % B]) {  // padded: the state was carried, the output was zero
        std::fill(dg, dg + GH, T(0));
        std::fill(dh, dh + GH, T(0));
        std::fill(&dhin[i * H], &dhin[i * H] + H, T(0));
        continue;
      }
      const T* x = p.ih + row * GH;
      const T* hh = p.s_hh + row * GH;
      const T* hin = p.s_hin + at;
      const T* act = p.s_act + row * 4 * H;
      const T *r = act, *z = act + H, *n = act + 2 * H, *rhn = act + 3 * H;
      const T* dout = p.d_out + at;
      for (i64 j = 0; j < H; ++j) {
        const T dnext = carry[i * H + j] + dout[j];
        const T dzn = dnext * passes(q[G_ZN], at + j), dzh = dnext * passes(q[G_ZH], at + j);
        const T dz = dzh * hin[j] - dzn * n[j];
        const T dn = dzn * (T(1) - z[j]);
        const T tn = tanh_approx(x[2 * H + j] + rhn[j]);
        const T dn_pre = dn * passes(q[G_N], at + j) * (T(1) - tn * tn);
        const T drhn = dn_pre * passes(q[G_RHN], at + j);
        const T sr = sigmoid(x[j] + hh[j]), sz = sigmoid(x[H + j] + hh[H + j]);
        const T dr_pre = drhn * hh[2 * H + j] * passes(q[G_R], at + j) * sr * (T(1) - sr);
        const T dz_pre = dz * passes(q[G_Z], at + j) * sz * (T(1) - sz);
        dg[j] = dr_pre;
        dg[H + j] = dz_pre;
        dg[2 * H + j] = dn_pre;
        dh[j] = dr_pre;
        dh[H + j] = dz_pre;
        dh[2 * H + j] = drhn * r[j];
        dhin[i * H + j] = dzh * z[j];
      }
      const i64 hh_at = row * GH;
      for (i64 j = 0; j < GH; ++j) dh[j] *= passes(q[G_HH], hh_at + j);
    }
    for (i64 d = d0; d < d1; ++d)
      gemm<T>(B, GH, H, dhh.data() + (d - d0) * B * GH, GH, p.w + d * GH * H, H,
              dhin.data() + (d - d0) * B * H, H);
    std::memcpy(p.d_hh + row0 * GH, dhh.data(), R * GH * sizeof(T));
    for (i64 i = 0; i < R; ++i) {
      if (k >= p.lengths[i % B]) continue;
      const i64 at = (row0 + i) * H;
      for (i64 j = 0; j < H; ++j) carry[i * H + j] = dhin[i * H + j] * passes(q[G_H], at + j);
    }
  }
}

template <typename T>
static void lstm_forward(Problem<T>& p, i64 d0, i64 d1) {
  const i64 H = p.H, GH = 4 * H, B = p.B, R = (d1 - d0) * B, D = p.D;
  std::vector<T> h(R * H, T(0)), c(R * H, T(0)), hin(R * H), hh(R * GH), gi(R * H), gf(R * H),
      gg(R * H), go(R * H), fc(R * H), ig(R * H), cn(R * H), tc(R * H), oc(R * H);
  Point<T>* q = p.points;
  for (i64 k = 0; k < p.T_; ++k) {
    const i64 row0 = (k * D + d0) * B;
    const T* x = p.ih + row0 * GH;
    std::copy(h.begin(), h.end(), hin.begin());
    apply_point(q[L_H], hin.data(), R * H, row0 * H);
    recurrent_product(p, d0, d1, hin.data(), hh.data());
    apply_point(q[L_HH], hh.data(), R * GH, row0 * GH);
    for (i64 i = 0; i < R; ++i)
      for (i64 j = 0; j < H; ++j) {
        const T* xi = x + i * GH;
        const T* hi = hh.data() + i * GH;
        gi[i * H + j] = sigmoid(xi[j] + hi[j]);
        gf[i * H + j] = sigmoid(xi[H + j] + hi[H + j]);
        gg[i * H + j] = tanh_approx(xi[2 * H + j] + hi[2 * H + j]);
        go[i * H + j] = sigmoid(xi[3 * H + j] + hi[3 * H + j]);
      }
    apply_point(q[L_I], gi.data(), R * H, row0 * H);
    apply_point(q[L_F], gf.data(), R * H, row0 * H);
    apply_point(q[L_G], gg.data(), R * H, row0 * H);
    apply_point(q[L_O], go.data(), R * H, row0 * H);
    for (i64 j = 0; j < R * H; ++j) fc[j] = gf[j] * c[j];
    apply_point(q[L_FC], fc.data(), R * H, row0 * H);
    for (i64 j = 0; j < R * H; ++j) ig[j] = gi[j] * gg[j];
    apply_point(q[L_IG], ig.data(), R * H, row0 * H);
    for (i64 j = 0; j < R * H; ++j) cn[j] = fc[j] + ig[j];
    apply_point(q[L_C], cn.data(), R * H, row0 * H);
    for (i64 j = 0; j < R * H; ++j) tc[j] = tanh_approx(cn[j]);
    apply_point(q[L_TANH_C], tc.data(), R * H, row0 * H);
    for (i64 j = 0; j < R * H; ++j) oc[j] = go[j] * tc[j];
    apply_point(q[L_OC], oc.data(), R * H, row0 * H);
    for (i64 i = 0; i < R; ++i) {
      const bool valid = k < p.lengths[i % B];
      T* out = p.out + (row0 + i) * H;
      for (i64 j = 0; j < H; ++j) {
        out[j] = valid ? oc[i * H + j] : T(0);
        if (valid) {
          h[i * H + j] = oc[i * H + j];
          c[i * H + j] = cn[i * H + j];
        }
      }
    }
    if (p.s_hin) {
      std::memcpy(p.s_hin + row0 * H, hin.data(), R * H * sizeof(T));
      std::memcpy(p.s_hh + row0 * GH, hh.data(), R * GH * sizeof(T));
      std::memcpy(p.s_tc + row0 * H, tc.data(), R * H * sizeof(T));
      std::memcpy(p.s_c + row0 * H, c.data(), R * H * sizeof(T));
      T* act = p.s_act + row0 * 4 * H;
      for (i64 i = 0; i < R; ++i) {
        std::memcpy(act + (i * 4 + 0) * H, &gi[i * H], H * sizeof(T));
        std::memcpy(act + (i * 4 + 1) * H, &gf[i * H], H * sizeof(T));
        std::memcpy(act + (i * 4 + 2) * H, &gg[i * H], H * sizeof(T));
        std::memcpy(act + (i * 4 + 3) * H, &go[i * H], H * sizeof(T));
      }
    }
  }
}

template <typename T>
static void lstm_backward(Problem<T>& p, i64 d0, i64 d1) {
  const i64 H = p.H, GH = 4 * H, B = p.B, R = (d1 - d0) * B, D = p.D;
  std::vector<T> carry_h(R * H, T(0)), carry_c(R * H, T(0)), dhin(R * H), dhh(R * GH),
      zeros(H, T(0));
  Point<T>* q = p.points;
  for (i64 k = p.T_ - 1; k >= 0; --k) {
    const i64 row0 = (k * D + d0) * B;
    for (i64 i = 0; i < R; ++i) {
      const i64 row = row0 + i, at = row * H;
      T* dg = p.d_ih + row * GH;
      T* dh = dhh.data() + i * GH;
      if (k >= p.lengths[i % B]) {  // padded: state carried, output zero
        std::fill(dg, dg + GH, T(0));
        std::fill(dh, dh + GH, T(0));
        std::fill(&dhin[i * H], &dhin[i * H] + H, T(0));
        continue;
      }
      const T* x = p.ih + row * GH;
      const T* hh = p.s_hh + row * GH;
      const T* act = p.s_act + row * 4 * H;
      const T *gi = act, *gf = act + H, *gg = act + 2 * H, *go = act + 3 * H;
      const T* tc = p.s_tc + at;
      const T* c_now = p.s_c + at;  // valid step: the new state
      const T* c_prev = k > 0 ? p.s_c + ((row - D * B)) * H : zeros.data();
      const T* dout = p.d_out + at;
      T* ch = &carry_h[i * H];
      T* cc = &carry_c[i * H];
      for (i64 j = 0; j < H; ++j) {
        const T dnext = ch[j] + dout[j];
        const T doc = dnext * passes(q[L_OC], at + j);
        const T d_o = doc * tc[j];
        const T dtc = doc * go[j] * passes(q[L_TANH_C], at + j);
        const T tcn = tanh_approx(c_now[j]);
        const T dcn = (cc[j] + dtc * (T(1) - tcn * tcn)) * passes(q[L_C], at + j);
        const T dfc = dcn * passes(q[L_FC], at + j), dig = dcn * passes(q[L_IG], at + j);
        const T d_f = dfc * c_prev[j], d_i = dig * gg[j], d_g = dig * gi[j];
        cc[j] = dfc * gf[j];
        const T si = sigmoid(x[j] + hh[j]), sf = sigmoid(x[H + j] + hh[H + j]);
        const T tg = tanh_approx(x[2 * H + j] + hh[2 * H + j]);
        const T so = sigmoid(x[3 * H + j] + hh[3 * H + j]);
        dg[j] = d_i * passes(q[L_I], at + j) * si * (T(1) - si);
        dg[H + j] = d_f * passes(q[L_F], at + j) * sf * (T(1) - sf);
        dg[2 * H + j] = d_g * passes(q[L_G], at + j) * (T(1) - tg * tg);
        dg[3 * H + j] = d_o * passes(q[L_O], at + j) * so * (T(1) - so);
        dhin[i * H + j] = T(0);
      }
      const i64 hh_at = row * GH;
      for (i64 j = 0; j < GH; ++j) dh[j] = dg[j] * passes(q[L_HH], hh_at + j);
    }
    for (i64 d = d0; d < d1; ++d)
      gemm<T>(B, GH, H, dhh.data() + (d - d0) * B * GH, GH, p.w + d * GH * H, H,
              dhin.data() + (d - d0) * B * H, H);
    std::memcpy(p.d_hh + row0 * GH, dhh.data(), R * GH * sizeof(T));
    for (i64 i = 0; i < R; ++i) {
      if (k >= p.lengths[i % B]) continue;
      const i64 at = (row0 + i) * H;
      for (i64 j = 0; j < H; ++j) carry_h[i * H + j] = dhin[i * H + j] * passes(q[L_H], at + j);
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
static Problem<T> problem(i64 T_, i64 D, i64 B, i64 H, i64 G, const T* ih, const T* w_t,
                          const T* w, const T* b_hh, const i64* lengths, const int* modes,
                          const T* scales, const T* lows, const T* highs, T** records,
                          uint8_t** inside, Point<T>* points, i64 count) {
  for (i64 i = 0; i < count; ++i)
    points[i] = Point<T>{modes[i], scales[i], lows[i], highs[i], records[i], inside[i]};
  Problem<T> p{};
  p.T_ = T_; p.D = D; p.B = B; p.H = H; p.G = G;
  p.ih = ih; p.w_t = w_t; p.w = w; p.b_hh = b_hh; p.lengths = lengths; p.points = points;
  return p;
}

#define CELL_ENTRY_POINTS(CELL, G, COUNT, T, SUFFIX)                                          \
  extern "C" void CELL##_forward_##SUFFIX(                                                     \
      i64 T_, i64 D, i64 B, i64 H, const T* ih, const T* w_t, const T* b_hh,                   \
      const i64* lengths, const int* modes, const T* scales, const T* lows, const T* highs,    \
      T** records, uint8_t** inside, T* out, T* s_hin, T* s_hh, T* s_act, T* s_tc, T* s_c,     \
      int threads) {                                                                           \
    Point<T> points[COUNT];                                                                    \
    Problem<T> p = problem<T>(T_, D, B, H, G, ih, w_t, nullptr, b_hh, lengths, modes, scales,  \
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
    Problem<T> p = problem<T>(T_, D, B, H, G, ih, nullptr, w, nullptr, lengths, modes, scales, \
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
        w_t = self.w_hh.transpose(1, 2).contiguous()
        self.forward_kernel(
            self.steps, self.directions, self.batch, hidden, self.ih.data_ptr(), w_t.data_ptr(),
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
        loop.b_hh = b_hh.contiguous()
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
    loop = _Loop(cell, ih, w_hh, lengths, modes, scales, lows, highs)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (ih, w_hh, b_hh)):
        return _CellFunction.apply(ih, w_hh, b_hh, loop), [[] for _ in modes]
    loop.b_hh = b_hh.contiguous()
    out, records, _, _ = loop.forward(keep=False, record=True)
    return out, [[r] if r is not None else [] for r in records]
