// Online softmax over key blocks, in registers, base 2. Scores arrive in the units their score policy
// left them in; `scale_log2` (the policy's softmax_scale_log2) brings them to base 2, folded into the one
// FFMA that also subtracts the row max: p = exp2(s * scale_log2 - max * scale_log2).
// Row sums stay per-thread partial until finalize (one quad reduction instead of one per block).
#pragma once

#include <cmath>

#include "cuda/common/utils.cuh"

namespace flashattn {
namespace kern {

template <int kNRows>
struct OnlineSoftmax {
  float row_max[kNRows];
  float row_sum[kNRows];

  // s, o: (rows, cols) register views of the score tile and the output accumulator. On return s holds
  // the unnormalised probabilities and o, row_sum are rescaled to the new running max. Needs row_max
  // = -inf and row_sum = 0 before the first block (init()).
  FLASHATTN_DEVICE void init() {
    CUTE_UNROLL
    for (int i = 0; i < kNRows; ++i) {
      row_max[i] = -INFINITY;
      row_sum[i] = 0.f;
    }
  }

  template <typename TensorS, typename TensorO>
  FLASHATTN_DEVICE void update(TensorS& s, TensorO& o, float scale_log2) {
    static_assert(decltype(size<0>(s))::value == kNRows);
    float m_new[kNRows];
    bool changed = false;
    CUTE_UNROLL
    for (int mi = 0; mi < kNRows; ++mi) {
      float m = row_max[mi];
      CUTE_UNROLL
      for (int nj = 0; nj < size<1>(s); ++nj) m = fmaxf(m, s(mi, nj));
      m_new[mi] = quad_allreduce(m, MaxOp{});
      changed |= m_new[mi] != row_max[mi];
    }
    // After the first few blocks a row max rarely moves; when no row of the warp moved, every
    // correction factor would be exp2(0) = 1 exactly, so skipping the rescale of O (d/4..d/2 FMULs per
    // row) changes no bit of the result.
    if (__any_sync(0xffffffffu, changed)) {
      CUTE_UNROLL
      for (int mi = 0; mi < kNRows; ++mi) {
        // exp2(-inf) = 0 while the row has seen no key: o and row_sum are still 0 then. A row whose
        // max is still -inf subtracts 0 instead, so exp2 gives 0, not NaN.
        const float m_scaled = m_new[mi] == -INFINITY ? 0.f : m_new[mi] * scale_log2;
        const float correction = exp2f(row_max[mi] * scale_log2 - m_scaled);
        row_sum[mi] *= correction;
        CUTE_UNROLL
        for (int dj = 0; dj < size<1>(o); ++dj) o(mi, dj) *= correction;
        row_max[mi] = m_new[mi];
      }
    }
    CUTE_UNROLL
    for (int mi = 0; mi < kNRows; ++mi) {
      const float m_scaled = row_max[mi] == -INFINITY ? 0.f : row_max[mi] * scale_log2;
      float sum = 0.f;
      CUTE_UNROLL
      for (int nj = 0; nj < size<1>(s); ++nj) {
        const float e = exp2f(s(mi, nj) * scale_log2 - m_scaled);
        s(mi, nj) = e;
        sum += e;
      }
      row_sum[mi] += sum;
    }
  }

  // Normalises o and returns each row's natural-log LSE. A sink (a natural-log logit, whatever units
  // the score policy left the scores in) joins the denominator only. Rows that saw no key: o = 0, LSE = +inf, or the sink.
  template <typename TensorO>
  FLASHATTN_DEVICE void finalize(TensorO& o, float scale_log2, bool has_sink, float sink, float (&lse)[kNRows]) {
    const float sink_log2 = sink * kLog2e;
    CUTE_UNROLL
    for (int mi = 0; mi < kNRows; ++mi) {
      const float sum = quad_allreduce(row_sum[mi], SumOp{});
      float o_scale;
      if (row_max[mi] == -INFINITY) {
        o_scale = 0.f;
        lse[mi] = has_sink ? sink : INFINITY;
      } else {
        const float m2 = row_max[mi] * scale_log2;
        if (has_sink) {
          const float top = fmaxf(m2, sink_log2);
          const float z = sum * exp2f(m2 - top) + exp2f(sink_log2 - top);
          o_scale = exp2f(m2 - top) / z;
          lse[mi] = (top + log2f(z)) * kLn2;
        } else {
          o_scale = 1.f / sum;
          lse[mi] = (m2 + log2f(sum)) * kLn2;
        }
      }
      CUTE_UNROLL
      for (int dj = 0; dj < size<1>(o); ++dj) o(mi, dj) *= o_scale;
    }
  }
};

}  // namespace kern
}  // namespace flashattn
