// Score policies: the hooks between S = Q K^T and the softmax (FlashInfer's variant idea).
//   plain:   scores stay raw; the softmax multiplies by scale * log2(e) (one FFMA per element).
//   softcap: s = softcap * tanh(scale * q.k / softcap)          (docs/semantics.md order:
//   alibi:   s -= slope(b, h) * |i + sk - sq - j|                 softcap, then ALiBi, then the mask)
// A policy leaves scores in units of its own choosing and says how to reach base 2 in
// softmax_scale_log2, which the softmax folds into its one FFMA: the general policy keeps tanh(...)
// (units of softcap) or the raw q.k (units of 1 / scale), so no element pays a multiply for the scale,
// and divides the ALiBi slope by the unit once per CTA. Sinks are not a score hook: they join the
// normaliser in OnlineSoftmax::finalize, in natural-log units.
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
  float tanh_scale = 0.f;    // raw q.k -> argument of tanh (scale / softcap); 0: no softcap
  float slope_units = 0.f;   // ALiBi slope in the policy's units (slope / softcap or slope / scale)

  FLASHATTN_DEVICE ScorePolicy(const FwdParams& p, int b, int h) {
    const bool softcap = kSoftcap && p.softcap > 0.f;
    const float unit = softcap ? p.softcap : p.scale_softmax;  // natural-log units per policy unit
    softmax_scale_log2 = softcap ? unit * kLog2e : p.scale_softmax_log2;
    if (softcap) tanh_scale = p.scale_softmax / p.softcap;
    if (kAlibi && p.alibi_slopes != nullptr) slope_units = p.alibi_slopes[b * p.alibi_batch_stride + h] / unit;
  }

  // Scores of the tile at (row0, col0) to the policy's units. With softcap, 1 - tanh^2 (the backward's
  // chain rule) goes to dtanh when kKeepDtanh.
  template <bool kKeepDtanh = false, typename TensorS, typename TensorC, typename TensorD>
  FLASHATTN_DEVICE void apply(TensorS& s, TensorC const& coord, int row0, int col0, int sq, int sk,
                              TensorD& dtanh) const {
    if (!kTransforms) return;
    if (kSoftcap && tanh_scale != 0.f) {
      CUTE_UNROLL
      for (int i = 0; i < size(s); ++i) {
        const float th = tanh_approx(s(i) * tanh_scale);
        s(i) = th;
        if constexpr (kKeepDtanh) dtanh(i) = 1.f - th * th;
      }
    }
    if (kAlibi && slope_units != 0.f) {
      // |i + sk - sq - j| as (row distance to this thread's first column) - (column step): the steps are
      // compile-time per register, so each element costs one FADD and one FFMA, and each row one I2F.
      const int col_t = get<1>(coord(0, 0));
      CUTE_UNROLL
      for (int mi = 0; mi < size<0>(s); ++mi) {
        const float dist = static_cast<float>(row0 + get<0>(coord(mi, 0)) + sk - sq - col0 - col_t);
        CUTE_UNROLL
        for (int nj = 0; nj < size<1>(s); ++nj) {
          const float step = static_cast<float>(get<1>(coord(0, nj)) - col_t);
          s(mi, nj) = fmaf(-slope_units, fabsf(dist - step), s(mi, nj));
        }
      }
    }
  }
  template <typename TensorS, typename TensorC>
  FLASHATTN_DEVICE void apply(TensorS& s, TensorC const& coord, int row0, int col0, int sq, int sk) const {
    apply<false>(s, coord, row0, col0, sq, sk, s);
  }
};

using ScorePlain = ScorePolicy<false, false>;
using ScoreSoftcap = ScorePolicy<true, false>;
using ScoreAlibi = ScorePolicy<false, true>;
using ScoreGeneral = ScorePolicy<true, true>;

}  // namespace kern
}  // namespace flashattn
