// Score policies: the hooks between S = Q K^T and the softmax (FlashInfer's variant idea).
//   plain:   scores stay raw; the softmax multiplies by scale * log2(e) (one FFMA per element).
//   softcap: s = softcap * tanh(scale * q.k / softcap)          (docs/semantics.md order:
//   alibi:   s -= slope(b, h) * |i + sk - sq - j|                 softcap, then ALiBi, then the mask)
// The policies that transform scores bring them to their final natural-log units; the softmax then uses
// log2(e) alone. Sinks are not a score hook: they join the normaliser in OnlineSoftmax::finalize.
#pragma once

#include "core/params.h"
#include "cuda/common/utils.cuh"

namespace flashattn {
namespace kern {

FLASHATTN_DEVICE float tanh_approx(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// kSoftcap / kAlibi say whether the kernel may apply the feature; the run-time values decide whether it
// does, so <true, true> is the general variant that serves every combination.
template <bool kSoftcap_, bool kAlibi_>
struct ScorePolicy {
  static constexpr bool kSoftcap = kSoftcap_;
  static constexpr bool kAlibi = kAlibi_;
  static constexpr bool kTransforms = kSoftcap || kAlibi;

  float softmax_scale_log2;  // what the softmax multiplies scores by to reach base-2 units
  float pre_scale = 1.f;     // raw q.k -> argument of tanh (scale / softcap), or -> final units (scale)
  float softcap = 0.f;
  float slope = 0.f;

  FLASHATTN_DEVICE ScorePolicy(const FwdParams& p, int b, int h) {
    if (!kTransforms) {
      softmax_scale_log2 = p.scale_softmax_log2;
      return;
    }
    softmax_scale_log2 = kLog2e;
    softcap = kSoftcap ? p.softcap : 0.f;
    pre_scale = softcap > 0.f ? p.scale_softmax / softcap : p.scale_softmax;
    if (kAlibi && p.alibi_slopes != nullptr) slope = p.alibi_slopes[b * p.alibi_batch_stride + h];
  }

  template <typename TensorS, typename TensorC>
  FLASHATTN_DEVICE void apply(TensorS& s, TensorC const& coord, int row0, int col0, int sq, int sk) const {
    if (!kTransforms) return;
    if (kSoftcap && softcap > 0.f) {
      CUTE_UNROLL
      for (int i = 0; i < size(s); ++i) s(i) = softcap * tanh_approx(s(i) * pre_scale);
    } else {
      CUTE_UNROLL
      for (int i = 0; i < size(s); ++i) s(i) *= pre_scale;
    }
    if (kAlibi && slope != 0.f) {
      const int off = sk - sq;
      CUTE_UNROLL
      for (int mi = 0; mi < size<0>(s); ++mi) {
        const int row = row0 + get<0>(coord(mi, 0));
        CUTE_UNROLL
        for (int nj = 0; nj < size<1>(s); ++nj) {
          const int col = col0 + get<1>(coord(0, nj));
          s(mi, nj) -= slope * fabsf(static_cast<float>(row + off - col));
        }
      }
    }
  }
};

using ScorePlain = ScorePolicy<false, false>;
using ScoreGeneral = ScorePolicy<true, true>;

}  // namespace kern
}  // namespace flashattn
