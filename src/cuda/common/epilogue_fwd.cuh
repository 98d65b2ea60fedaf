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
    const int rows_left = bi.sq - row0;
    if (p.lse != nullptr) {
      float* lse_ptr = p.lse + bi.lse_offset + row0;
      store_lse(lse, rows_left, tidx, [&](int r) { return lse_ptr + r; });
    }
    Tensor t_r = stage_o(acc_o, smem, tidx);

    // 16 bytes per thread per chunk, predicated on row and head_dim.
    Tensor m_o = make_tensor(make_gmem_ptr(static_cast<Element*>(p.out) + bi.o_offset),
                             make_shape(bi.sq, p.head_dim), make_stride(p.o_row_stride, _1{}));
    Tensor g_o = local_tile(m_o, Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));
    typename Traits::GmemTiledCopyO s2g;
    auto thr_s2g = s2g.get_thread_slice(tidx);
    Tensor t_g = thr_s2g.partition_D(g_o);
    Tensor t_c = thr_s2g.partition_D(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    CUTE_UNROLL
    for (int m = 0; m < size<1>(t_g); ++m) {
      if (get<0>(t_c(0, m, 0)) < rows_left) {
        CUTE_UNROLL
        for (int k = 0; k < size<2>(t_g); ++k) {
          if (get<1>(t_c(0, m, k)) < p.head_dim) copy(s2g, t_r(_, m, k), t_g(_, m, k));
        }
      }
    }
  }

  // The same with rows placed by RowMaps (the inference kernel's PackGQA): tile row r goes to
  // out + o_map(row0 + r) and lse + lse_map(row0 + r); lse may be null. (The plain forward keeps its
  // tiled store above: the row-pointer form changed its register allocation and spills.)
  template <typename TensorO, int kNRows>
  FLASHATTN_DEVICE static void store_rows(const FwdParams& p, Element* out, RowMap o_map, float* lse_out,
                                          RowMap lse_map, int row0, int rows_left, TensorO const& acc_o,
                                          const float (&lse)[kNRows], Element* smem, int tidx) {
    if (lse_out != nullptr) store_lse(lse, rows_left, tidx, [&](int r) { return lse_out + lse_map(row0 + r); });
    Tensor t_r = stage_o(acc_o, smem, tidx);
    typename Traits::GmemTiledCopyO s2g;
    Tensor t_c = s2g.get_thread_slice(tidx).partition_D(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
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

 private:
  // LSE: quad lane 0 (the thread holding column 0 of its rows) writes each row once; row_ptr(r) is the
  // float of tile row r.
  template <int kNRows, typename RowPtr>
  FLASHATTN_DEVICE static void store_lse(const float (&lse)[kNRows], int rows_left, int tidx, RowPtr const& row_ptr) {
    typename Traits::TiledMma tiled_mma;
    auto thr_mma = tiled_mma.get_thread_slice(tidx);
    Tensor coord = rowcol_view(thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{})));
    static_assert(decltype(size<0>(coord))::value == kNRows);
    if (get<1>(coord(0, 0)) == 0) {
      CUTE_UNROLL
      for (int mi = 0; mi < kNRows; ++mi) {
        const int r = get<0>(coord(mi, 0));
        if (r < rows_left) *row_ptr(r) = lse[mi];
      }
    }
  }

  // Registers -> shared (swizzled like Q, so the 32-bit fragment stores spread over banks) -> registers
  // in the layout of the 16-byte global stores.
  template <typename TensorO>
  FLASHATTN_DEVICE static auto stage_o(TensorO const& acc_o, Element* smem, int tidx) {
    typename Traits::TiledMma tiled_mma;
    Tensor r_o = convert_fragment<Element>(acc_o);
    Tensor s_o = make_tensor(make_smem_ptr(smem), typename Traits::SmemLayoutO{});
    auto r2s = make_tiled_copy_C(Copy_Atom<DefaultCopy, Element>{}, tiled_mma);
    auto thr_r2s = r2s.get_thread_slice(tidx);
    copy(r2s, thr_r2s.retile_S(r_o), thr_r2s.partition_D(s_o));
    tile_barrier<Traits::kNThreads>();
    typename Traits::GmemTiledCopyO s2g;
    Tensor t_s = s2g.get_thread_slice(tidx).partition_S(s_o);
    Tensor t_r = make_tensor<Element>(shape(t_s));
    copy(s2g, t_s, t_r);
    return t_r;
  }
};

}  // namespace kern
}  // namespace flashattn
