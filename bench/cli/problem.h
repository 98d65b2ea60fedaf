// The attention problem the CLI times, and the masking/bias rules of docs/semantics, written once so the
// CPU loop reference and the GPU softmax kernel apply exactly the same function.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FAB_HD __host__ __device__ __forceinline__
#else
#define FAB_HD inline
#endif

namespace fab {

enum DType : int32_t { kFP32 = 1, kFP16 = 2, kBF16 = 3 };  // same values as flashattn_dtype

struct Problem {
  int64_t batch, seqlen_q, seqlen_k;
  int64_t nheads, nheads_k, headdim;
  int32_t dtype;        // DType of q, k, v, out
  int32_t causal;
  int32_t window_left;  // -1 = unbounded
  int32_t window_right; // -1 = unbounded (0 when causal)
  float softcap;        // 0 = off
  float scale;          // softmax scale, already resolved (1/sqrt(d) by default)
};

// Key range row i of a (sq, sk) problem sees: [lo, hi] inclusive, bottom-right aligned (the FA2 rule).
struct KeyRange { int64_t lo, hi; };

FAB_HD KeyRange key_range(const Problem& p, int64_t i) {
  const int64_t diag = i + p.seqlen_k - p.seqlen_q;
  int64_t lo = 0, hi = p.seqlen_k - 1;
  int64_t right = p.causal ? 0 : p.window_right;
  if (right >= 0 && diag + right < hi) hi = diag + right;
  if (p.window_left >= 0 && diag - p.window_left > lo) lo = diag - p.window_left;
  return {lo, hi};
}

// Final logit from the raw product q.k: scale, optional softcap (tanh), then ALiBi bias. T is double on
// the CPU reference and float in the GPU kernels (fp32 is what the GPU reference promises).
template <typename T>
FAB_HD T logit(const Problem& p, T qk, T alibi_slope, int64_t i, int64_t j) {
  T s = qk * static_cast<T>(p.scale);
  if (p.softcap > 0.f) s = static_cast<T>(p.softcap) * tanh(s / static_cast<T>(p.softcap));
  if (alibi_slope != T(0)) {
    const int64_t rel = i + p.seqlen_k - p.seqlen_q - j;
    s -= alibi_slope * static_cast<T>(rel < 0 ? -rel : rel);
  }
  return s;
}

// d(logit)/d(qk): the chain factor the backward multiplies dS by.
template <typename T>
FAB_HD T dlogit_dqk(const Problem& p, T qk) {
  if (p.softcap > 0.f) {
    const T t = tanh(qk * static_cast<T>(p.scale) / static_cast<T>(p.softcap));
    return static_cast<T>(p.scale) * (T(1) - t * t);
  }
  return static_cast<T>(p.scale);
}

}  // namespace fab
