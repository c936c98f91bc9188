"""Optional C++ kernels for the decode step (attention, RMSNorm, bf16 matmuls), compiled on first use; torch ops otherwise.

Decode attention on a CPU is many tiny matrix products (one per slot and key/value head), which
torch runs as batched GEMMs with a fixed cost per product: ~20 ms of an ~80 ms step for SmolLM2 at
batch 32. One fused loop per (slot, kv head) instead rotates q and k (RoPE), writes k and v into
the cache at the slot's position, and attends over exactly the slot's own positions with an fp32
softmax, reading each cached key and value once.

`decode_attention` is that kernel; `verify_attention` feeds several new tokens per slot (speculative
decoding's verification step: each attends causally over its slot). The `*_reference` functions
are the same computations in torch ops, used when the kernel cannot be built (no C++ compiler,
another platform) and by the tests as the slow obvious version. Set HONE_ENGINE_KERNELS=0 to never build or use the kernel.

`linear_bf16` multiplies by bf16 weights where oneDNN cannot (CPUs with AVX2 but no AVX-512):
each weight is widened to fp32 in registers and summed in fp32, so a bf16 engine reads half the
bytes of an fp32 one per token instead of falling back to torch's slow bf16 matmul there. Built
for a CPU with AVX512-BF16, it multiplies bf16 rows with that extension's dot products, and runs
a decode step's few rows where oneDNN would (it reads the weights faster there); it can write
fp32 from bf16 rows, for an LM head whose logits must not be rounded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading

import torch

log = logging.getLogger(__name__)

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

static inline float to_float(float x) { return x; }
static inline float to_float(c10::BFloat16 x) {  // the top half of an fp32, by hand so loops vectorise
  uint16_t u;
  std::memcpy(&u, &x, sizeof(u));
  const uint32_t bits = static_cast<uint32_t>(u) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Attention of one (slot, kv head) over positions 0..n-1 for its G queries (already rotated and
// scaled, fp32). kc: (E, S) keys transposed; vc: (S, E) values; out: (G, E). Compile-time G and E
// let the compiler unroll over queries and keep the output accumulators in vector registers.
// Vectors of fp32 for attention's inner loops, written with intrinsics: gcc's own vectorisation of
// them stored each widened key slice as two 256-bit halves and reloaded it as one 512-bit vector
// (a failed store-to-load forward per load), and kept scores in memory. Lanes: 16 with AVX-512,
// 8 with AVX2; kRegs: the accumulators a loop may hold (32 or 16 registers, a few kept free).
#if defined(__AVX512F__)
#define HONE_VEC 1
struct Vec {
  using reg = __m512;
  static constexpr int L = 16, kRegs = 28;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float x) { return _mm512_set1_ps(x); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static reg load(const c10::BFloat16* p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  }
  static void store(float* p, reg x) { _mm512_storeu_ps(p, x); }
};
#elif defined(__AVX2__) && defined(__FMA__)
#define HONE_VEC 1
struct Vec {
  using reg = __m256;
  static constexpr int L = 8, kRegs = 12;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg set1(float x) { return _mm256_set1_ps(x); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static reg load(const c10::BFloat16* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
  }
  static void store(float* p, reg x) { _mm256_storeu_ps(p, x); }
};
#endif

// Scores of G queries q (G, E) against keys kc (E, S) at positions [from, to), into scores (G, n):
// a tile of TV vectors of positions at a time, the G sums held in registers over e, each key slice
// widened once for all G; the last positions (fewer than a tile) a key row at a time. Each score
// sums over e in order with fused multiply-adds either way, so a position's score does not depend
// on where the tiles fall (tested: bit for bit). A tile reads E key rows a slice each, more
// streams than the hardware prefetcher follows: each row's slice two tiles ahead is asked for
// explicitly (a decode step's attention at 32 slots x 512 positions, keys and values from memory:
// ~20 GB/s without, ~30 with, AMD EPYC Zen 5).
template <typename T, int G, int E>
static inline void score_range(const float* q, const T* kc, int64_t from, int64_t to, int64_t S, float* scores, int64_t n) {
  int64_t t0 = from;
#ifdef HONE_VEC
  constexpr int TV = 2 * G <= Vec::kRegs ? 2 : 1;  // vectors per tile
  for (; t0 + TV * Vec::L <= to; t0 += TV * Vec::L) {
    typename Vec::reg acc[G][TV];
    for (int g = 0; g < G; ++g) for (int j = 0; j < TV; ++j) acc[g][j] = Vec::zero();
    for (int e = 0; e < E; ++e) {
      typename Vec::reg key[TV];
      for (int j = 0; j < TV; ++j) key[j] = Vec::load(kc + e * S + t0 + j * Vec::L);
      const char* ahead = reinterpret_cast<const char*>(kc + e * S + t0 + 2 * TV * Vec::L);
      for (int o = 0; o < TV * Vec::L * (int)sizeof(T); o += 64) _mm_prefetch(ahead + o, _MM_HINT_T0);
      for (int g = 0; g < G; ++g) {
        const auto qe = Vec::set1(q[g * E + e]);
        for (int j = 0; j < TV; ++j) acc[g][j] = Vec::fma(qe, key[j], acc[g][j]);
      }
    }
    for (int g = 0; g < G; ++g) for (int j = 0; j < TV; ++j) Vec::store(scores + g * n + t0 + j * Vec::L, acc[g][j]);
  }
#endif
  // the last positions, fewer than a tile (all of them without vectors), a key row at a time
  for (int g = 0; g < G; ++g) std::fill(scores + g * n + t0, scores + g * n + to, 0.f);
  for (int e = 0; e < E && t0 < to; ++e) {
    const T* kr = kc + e * S;
    for (int g = 0; g < G; ++g) {
      const float qe = q[g * E + e];
      float* sg = scores + g * n;
#pragma omp simd
      for (int64_t t = t0; t < to; ++t) sg[t] += qe * to_float(kr[t]);
    }
  }
}

// acc (G, E) += scores (G, n) times value rows [from, to) of vc (n, E), summed over positions in
// order (acc starts at zero when `fresh`). Blocks of the E columns small enough that G of them stay
// in registers where vectors apply (E a multiple of the lanes), one pass over the positions each.
template <typename T, int G, int E>
static inline void weigh_range(const float* scores, const T* vc, int64_t from, int64_t to, int64_t n, float* acc_out,
                               bool fresh) {
#ifdef HONE_VEC
  if constexpr (E % Vec::L == 0) {
    constexpr int V = E / Vec::L;  // vectors per value row
    constexpr int B = G * V <= Vec::kRegs ? V : (V % 2 == 0 && 2 * G <= Vec::kRegs ? 2 : 1);  // vectors per block
    for (int v0 = 0; v0 < V; v0 += B) {
      typename Vec::reg acc[G][B];
      for (int g = 0; g < G; ++g)
        for (int j = 0; j < B; ++j) acc[g][j] = fresh ? Vec::zero() : Vec::load(acc_out + g * E + (v0 + j) * Vec::L);
      for (int64_t t = from; t < to; ++t) {
        typename Vec::reg x[B];
        for (int j = 0; j < B; ++j) x[j] = Vec::load(vc + t * E + (v0 + j) * Vec::L);
        if (v0 == 0) {  // the rows 16 positions on: the first block's pass is the one that reads memory
          const char* ahead = reinterpret_cast<const char*>(vc + (t + 16) * E);
          for (int o = 0; o < E * (int)sizeof(T); o += 64) _mm_prefetch(ahead + o, _MM_HINT_T0);
        }
        for (int g = 0; g < G; ++g) {
          const auto p = Vec::set1(scores[g * n + t]);
          for (int j = 0; j < B; ++j) acc[g][j] = Vec::fma(p, x[j], acc[g][j]);
        }
      }
      for (int g = 0; g < G; ++g) for (int j = 0; j < B; ++j) Vec::store(acc_out + g * E + (v0 + j) * Vec::L, acc[g][j]);
    }
    return;
  }
#endif
  if (fresh) std::fill(acc_out, acc_out + G * E, 0.f);
  for (int64_t t = from; t < to; ++t) {
    const T* vr = vc + t * E;
    float x[E];
#pragma omp simd
    for (int e = 0; e < E; ++e) x[e] = to_float(vr[e]);
    for (int g = 0; g < G; ++g) {
      const float p = scores[g * n + t];
      float* a = acc_out + g * E;
#pragma omp simd
      for (int e = 0; e < E; ++e) a[e] += p * x[e];
    }
  }
}

// lens: each query's own number of positions (<= n), or null for n each; a query's scores past its
// own length are zeroed after its softmax, so it sums exactly what it would alone (plus exact zeros).
// Positions [0, P) are read from kc0 / vc0, another slot holding the same keys and values there
// (samples of one prompt: their caches are copies), so a batch's samples of a prompt read its cache
// from one place; the rest from kc / vc. Every sum runs over positions in order either way, so the
// outputs are the same bit for bit.
template <typename T, int G, int E>
static void attend_one(const float* q, const T* kc0, const T* vc0, int64_t P, const T* kc, const T* vc, int64_t n,
                       const int64_t* lens, int64_t S, float* scores, T* out) {
  P = std::min(P, n);
  // 1) scores (G, n): tiles of positions in registers, then any last positions a key row at a time
  if (P > 0) score_range<T, G, E>(q, kc0, 0, P, S, scores, n);
  score_range<T, G, E>(q, kc, P, n, S, scores, n);
  // 2) an fp32 softmax per query
  for (int g = 0; g < G; ++g) {
    float* sg = scores + g * n;
    const int64_t m = lens ? lens[g] : n;
    float mx = sg[0];
    for (int64_t t = 1; t < m; ++t) mx = sg[t] > mx ? sg[t] : mx;
    float total = 0.f;
#pragma omp simd reduction(+ : total)
    for (int64_t t = 0; t < m; ++t) {
      sg[t] = std::exp(sg[t] - mx);  // vectorised (libmvec) under -ffast-math
      total += sg[t];
    }
    const float inv = 1.f / total;
#pragma omp simd
    for (int64_t t = 0; t < m; ++t) sg[t] *= inv;
    std::fill(sg + m, sg + n, 0.f);
  }
  // 3) weighted sum of the value rows
  alignas(64) float acc[G][E];
  weigh_range<T, G, E>(scores, vc0, 0, P, n, &acc[0][0], true);
  weigh_range<T, G, E>(scores, vc, P, n, n, &acc[0][0], P == 0);
  for (int g = 0; g < G; ++g)
    for (int e = 0; e < E; ++e) out[g * E + e] = static_cast<T>(acc[g][e]);
}

// The same for any G and E, with run-time sizes (slower: nothing stays in registers).
template <typename T>
static void attend_any(const float* q, const T* kc0, const T* vc0, int64_t P, const T* kc, const T* vc, int64_t n,
                       const int64_t* lens, int64_t S, float* scores, T* out, int64_t G, int64_t E) {
  std::fill(scores, scores + G * n, 0.f);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t g = 0; g < G; ++g) {
      const float qe = q[g * E + e];
      for (int64_t t = 0; t < n; ++t) scores[g * n + t] += qe * to_float((t < P ? kc0 : kc)[e * S + t]);
    }
  for (int64_t g = 0; g < G; ++g) {
    float* sg = scores + g * n;
    const int64_t m = lens ? lens[g] : n;
    float mx = sg[0], total = 0.f;
    for (int64_t t = 1; t < m; ++t) mx = std::max(mx, sg[t]);
    for (int64_t t = 0; t < m; ++t) total += (sg[t] = std::exp(sg[t] - mx));
    for (int64_t t = 0; t < m; ++t) sg[t] /= total;
    std::fill(sg + m, sg + n, 0.f);
  }
  std::vector<float> acc(G * E, 0.f);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t g = 0; g < G; ++g)
      for (int64_t e = 0; e < E; ++e) acc[g * E + e] += scores[g * n + t] * to_float((t < P ? vc0 : vc)[t * E + e]);
  for (int64_t i = 0; i < G * E; ++i) out[i] = static_cast<T>(acc[i]);
}

template <typename T, int E>
static bool dispatch_g(int64_t G, const float* q, const T* kc0, const T* vc0, int64_t P, const T* kc, const T* vc,
                       int64_t n, const int64_t* lens, int64_t S, float* sc, T* out) {
  switch (G) {
    case 1: attend_one<T, 1, E>(q, kc0, vc0, P, kc, vc, n, lens, S, sc, out); return true;
    case 2: attend_one<T, 2, E>(q, kc0, vc0, P, kc, vc, n, lens, S, sc, out); return true;
    case 3: attend_one<T, 3, E>(q, kc0, vc0, P, kc, vc, n, lens, S, sc, out); return true;
    case 4: attend_one<T, 4, E>(q, kc0, vc0, P, kc, vc, n, lens, S, sc, out); return true;
    case 5: attend_one<T, 5, E>(q, kc0, vc0, P, kc, vc, n, lens, S, sc, out); return true;
    case 6: attend_one<T, 6, E>(q, kc0, vc0, P, kc, vc, n, lens, S, sc, out); return true;
    case 7: attend_one<T, 7, E>(q, kc0, vc0, P, kc, vc, n, lens, S, sc, out); return true;
    case 8: attend_one<T, 8, E>(q, kc0, vc0, P, kc, vc, n, lens, S, sc, out); return true;
    default: return false;
  }
}

template <typename T>
static void attend_dispatch(int64_t G, int64_t E, const float* q, const T* kc0, const T* vc0, int64_t P, const T* kc,
                            const T* vc, int64_t n, const int64_t* lens, int64_t S, float* sc, T* out) {
  bool done = false;
  if (E == 16) done = dispatch_g<T, 16>(G, q, kc0, vc0, P, kc, vc, n, lens, S, sc, out);
  else if (E == 32) done = dispatch_g<T, 32>(G, q, kc0, vc0, P, kc, vc, n, lens, S, sc, out);
  else if (E == 64) done = dispatch_g<T, 64>(G, q, kc0, vc0, P, kc, vc, n, lens, S, sc, out);
  else if (E == 128) done = dispatch_g<T, 128>(G, q, kc0, vc0, P, kc, vc, n, lens, S, sc, out);
  if (!done) attend_any<T>(q, kc0, vc0, P, kc, vc, n, lens, S, sc, out, G, E);
}

// Ask for the start of the next task's keys and values (the first 128 bytes of each key row, the
// first 16 value rows) so they arrive while this task computes; the tiles prefetch the rest as
// they go. Prefetching a whole task at once (~128 KB) measured slower than none here.
template <typename T>
static inline void prefetch_next(const T* k_cache, const T* v_cache, int64_t task, int64_t E, int64_t S) {
  const char* kc = reinterpret_cast<const char*>(k_cache + task * E * S);
  const char* vc = reinterpret_cast<const char*>(v_cache + task * S * E);
  for (int64_t e = 0; e < E; ++e) {
    __builtin_prefetch(kc + e * S * sizeof(T), 0, 3);
    __builtin_prefetch(kc + e * S * sizeof(T) + 64, 0, 3);
  }
  for (int64_t o = 0; o < 16 * E * (int64_t)sizeof(T); o += 64) __builtin_prefetch(vc + o, 0, 3);
}

// Rotate one kv head's new key and write it and the new value at `pos` of its cache (E, S) / (S, E).
template <typename T>
static inline void write_kv(const T* src, const T* c, const T* s, T* kc, T* vc, int64_t pos, int64_t H, int64_t K,
                            int64_t k, int64_t E, int64_t S) {
  const int64_t half = E / 2;
  const T* kin = src + H * E + k * E;
  const T* vin = src + H * E + K * E + k * E;
  for (int64_t e = 0; e < E; ++e) {
    float v = to_float(kin[e]);
    if (c) v = v * to_float(c[e]) + (e < half ? -to_float(kin[e + half]) : to_float(kin[e - half])) * to_float(s[e]);
    kc[e * S + pos] = static_cast<T>(v);
    vc[pos * E + e] = vin[e];
  }
}

// Rotate and scale kv head k's G queries into q (G, E) fp32.
template <typename T>
static inline void rotate_queries(const T* src, const T* c, const T* s, float* q, int64_t G, int64_t k, int64_t E,
                                  double scale) {
  const int64_t half = E / 2;
  for (int64_t g = 0; g < G; ++g) {
    const T* qin = src + (k * G + g) * E;
    for (int64_t e = 0; e < E; ++e) {
      float v = to_float(qin[e]);
      if (c) v = v * to_float(c[e]) + (e < half ? -to_float(qin[e + half]) : to_float(qin[e - half])) * to_float(s[e]);
      // rounded as the cached keys are, so an fp32 engine matches a full forward exactly
      q[g * E + e] = to_float(static_cast<T>(v)) * static_cast<float>(scale);
    }
  }
}

// One decode step of attention for B slots. qkv: (B, (H + 2K) * E) straight from the fused
// projection; cos, sin: (B, E) rows of the rotary tables at each slot's position, or empty for no
// rotation; k_cache: (slots, K, E, S) (keys transposed), v_cache: (slots, K, S, E), this layer's;
// positions: (B,) int64. Writes the rotated k and the v of position positions[b] into the caches
// and returns (B, H * E). A cache of S positions holds position p at p % S and is attended over
// its first min(p + 1, S) entries: a cache longer than every position is the usual one, and one of
// exactly a sliding window's W positions is a ring that keeps the last W (order does not matter
// to attention: keys are rotated before they are cached).
// owners, shared: (B,) or null: slot b's first shared[b] positions are read from slot owners[b],
// which holds the same keys and values there (its cache's copy; see attend_one). Not for rings.
template <typename T>
static void attend(const T* qkv, const T* cos, const T* sin, T* k_cache, T* v_cache, const int64_t* positions,
                   const int64_t* owners, const int64_t* shared, T* out, int64_t B, int64_t H, int64_t K, int64_t E,
                   int64_t S, double scale, bool rope) {
  const int64_t G = H / K, row = (H + 2 * K) * E;
  auto source = [&](int64_t b) { return owners && shared[b] > 0 ? owners[b] : b; };  // the slot a task reads first
  at::parallel_for(0, B * K, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> q(G * E), scores;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / K, k = task % K, pos = positions[b] % S, n = std::min(positions[b] + 1, S);
      const T* src = qkv + b * row;
      T* kc = k_cache + (b * K + k) * E * S;  // (E, S)
      T* vc = v_cache + (b * K + k) * S * E;  // (S, E)
      const int64_t o = source(b), P = owners ? shared[b] : 0;
      const T* c = rope ? cos + b * E : nullptr;
      const T* s = rope ? sin + b * E : nullptr;
      write_kv<T>(src, c, s, kc, vc, pos, H, K, k, E, S);  // 1) the new key and value
      rotate_queries<T>(src, c, s, q.data(), G, k, E, scale);  // 2) this kv head's queries
      // 3) ask for the next task's keys and values now, so they arrive while this one computes
      if (task + 1 < end) prefetch_next(k_cache, v_cache, source((task + 1) / K) * K + (task + 1) % K, E, S);
      // 4) attend over this slot's cached positions (the first P as its owner holds them)
      scores.resize(G * n);
      attend_dispatch<T>(G, E, q.data(), k_cache + (o * K + k) * E * S, v_cache + (o * K + k) * S * E, P, kc, vc, n,
                         nullptr, S, scores.data(), out + b * H * E + k * G * E);
    }
  });
}

// Several new tokens per slot (speculative verification): row i of qkv is a token of slot
// slots[i] at positions[i]; each slot's rows are consecutive, at consecutive positions, and
// starts (R + 1,) marks where each slot's run begins. Every new key and value is written first,
// then each row attends over its slot's positions up to its own (causal within the run). The
// queries of a run's rows attend together, up to kPass at a time (G per row and kv head), each to
// its own length: one pass over the slot's keys and values serves them all.
// Not for rings: a later row's write could overwrite what an earlier one sees.
constexpr int64_t kPass = 8;  // the most queries attend_one takes at once

template <typename T>
static void attend_runs(const T* qkv, const T* cos, const T* sin, T* k_cache, T* v_cache, const int64_t* slots,
                        const int64_t* positions, const int64_t* starts, T* out, int64_t N, int64_t R, int64_t H,
                        int64_t K, int64_t E, int64_t S, double scale, bool rope) {
  const int64_t G = H / K, row = (H + 2 * K) * E;
  at::parallel_for(0, N * K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i = task / K, k = task % K, b = slots[i];
      write_kv<T>(qkv + i * row, rope ? cos + i * E : nullptr, rope ? sin + i * E : nullptr,
                  k_cache + (b * K + k) * E * S, v_cache + (b * K + k) * S * E, positions[i], H, K, k, E, S);
    }
  });
  // a pass takes whole rows' G queries: as many rows as fit in kPass queries, at least one
  const int64_t rows_per_pass = std::max<int64_t>(1, kPass / G);
  at::parallel_for(0, R * K, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> q, scores;
    std::vector<T> o;
    std::vector<int64_t> lens;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / K, k = task % K, b = slots[starts[r]];
      const T* kc = k_cache + (b * K + k) * E * S;
      const T* vc = v_cache + (b * K + k) * S * E;
      if (task + 1 < end) prefetch_next(k_cache, v_cache, slots[starts[(task + 1) / K]] * K + (task + 1) % K, E, S);
      for (int64_t first = starts[r]; first < starts[r + 1]; first += rows_per_pass) {
        const int64_t last = std::min(first + rows_per_pass, starts[r + 1]), Q = (last - first) * G;
        q.resize(Q * E);
        o.resize(Q * E);
        lens.resize(Q);
        for (int64_t i = first; i < last; ++i) {
          rotate_queries<T>(qkv + i * row, rope ? cos + i * E : nullptr, rope ? sin + i * E : nullptr,
                            q.data() + (i - first) * G * E, G, k, E, scale);
          std::fill(lens.begin() + (i - first) * G, lens.begin() + (i - first + 1) * G, positions[i] + 1);
        }
        const int64_t n = positions[last - 1] + 1;  // the pass's last row sees the most
        scores.resize(Q * n);
        attend_dispatch<T>(Q, E, q.data(), kc, vc, 0, kc, vc, n, lens.data(), S, scores.data(), o.data());
        for (int64_t i = first; i < last; ++i)
          std::copy(o.data() + (i - first) * G * E, o.data() + (i - first + 1) * G * E, out + i * H * E + k * G * E);
      }
    }
  });
}

// RMSNorm of each row of x (rows, D) times w (D,), as torch's fused CPU rms_norm computes it:
// everything in fp32, rounded to T once. One pass per row instead of the several ops and
// temporaries torch runs for a 576-wide row.
template <typename T>
static void rms_norm_rows(const T* x, const T* w, T* out, int64_t rows, int64_t D, float eps) {
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * D;
      T* o = out + r * D;
      float squares = 0.f;
#pragma omp simd reduction(+ : squares)
      for (int64_t d = 0; d < D; ++d) squares += to_float(xr[d]) * to_float(xr[d]);
      const float rstd = 1.f / std::sqrt(squares / static_cast<float>(D) + eps);
      for (int64_t d = 0; d < D; ++d) o[d] = static_cast<T>(to_float(xr[d]) * rstd * to_float(w[d]));
    }
  });
}

torch::Tensor rms_norm(torch::Tensor x, torch::Tensor w, double eps) {
  TORCH_CHECK(x.is_contiguous() && w.is_contiguous() && x.scalar_type() == w.scalar_type(), "contiguous x and w of one dtype");
  const int64_t D = x.size(-1), rows = x.numel() / D;
  auto out = torch::empty_like(x);
  if (x.scalar_type() == at::kBFloat16) {
    using T = c10::BFloat16;
    rms_norm_rows<T>(x.data_ptr<T>(), w.data_ptr<T>(), out.data_ptr<T>(), rows, D, static_cast<float>(eps));
  } else {
    TORCH_CHECK(x.scalar_type() == at::kFloat, "float32 or bfloat16");
    rms_norm_rows<float>(x.data_ptr<float>(), w.data_ptr<float>(), out.data_ptr<float>(), rows, D, static_cast<float>(eps));
  }
  return out;
}

static inline float bf16_to_float(uint16_t u) {
  const uint32_t bits = static_cast<uint32_t>(u) << 16; float f; std::memcpy(&f, &bits, sizeof(f)); return f;
}
#if defined(__AVX2__) && defined(__FMA__)
static inline __m256 load_bf16x8(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif
// out[b][r] = X[b] . W[r] over K for R rows of w (bf16) and BB rows of X (fp32).
template <int R, int BB>
static inline void dots(const float* X, int64_t K, const uint16_t* w, float out[BB][R]) {
  int64_t k = 0;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc[BB][R];
  for (int b = 0; b < BB; ++b) for (int r = 0; r < R; ++r) acc[b][r] = _mm256_setzero_ps();
  for (; k + 8 <= K; k += 8) {
    __m256 wv[R];
    // the next tile's rows, a cache line per step: the hardware prefetcher alone left a batch-1
    // step at ~9 GB/s of weights here, this at ~15-17 (a 2-core AMD EPYC, AVX2)
    _mm_prefetch(reinterpret_cast<const char*>(w + R * K + k * R), _MM_HINT_T0);
    for (int r = 0; r < R; ++r) wv[r] = load_bf16x8(w + r * K + k);
    for (int b = 0; b < BB; ++b) {
      __m256 xv = _mm256_loadu_ps(X + b * K + k);
      // held in a register: gcc otherwise folds this load into each of the R FMAs, and R loads of x
      // per weight vector made the loop load-bound (1.1-1.7x slower at 4-64 rows, Zen 3)
      asm("" : "+x"(xv));
      for (int r = 0; r < R; ++r) acc[b][r] = _mm256_fmadd_ps(wv[r], xv, acc[b][r]);
    }
  }
  for (int b = 0; b < BB; ++b) for (int r = 0; r < R; ++r) out[b][r] = hsum(acc[b][r]);
#else
  for (int b = 0; b < BB; ++b) for (int r = 0; r < R; ++r) out[b][r] = 0.f;
#endif
  for (; k < K; ++k)
    for (int b = 0; b < BB; ++b) for (int r = 0; r < R; ++r) out[b][r] += X[b * K + k] * bf16_to_float(w[r * K + k]);
}
#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define HONE_DPBF16 1
// The same for bf16 X, on CPUs with AVX512-BF16: one instruction multiplies 32 bf16 pairs and
// adds them, two by two, into 16 fp32 sums, where AVX2 widens 8 weights and does 8 FMAs. The
// products of two bf16 numbers are exact in fp32, so only the order of the fp32 sums differs.
template <int R, int BB>
static inline void dots(const uint16_t* X, int64_t K, const uint16_t* w, float out[BB][R]) {
  __m512 acc[BB][R];
  for (int b = 0; b < BB; ++b) for (int r = 0; r < R; ++r) acc[b][r] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    // the tile after next, at the rate this one is read (R cache lines a step): one tile ahead, as
    // in the AVX2 loop, read ~10-30% slower here (noisy; a 2-core AMD EPYC, Zen 5)
    for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char*>(w + 2 * R * K + k * R + r * 32), _MM_HINT_T0);
    __m512bh wv[R];
    for (int r = 0; r < R; ++r) wv[r] = (__m512bh)_mm512_loadu_si512(w + r * K + k);
    for (int b = 0; b < BB; ++b) {
      __m512bh xv = (__m512bh)_mm512_loadu_si512(X + b * K + k);
      asm("" : "+v"(xv));  // one load of x per step, as in the AVX2 loop
      for (int r = 0; r < R; ++r) acc[b][r] = _mm512_dpbf16_ps(acc[b][r], wv[r], xv);
    }
  }
  for (int b = 0; b < BB; ++b) for (int r = 0; r < R; ++r) out[b][r] = _mm512_reduce_add_ps(acc[b][r]);
  for (; k < K; ++k)
    for (int b = 0; b < BB; ++b) for (int r = 0; r < R; ++r) out[b][r] += bf16_to_float(X[b * K + k]) * bf16_to_float(w[r * K + k]);
}
#endif
template <typename T, typename Y, int R, int BB, typename XT>
static inline void tile(const XT* X, const uint16_t* w, const T* bias, const T* residual, Y* y, int64_t b0, int64_t n0, int64_t N, int64_t K) {
  float out[BB][R];
  dots<R, BB>(X + b0 * K, K, w + n0 * K, out);
  for (int b = 0; b < BB; ++b)
    for (int r = 0; r < R; ++r) {
      float v = out[b][r];
      if (bias) v += to_float(bias[n0 + r]);
      if (residual) v += to_float(residual[(b0 + b) * N + n0 + r]);
      y[(b0 + b) * N + n0 + r] = static_cast<Y>(v);
    }
}
// Every (3 weight rows, 4 rows of x) tile of y; XT is fp32, or bf16 where dots has a bf16 form.
template <typename T, typename Y, typename XT>
static void run_tiles(const XT* X, const uint16_t* w, const T* bias, const T* residual, Y* y, int64_t B, int64_t N, int64_t K) {
  constexpr int R = 3;  // 3 weight rows x 4 rows of x: 12 accumulators and 3 weights in 16 registers
  const int64_t tiles = N / R;
  at::parallel_for(0, tiles, 8, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = t * R;
      int64_t b = 0;
      for (; b + 4 <= B; b += 4) tile<T, Y, R, 4>(X, w, bias, residual, y, b, n0, N, K);
      if (b + 3 == B) {
        tile<T, Y, R, 3>(X, w, bias, residual, y, b, n0, N, K);
        b += 3;
      }
      for (; b + 2 <= B; b += 2) tile<T, Y, R, 2>(X, w, bias, residual, y, b, n0, N, K);
      for (; b < B; ++b) tile<T, Y, R, 1>(X, w, bias, residual, y, b, n0, N, K);
    }
  });
  for (int64_t n = tiles * R; n < N; ++n)
    for (int64_t b = 0; b < B; ++b) tile<T, Y, 1, 1>(X, w, bias, residual, y, b, n, N, K);
}
// y (B, N) = x (B, K) . w (N, K)^T (+ bias) (+ residual), w bf16, sums in fp32, y rounded once to
// Y (x's dtype, or fp32 for logits). For CPUs where oneDNN cannot pack bf16 weights (AVX2 without
// AVX-512): torch's own bf16 matmul there is several times slower than this at every batch size;
// and with AVX512-BF16 for a few rows, where it reads the weights faster than oneDNN's bf16 path.
// A tile of 3 weight rows is read from memory once and stays in L1 while every row of x passes
// over it, so a decode step reads each weight once whatever its batch.
template <typename T, typename Y>
static void linear_rows(const T* x, const uint16_t* w, const T* bias, const T* residual, Y* y, int64_t B, int64_t N, int64_t K) {
#ifdef HONE_DPBF16
  if constexpr (std::is_same<T, c10::BFloat16>::value) {
    run_tiles<T, Y>(reinterpret_cast<const uint16_t*>(x), w, bias, residual, y, B, N, K);
    return;
  }
#endif
  std::vector<float> xf(B * K);
  for (int64_t i = 0; i < B * K; ++i) xf[i] = to_float(x[i]);
  run_tiles<T, Y>(xf.data(), w, bias, residual, y, B, N, K);
}
torch::Tensor linear_bf16(torch::Tensor x, torch::Tensor w, c10::optional<torch::Tensor> bias, c10::optional<torch::Tensor> residual, bool float_out) {
  TORCH_CHECK(w.scalar_type() == at::kBFloat16 && w.dim() == 2 && w.is_contiguous(), "a contiguous bf16 weight (N, K)");
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.size(1) == w.size(1), "contiguous rows x (B, K) matching the weight's K");
  TORCH_CHECK(!bias || (bias->is_contiguous() && bias->scalar_type() == x.scalar_type() && bias->numel() == w.size(0)), "a bias (N,) of x's dtype");
  TORCH_CHECK(!residual || (residual->is_contiguous() && residual->scalar_type() == x.scalar_type() && residual->numel() == x.size(0) * w.size(0)), "a residual (B, N) of x's dtype");
  const int64_t B = x.size(0), K = x.size(1), N = w.size(0);
  auto y = torch::empty({B, N}, x.options().dtype(float_out ? at::kFloat : x.scalar_type()));
  const uint16_t* wp = reinterpret_cast<const uint16_t*>(w.data_ptr());
  AT_DISPATCH_SWITCH(x.scalar_type(), "linear_bf16",
    AT_DISPATCH_CASE(at::kFloat, [&] { linear_rows<float, float>(x.data_ptr<float>(), wp, bias ? bias->data_ptr<float>() : nullptr, residual ? residual->data_ptr<float>() : nullptr, y.data_ptr<float>(), B, N, K); })
    AT_DISPATCH_CASE(at::kBFloat16, [&] {
      using T = c10::BFloat16;
      const T* bp = bias ? bias->data_ptr<T>() : nullptr;
      const T* rp = residual ? residual->data_ptr<T>() : nullptr;
      if (float_out) linear_rows<T, float>(x.data_ptr<T>(), wp, bp, rp, y.data_ptr<float>(), B, N, K);
      else linear_rows<T, T>(x.data_ptr<T>(), wp, bp, rp, y.data_ptr<T>(), B, N, K);
    }));
  return y;
}
bool bf16_dot_products() {  // whether linear_bf16 multiplies bf16 rows of x with AVX512-BF16's dot products
#ifdef HONE_DPBF16
  return true;
#else
  return false;
#endif
}
// owners, shared: empty, or (B,) int64 each (see attend): slots whose first positions another
// slot holds too read them there.
torch::Tensor decode_attention(torch::Tensor qkv, torch::Tensor cos, torch::Tensor sin, torch::Tensor k_cache,
                               torch::Tensor v_cache, torch::Tensor positions, int64_t H, int64_t K, double scale,
                               torch::Tensor owners, torch::Tensor shared) {
  TORCH_CHECK(qkv.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous(), "contiguous inputs");
  TORCH_CHECK(positions.scalar_type() == at::kLong, "int64 positions");
  const int64_t B = qkv.size(0), E = k_cache.size(2), S = k_cache.size(3);
  const bool rope = cos.numel() > 0, sharing = owners.numel() > 0;
  auto cos_c = cos.contiguous(), sin_c = sin.contiguous(), pos_c = positions.contiguous();
  auto owners_c = owners.contiguous(), shared_c = shared.contiguous();
  const int64_t* own = nullptr;  // null: every slot reads its own cache
  const int64_t* lens = nullptr;
  if (sharing) {
    TORCH_CHECK(owners.scalar_type() == at::kLong && shared.scalar_type() == at::kLong && owners.numel() == B &&
                shared.numel() == B, "int64 owners and shared lengths, one per row");
    own = owners_c.data_ptr<int64_t>();
    lens = shared_c.data_ptr<int64_t>();
    const int64_t* p = pos_c.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {  // plain loops: torch ops here cost ~10 us a layer
      TORCH_CHECK(p[b] < S, "shared prefixes need positions within the cache (no rings)");
      TORCH_CHECK(lens[b] <= p[b], "a shared prefix must end at or before the row's position");
      TORCH_CHECK(lens[b] == 0 || (own[b] >= 0 && own[b] < k_cache.size(0)), "an owner must be a slot of the cache");
    }
  }
  auto out = torch::empty({B, H * E}, qkv.options());
  if (qkv.scalar_type() == at::kBFloat16) {
    using T = c10::BFloat16;
    attend<T>(qkv.data_ptr<T>(), rope ? cos_c.data_ptr<T>() : nullptr, rope ? sin_c.data_ptr<T>() : nullptr,
              k_cache.data_ptr<T>(), v_cache.data_ptr<T>(), pos_c.data_ptr<int64_t>(), own, lens, out.data_ptr<T>(),
              B, H, K, E, S, scale, rope);
  } else {
    TORCH_CHECK(qkv.scalar_type() == at::kFloat, "float32 or bfloat16");
    attend<float>(qkv.data_ptr<float>(), rope ? cos_c.data_ptr<float>() : nullptr,
                  rope ? sin_c.data_ptr<float>() : nullptr, k_cache.data_ptr<float>(), v_cache.data_ptr<float>(),
                  pos_c.data_ptr<int64_t>(), own, lens, out.data_ptr<float>(), B, H, K, E, S, scale, rope);
  }
  return out;
}

torch::Tensor verify_attention(torch::Tensor qkv, torch::Tensor cos, torch::Tensor sin, torch::Tensor k_cache,
                               torch::Tensor v_cache, torch::Tensor slots, torch::Tensor positions,
                               torch::Tensor starts, int64_t H, int64_t K, double scale) {
  TORCH_CHECK(qkv.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous(), "contiguous inputs");
  TORCH_CHECK(positions.scalar_type() == at::kLong && slots.scalar_type() == at::kLong &&
              starts.scalar_type() == at::kLong, "int64 slots, positions and starts");
  const int64_t N = qkv.size(0), R = starts.size(0) - 1, E = k_cache.size(2), S = k_cache.size(3);
  TORCH_CHECK(positions.max().item<int64_t>() < S, "positions must fit the cache (no rings)");
  const bool rope = cos.numel() > 0;
  auto cos_c = cos.contiguous(), sin_c = sin.contiguous(), pos_c = positions.contiguous();
  auto slots_c = slots.contiguous(), starts_c = starts.contiguous();
  auto out = torch::empty({N, H * E}, qkv.options());
  if (qkv.scalar_type() == at::kBFloat16) {
    using T = c10::BFloat16;
    attend_runs<T>(qkv.data_ptr<T>(), rope ? cos_c.data_ptr<T>() : nullptr, rope ? sin_c.data_ptr<T>() : nullptr,
                   k_cache.data_ptr<T>(), v_cache.data_ptr<T>(), slots_c.data_ptr<int64_t>(),
                   pos_c.data_ptr<int64_t>(), starts_c.data_ptr<int64_t>(), out.data_ptr<T>(), N, R, H, K, E, S,
                   scale, rope);
  } else {
    TORCH_CHECK(qkv.scalar_type() == at::kFloat, "float32 or bfloat16");
    attend_runs<float>(qkv.data_ptr<float>(), rope ? cos_c.data_ptr<float>() : nullptr,
                       rope ? sin_c.data_ptr<float>() : nullptr, k_cache.data_ptr<float>(),
                       v_cache.data_ptr<float>(), slots_c.data_ptr<int64_t>(), pos_c.data_ptr<int64_t>(),
                       starts_c.data_ptr<int64_t>(), out.data_ptr<float>(), N, R, H, K, E, S, scale, rope);
  }
  return out;
}
"""

NO_SHARING = (torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))  # decode_attention's owners, shared: none

_lock = threading.Lock()
_module = None
_tried = False


def kernels_enabled() -> bool:
    return os.environ.get("HONE_ENGINE_KERNELS", "1") != "0"


def load_kernels():
    """The compiled kernel module, building it on first call (~30-60 s, then cached), or None."""
    global _module, _tried
    with _lock:
        if _tried:
            return _module
        _tried = True
        if not kernels_enabled():
            return None
        try:
            from torch.utils.cpp_extension import load_inline

            # -march=native: the build is for this CPU, so its name carries the CPU's flags
            flags = _cpu_flags()
            digest = hashlib.sha1((_SOURCE + flags + torch.__version__).encode()).hexdigest()[:12]
            _module = load_inline(
                name=f"hone_engine_kernels_{digest}",
                cpp_sources=_SOURCE,
                functions=["decode_attention", "verify_attention", "rms_norm", "linear_bf16", "bf16_dot_products"],
                extra_cflags=_cflags(),
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
        except Exception as exc:  # no compiler, no ninja, another platform: the torch path is correct, only slower
            log.warning("hone: the engine's C++ attention kernel could not be built (%s); using torch ops", exc)
            _module = None
        return _module


def _cflags() -> list[str]:
    # -ffast-math only when compiling (never linking, which would flush denormals process-wide);
    # 256-bit vectors (gcc's default preference) measured faster here than 512-bit ones
    return ["-O3", "-march=native", "-fopenmp", "-ffast-math"]


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return ""


def decode_attention_reference(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    positions: torch.Tensor,
    n_heads: int,
    n_kv_heads: int,
    scale: float,
    owners: torch.Tensor | None = None,
    shared: torch.Tensor | None = None,
) -> torch.Tensor:
    """What the kernel computes, in torch ops: (B, H*E) attention outputs; writes the caches.

    qkv (B, (H+2K)*E); cos, sin (B, E) (empty for no rotation); k_cache (slots, K, E, S) (keys
    transposed), v_cache (slots, K, S, E); positions (B,). `owners`, `shared`: where the kernel may
    read a slot's first positions from another slot holding the same; every slot reads its own here.
    """
    B = qkv.shape[0]
    H, K = n_heads, n_kv_heads
    E, S = k_cache.shape[2], k_cache.shape[3]
    G = H // K
    q, k, v = _rotated_qkv_reference(qkv, cos, sin, H, K, E)
    rows = torch.arange(B, device=qkv.device)
    k_cache[rows, :, :, positions % S] = k  # a cache of a sliding window's length is a ring (see the kernel)
    v_cache[rows, :, positions % S] = v
    # attend over the whole capacity, masking entries not yet written (-inf before softmax)
    visible = torch.arange(S, device=qkv.device).unsqueeze(0) < (positions + 1).clamp(max=S).unsqueeze(1)  # (B, S)
    bias = torch.zeros(B, S, dtype=qkv.dtype, device=qkv.device).masked_fill_(~visible, float("-inf"))
    bias = bias.repeat_interleave(K, dim=0).unsqueeze(1)  # (B*K, 1, S)
    keys_t = k_cache[:B].view(B * K, E, S)  # contiguous views: slots and heads merge
    values = v_cache[:B].view(B * K, S, E)
    scores = torch.baddbmm(bias, q.reshape(B * K, G, E), keys_t, alpha=scale)  # (B*K, G, S)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(qkv.dtype)
    return torch.bmm(probs, values).view(B, H * E)


def verify_attention_reference(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slots: torch.Tensor,
    positions: torch.Tensor,
    starts: torch.Tensor,
    n_heads: int,
    n_kv_heads: int,
    scale: float,
) -> torch.Tensor:
    """What the kernel's `verify_attention` computes, in torch ops: several new tokens per slot.

    Row i of qkv (N, (H+2K)*E) is a token of slot slots[i] at positions[i]; every new key and value
    is written first, then row i attends over its slot's positions 0..positions[i]. `starts` (runs
    of one slot) is not needed here; it is taken for the kernel's signature. No rings."""
    N = qkv.shape[0]
    H, K = n_heads, n_kv_heads
    E, S = k_cache.shape[2], k_cache.shape[3]
    G = H // K
    q, k, v = _rotated_qkv_reference(qkv, cos, sin, H, K, E)
    k_cache[slots, :, :, positions] = k
    v_cache[slots, :, positions] = v
    visible = torch.arange(S, device=qkv.device).unsqueeze(0) <= positions.unsqueeze(1)  # (N, S)
    bias = torch.zeros(N, S, dtype=qkv.dtype, device=qkv.device).masked_fill_(~visible, float("-inf"))
    bias = bias.repeat_interleave(K, dim=0).unsqueeze(1)  # (N*K, 1, S)
    keys_t = k_cache[slots].view(N * K, E, S)  # a copy per row: the slow obvious version
    values = v_cache[slots].view(N * K, S, E)
    scores = torch.baddbmm(bias, q.reshape(N * K, G, E), keys_t, alpha=scale)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(qkv.dtype)
    return torch.bmm(probs, values).view(N, H * E)


def _rotated_qkv_reference(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, H: int, K: int, E: int):
    """Rows of fused q|k|v (R, (H+2K)*E) -> q (R, H, E) and k (R, K, E) rotated (unless cos is empty), v (R, K, E)."""
    R = qkv.shape[0]
    qk = qkv[:, : (H + K) * E].view(R, H + K, E)
    if cos.numel():
        half = E // 2
        rotated = torch.cat([-qk[..., half:], qk[..., :half]], dim=-1)  # rotate_half
        qk = qk * cos.view(R, 1, E) + rotated * sin.view(R, 1, E)
    return qk[:, :H], qk[:, H:], qkv[:, (H + K) * E :].view(R, K, E)
