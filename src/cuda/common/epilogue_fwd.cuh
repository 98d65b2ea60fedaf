// Forward epilogue for register-accumulator mainloops (sm75/sm80 MMA): O is normalised by the softmax,
// converted to the input dtype, staged through shared memory (the Q tile's space, swizzled) and written
// with 128-bit coalesced stores; LSE is written by one thread of each MMA quad. Rows past the sequence
// and columns past head_dim are never written, so the caller's output around the problem is untouched.
//
// Traits provides: Element, kBlockM, kHeadDim, kNThreads, TiledMma, SmemLayoutO, GmemTiledCopyO.
#pragma once

#include "core/params.h"
#include "cuda/common/block_info.cuh"
#include "cuda/common/utils.cuh"

namespace flashattn {
namespace kern {

template <typename Traits>
struct EpilogueFwd {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kHeadDim = Traits::kHeadDim;

  // acc_o: the MMA accumulator fragment (already normalised); lse: one value per row of its rowcol view.
  // smem must not be read by any thread any more (the caller synchronises).
  template <typename TensorO, int kNRows>
  FLASHATTN_DEVICE static void store(const FwdParams& p, const BlockInfo& bi, int m_block, TensorO const& acc_o,
                                     const float (&lse)[kNRows], Element* smem, int tidx) {
    const int row0 = m_block * kBlockM;
    store_rows(p, static_cast<Element*>(p.out) + bi.o_offset, RowMap{1, p.o_row_stride, 0},
               p.lse != nullptr ? p.lse + bi.lse_offset : nullptr, RowMap{1, 1, 0}, row0, bi.sq - row0, acc_o, lse,
               smem, tidx);
  }

  // The same with rows placed by RowMaps (PackGQA): tile row r goes to out + o_map(row0 + r) and
  // lse + lse_map(row0 + r); lse may be null.
  template <typename TensorO, int kNRows>
  FLASHATTN_DEVICE static void store_rows(const FwdParams& p, Element* out, RowMap o_map, float* lse_out,
                                          RowMap lse_map, int row0, int rows_left, TensorO const& acc_o,
                                          const float (&lse)[kNRows], Element* smem, int tidx) {
    typename Traits::TiledMma tiled_mma;
    auto thr_mma = tiled_mma.get_thread_slice(tidx);

    // LSE: quad lane 0 (the thread holding column 0 of its rows) writes each row once.
    if (lse_out != nullptr) {
      Tensor coord = rowcol_view(thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{})));
      static_assert(decltype(size<0>(coord))::value == kNRows);
      if (get<1>(coord(0, 0)) == 0) {
        CUTE_UNROLL
        for (int mi = 0; mi < kNRows; ++mi) {
          const int r = get<0>(coord(mi, 0));
          if (r < rows_left) lse_out[lse_map(row0 + r)] = lse[mi];
        }
      }
    }

    // Registers -> shared (swizzled like Q, so the 32-bit fragment stores spread over banks).
    Tensor r_o = convert_fragment<Element>(acc_o);
    Tensor s_o = make_tensor(make_smem_ptr(smem), typename Traits::SmemLayoutO{});
    auto r2s = make_tiled_copy_C(Copy_Atom<DefaultCopy, Element>{}, tiled_mma);
    auto thr_r2s = r2s.get_thread_slice(tidx);
    copy(r2s, thr_r2s.retile_S(r_o), thr_r2s.partition_D(s_o));
    __syncthreads();

    // Shared -> global, 16 bytes per thread per chunk, predicated on row and head_dim.
    typename Traits::GmemTiledCopyO s2g;
    auto thr_s2g = s2g.get_thread_slice(tidx);
    Tensor t_s = thr_s2g.partition_S(s_o);
    Tensor t_r = make_tensor<Element>(shape(t_s));
    copy(s2g, t_s, t_r);
    Tensor t_c = thr_s2g.partition_D(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    CUTE_UNROLL
    for (int m = 0; m < size<1>(t_r); ++m) {
      const int r = get<0>(t_c(0, m, 0));
      if (r < rows_left) {
        Element* dst = out + o_map(row0 + r);
        CUTE_UNROLL
        for (int k = 0; k < size<2>(t_r); ++k) {
          const int c = get<1>(t_c(0, m, k));
          if (c < p.head_dim) copy(s2g, t_r(_, m, k), make_tensor(make_gmem_ptr(dst + c), layout(t_r(_, m, k))));
        }
      }
    }
  }
};

}  // namespace kern
}  // namespace flashattn
