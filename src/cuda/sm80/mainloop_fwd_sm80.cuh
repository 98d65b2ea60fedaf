// sm80 forward mainloop: Q resident in shared memory, K and V streamed with cp.async, S = Q K^T and
// O += P V on mma.sync m16n8k16 with ldmatrix operand loads (transposed for V).
//
// Pipeline (one K and one V buffer, the two loads staggered by half an iteration):
//   wait K(n) ; issue V(n) ; S = Q K(n)^T ; score + mask ; wait V(n) ; issue K(n-1) ; softmax ; O += P V(n)
// so the V load overlaps the QK^T MMAs and the next K load overlaps the softmax and the PV MMAs. Key
// blocks run from last to first: the ragged tail block (and the causal diagonal) comes first and is the
// only one loaded with row predicates; interior blocks run with no predicates at all.
#pragma once

#include "core/params.h"
#include "cuda/common/block_info.cuh"
#include "cuda/common/mask.cuh"
#include "cuda/common/paged_kv.cuh"
#include "cuda/common/softmax.cuh"
#include "cuda/common/utils.cuh"

namespace flashattn {
namespace kern {

// acc += A B with both operands in shared memory; the ldmatrix of k-slice k+1 is issued before the MMAs
// of slice k so its latency hides behind them.
template <typename TiledMma, typename TA, typename TB, typename TC, typename SA, typename SB, typename CopyA,
          typename CopyB, typename ThrA, typename ThrB>
FLASHATTN_DEVICE void gemm_ss(TC& acc, TA& r_a, TB& r_b, SA const& s_a, SB const& s_b, TiledMma const& mma,
                              CopyA const& copy_a, CopyB const& copy_b, ThrA const& thr_a, ThrB const& thr_b) {
  Tensor r_a_view = thr_a.retile_D(r_a);
  Tensor r_b_view = thr_b.retile_D(r_b);
  copy(copy_a, s_a(_, _, 0), r_a_view(_, _, 0));
  copy(copy_b, s_b(_, _, 0), r_b_view(_, _, 0));
  CUTE_UNROLL
  for (int k = 0; k < size<2>(r_a); ++k) {
    if (k + 1 < size<2>(r_a)) {
      copy(copy_a, s_a(_, _, k + 1), r_a_view(_, _, k + 1));
      copy(copy_b, s_b(_, _, k + 1), r_b_view(_, _, k + 1));
    }
    gemm(mma, r_a(_, _, k), r_b(_, _, k), acc);
  }
}

// acc += A B with A already in registers (P) and B in shared memory (V).
template <typename TiledMma, typename TA, typename TB, typename TC, typename SB, typename CopyB, typename ThrB>
FLASHATTN_DEVICE void gemm_rs(TC& acc, TA const& r_a, TB& r_b, SB const& s_b, TiledMma const& mma,
                              CopyB const& copy_b, ThrB const& thr_b) {
  Tensor r_b_view = thr_b.retile_D(r_b);
  copy(copy_b, s_b(_, _, 0), r_b_view(_, _, 0));
  CUTE_UNROLL
  for (int k = 0; k < size<2>(r_a); ++k) {
    if (k + 1 < size<2>(r_a)) copy(copy_b, s_b(_, _, k + 1), r_b_view(_, _, k + 1));
    gemm(mma, r_a(_, _, k), r_b(_, _, k), acc);
  }
}

// Kv: K/V addressing (paged_kv.cuh). KvDense is the plain forward's code exactly; KvPaged swaps only the
// three K/V tile loads for per-row page lookups, with each block's table entries read ahead of its loads.
template <typename Traits, typename Kv = KvDense>
struct MainloopFwdSm80 {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;
  using Softmax = OnlineSoftmax<Traits::kRowsPerThread>;

  // Runs key blocks [range.n_min, range.n_max) of query block m_block into acc_o / softmax.
  // smem: Q tile, then K tile, then V tile (Traits::kSmemBytes). kLoadQ false: the caller has issued the
  // Q tile's cp.async already (the inference kernel's PackGQA rows); bi.sq counts the tile's rows.
  template <bool kLoadQ = true, typename Mask, typename Score, typename TensorO>
  FLASHATTN_DEVICE static void run(const FwdParams& p, const BlockInfo& bi, int m_block, const BlockRange& range,
                                   const Mask& mask, const Score& score, Softmax& softmax, TensorO& acc_o,
                                   Element* smem, int tidx, Kv kv = Kv{}) {
    Tensor s_q = make_tensor(make_smem_ptr(smem), typename Traits::SmemLayoutQ{});
    Tensor s_k = make_tensor(make_smem_ptr(smem + Traits::kSmemElemsQ), typename Traits::SmemLayoutKV{});
    Tensor s_v =
        make_tensor(make_smem_ptr(smem + Traits::kSmemElemsQ + Traits::kSmemElemsKV), typename Traits::SmemLayoutKV{});
    Tensor s_vt = make_tensor(s_v.data(), typename Traits::SmemLayoutVt{});

    // Global views with int64 row strides; tiles past the sequence are never read (predicates).
    Tensor m_q = make_tensor(make_gmem_ptr(static_cast<const Element*>(p.q) + bi.q_offset),
                             make_shape(bi.sq, p.head_dim), make_stride(p.q_row_stride, _1{}));
    Tensor m_k = make_tensor(make_gmem_ptr(static_cast<const Element*>(p.k) + bi.k_offset),
                             make_shape(bi.sk, p.head_dim), make_stride(p.k_row_stride, _1{}));
    Tensor m_v = make_tensor(make_gmem_ptr(static_cast<const Element*>(p.v) + bi.v_offset),
                             make_shape(bi.sk, p.head_dim), make_stride(p.v_row_stride, _1{}));
    Tensor g_q = local_tile(m_q, Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));
    Tensor g_k = local_tile(m_k, Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));  // (N, D, blocks)
    Tensor g_v = local_tile(m_v, Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));

    typename Traits::GmemTiledCopyQKV g2s;
    auto thr_g2s = g2s.get_thread_slice(tidx);
    Tensor t_qg = thr_g2s.partition_S(g_q);
    Tensor t_qs = thr_g2s.partition_D(s_q);
    Tensor t_kg = thr_g2s.partition_S(g_k);
    Tensor t_ks = thr_g2s.partition_D(s_k);
    Tensor t_vg = thr_g2s.partition_S(g_v);
    Tensor t_vs = thr_g2s.partition_D(s_v);
    Tensor t_qc = thr_g2s.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    Tensor t_kvc = thr_g2s.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
    // Column chunks past head_dim (kernel head dim > problem head dim) are zero-filled: they add 0 to
    // Q K^T and produce output columns that are never stored. Q, K and V share the column split.
    Tensor pred_col = column_predicate(t_qc, p.head_dim);

    const int row0 = m_block * kBlockM;
    if constexpr (kLoadQ) copy_tile_g2s<true>(t_qg, t_qs, t_qc, pred_col, bi.sq - row0);
    if (range.n_max > range.n_min) {
      const int n = range.n_max - 1;
      if constexpr (Kv::kPaged) {
        kv.template prefetch<kBlockN>(n, t_kvc);
        kv.template load<false, true, kBlockN>(n, t_ks, t_kvc, pred_col, bi.sk - n * kBlockN);
      } else {
        copy_tile_g2s<true>(t_kg(_, _, _, n), t_ks, t_kvc, pred_col, bi.sk - n * kBlockN);
      }
    }
    cute::cp_async_fence();
    if (range.n_max <= range.n_min) return;

    typename Traits::TiledMma tiled_mma;
    auto thr_mma = tiled_mma.get_thread_slice(tidx);
    Tensor r_q = thr_mma.partition_fragment_A(s_q);
    Tensor r_k = thr_mma.partition_fragment_B(s_k);
    Tensor r_vt = thr_mma.partition_fragment_B(s_vt);
    auto s2r_q = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, tiled_mma);
    auto thr_s2r_q = s2r_q.get_thread_slice(tidx);
    Tensor t_sq = thr_s2r_q.partition_S(s_q);
    auto s2r_k = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, tiled_mma);
    auto thr_s2r_k = s2r_k.get_thread_slice(tidx);
    Tensor t_sk = thr_s2r_k.partition_S(s_k);
    auto s2r_v = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, tiled_mma);
    auto thr_s2r_v = s2r_v.get_thread_slice(tidx);
    Tensor t_svt = thr_s2r_v.partition_S(s_vt);
    // (row, col) of every score element this thread holds, for the mask and ALiBi.
    Tensor coord_s = rowcol_view(thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
    Tensor o_rc = rowcol_view(acc_o);

    // One body, instantiated masked and unmasked. The unmasked copy carries no predicates at all: a
    // uniform branch around the mask would be if-converted by the compiler into ~100 predicated
    // instructions executed by every block, so masked and unmasked blocks run in separate loops instead.
    // The softmax needs no first-block case: row_max starts at -inf, so the first rescale multiplies the
    // zero accumulators by 0.
    // kind: 0 unmasked, 1 masked, 2 masked on the left side only (a left window's bottom blocks).
    auto step = [&](int n, auto kind_c) __attribute__((always_inline)) {
      constexpr int kKind = decltype(kind_c)::value;
      constexpr bool kMasked = kKind != 0;
      // Per-thread shared/global addresses are rebuilt from an opaque copy of tidx every block: they are
      // loop-invariant, and hoisted they would pin ~40 registers (one per swizzled ldmatrix address),
      // which spilled the softmax state and added ~150 register moves per block at d128.
      int t = tidx;
      asm volatile("" : "+r"(t));
      auto thr_s2r_q = s2r_q.get_thread_slice(t);
      Tensor t_sq = thr_s2r_q.partition_S(s_q);
      auto thr_s2r_k = s2r_k.get_thread_slice(t);
      Tensor t_sk = thr_s2r_k.partition_S(s_k);
      auto thr_s2r_v = s2r_v.get_thread_slice(t);
      Tensor t_svt = thr_s2r_v.partition_S(s_vt);
      auto thr_g2s_i = g2s.get_thread_slice(t);
      Tensor t_kg = thr_g2s_i.partition_S(g_k);
      Tensor t_ks = thr_g2s_i.partition_D(s_k);
      Tensor t_vg = thr_g2s_i.partition_S(g_v);
      Tensor t_vs = thr_g2s_i.partition_D(s_v);
      Tensor t_kvc = thr_g2s_i.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
      Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
      clear(acc_s);
      cute::cp_async_wait<0>();
      __syncthreads();  // K(n) visible; every warp is done with V(n+1)
      // Only a masked block can be the key tail: unmasked blocks load V with no row predicates.
      if constexpr (Kv::kPaged) {
        kv.template load<true, kMasked, kBlockN>(n, t_vs, t_kvc, pred_col, bi.sk - n * kBlockN);
        if (n > range.n_min) kv.template prefetch<kBlockN>(n - 1, t_kvc);
      } else {
        copy_tile_g2s<kMasked>(t_vg(_, _, _, n), t_vs, t_kvc, pred_col, bi.sk - n * kBlockN);
      }
      cute::cp_async_fence();

      gemm_ss(acc_s, r_q, r_k, t_sq, t_sk, tiled_mma, s2r_q, s2r_k, thr_s2r_q, thr_s2r_k);
      Tensor s = rowcol_view(acc_s);
      score.apply(s, coord_s, row0, n * kBlockN, bi.sq, bi.sk);
      if constexpr (kMasked) mask.template apply<kKind == 2>(s, coord_s, row0, n * kBlockN, bi.sq, bi.sk);

      cute::cp_async_wait<0>();
      __syncthreads();  // V(n) visible; every warp is done with K(n)
      if (n > range.n_min) {
        if constexpr (Kv::kPaged) {
          kv.template load<false, false, kBlockN>(n - 1, t_ks, t_kvc, pred_col, 0);
        } else {
          copy_tile_g2s<false>(t_kg(_, _, _, n - 1), t_ks, t_kvc, pred_col, 0);
        }
      }
      cute::cp_async_fence();

      softmax.update(s, o_rc, score.softmax_scale_log2);
      Tensor r_p = convert_fragment<Element>(acc_s);
      Tensor r_p_a = make_tensor(r_p.data(), acc_layout_as_a_operand(r_p.layout()));
      gemm_rs(acc_o, r_p_a, r_vt, t_svt, tiled_mma, s2r_v, thr_s2r_v);
    };

    // Blocks run from the last to the first: masked ones at the top (the key tail, the diagonal; the
    // first block visited always counts as masked), then the unmasked middle, then, for a left window,
    // masked ones at the bottom.
    int n = range.n_max - 1;
    for (; n >= range.n_min && (n >= range.full_hi || n == range.n_max - 1); --n) step(n, cute::Int<1>{});
    for (; n >= range.n_min && n >= range.full_lo; --n) step(n, cute::Int<0>{});
    if constexpr (Mask::kLocal) {
      for (; n >= range.n_min; --n) step(n, cute::Int<2>{});
    }
  }
};

}  // namespace kern
}  // namespace flashattn
