// Mask policies (none / causal / local). Each reports, for a query block, the key blocks it must visit
// and which of them need masking, so the mainloop runs the other blocks with no per-element predicates
// (CUTLASS FMHA's trip-count idea). Masks are bottom-right aligned (docs/semantics.md):
//   row i sees key j iff j < sk, j >= i + sk - sq - window_left (if left >= 0),
//                            j <= i + sk - sq + window_right (if right >= 0).
// kPacked (the inference kernel's PackGQA): tile row r is query token r / pack, and `sq` arguments count
// rows. A compile-time switch: a run-time pack of 1 cost the plain kernels registers.
#pragma once

#include <cmath>

#include "core/params.h"
#include "cuda/common/utils.cuh"

namespace flashattn {
namespace kern {

// Key blocks [n_min, n_max) are visited; blocks in [full_lo, full_hi) need no mask. The key-length
// tail block (sk % kBlockN != 0) always counts as masked, so unmasked blocks also need no bounds checks.
struct BlockRange {
  int n_min, n_max, full_lo, full_hi;
  FLASHATTN_DEVICE bool needs_mask(int n) const { return n >= full_hi || n < full_lo; }
  FLASHATTN_DEVICE int num_masked() const {
    const int lo = max(full_lo, n_min), hi = min(full_hi, n_max);
    return hi > lo ? (n_max - n_min) - (hi - lo) : n_max - n_min;
  }
};

template <bool kCausal_, bool kLocal_, bool kPacked = false>
struct MaskPolicy {
  static constexpr bool kCausal = kCausal_;
  static constexpr bool kLocal = kLocal_;
  static constexpr bool kHasRight = kCausal || kLocal;
  static_assert(!(kCausal && kLocal), "causal is the local mask with window (-1, 0): pick one");

  int window_left = -1;   // -1 = unbounded
  int window_right = -1;  // -1 = unbounded
  int pack = 1;           // tile rows per query token (read only when kPacked)

  FLASHATTN_DEVICE explicit MaskPolicy(const FwdParams& p) {
    if (kCausal) {
      window_left = -1;
      window_right = 0;
    } else if (kLocal) {
      window_left = p.window_left;
      window_right = p.window_right;
    }
  }
  FLASHATTN_DEVICE bool has_left() const { return kLocal && window_left >= 0; }
  FLASHATTN_DEVICE bool has_right() const { return kCausal || (kLocal && window_right >= 0); }

  template <int kBlockM, int kBlockN>
  FLASHATTN_DEVICE BlockRange range(int m_block, int sq, int sk) const {
    const int pk = kPacked ? pack : 1;
    const int off = sk - sq / pk;  // diagonal offset of the bottom-right alignment
    const int m_first = m_block * kBlockM / pk;
    const int m_last = (min(m_block * kBlockM + kBlockM, sq) - 1) / pk;
    BlockRange r;
    r.n_max = ceil_div_int(sk, kBlockN);
    r.n_min = 0;
    r.full_hi = sk / kBlockN;
    r.full_lo = 0;
    if (has_right()) {
      // The last row sees up to column m_last + off + right; the first row bounds the unmasked blocks.
      r.n_max = min(r.n_max, max(0, floor_div(m_last + off + window_right, kBlockN) + 1));
      r.full_hi = min(r.full_hi, floor_div(m_first + off + window_right + 1, kBlockN));
    }
    if (has_left()) {
      r.n_min = max(0, floor_div(m_first + off - window_left, kBlockN));
      r.full_lo = max(0, ceil_div_int(m_last + off - window_left, kBlockN));
    }
    r.n_min = min(r.n_min, r.n_max);
    return r;
  }

  // S in (rows, cols) register view; coord gives each element's (row, col) inside the tile. kLeftOnly:
  // the block lies left of every row's right bound and of sk (a left window's bottom blocks), so only
  // the left bound is tested.
  template <bool kLeftOnly = false, typename TensorS, typename TensorC>
  FLASHATTN_DEVICE void apply(TensorS& s, TensorC const& coord, int row0, int col0, int sq, int sk) const {
    const int pk = kPacked ? pack : 1;
    const int off = sk - sq / pk;
    CUTE_UNROLL
    for (int mi = 0; mi < size<0>(s); ++mi) {
      const int row = (row0 + get<0>(coord(mi, 0))) / pk;
      int col_hi = sk;  // exclusive
      int col_lo = 0;   // inclusive
      if (has_right()) col_hi = min(sk, row + off + window_right + 1);
      if (has_left()) col_lo = row + off - window_left;
      CUTE_UNROLL
      for (int nj = 0; nj < size<1>(s); ++nj) {
        const int col = col0 + get<1>(coord(0, nj));
        if ((!kLeftOnly && col >= col_hi) || col < col_lo) s(mi, nj) = -INFINITY;
      }
    }
  }
};

using MaskNone = MaskPolicy<false, false>;
using MaskCausal = MaskPolicy<true, false>;
using MaskLocal = MaskPolicy<false, true>;
using MaskLocalPacked = MaskPolicy<false, true, true>;  // fwd_infer: local and causal, PackGQA-aware

}  // namespace kern
}  // namespace flashattn
