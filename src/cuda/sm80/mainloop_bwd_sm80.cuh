// sm80 backward mainloop: one key block (K, V resident in shared memory, dK/dV accumulating in
// registers) against the query blocks of one head that can see it. Per query block:
//   S = Q K^T -> score policy (+ tanh' kept for softcap) -> mask -> P = exp2(S * scale_log2 - LSE * log2e)
//   dP = dO V^T ;  dS = P * (dP - D) [* (1 - tanh^2)]          (D = rowsum(dO * O) from the preprocess)
//   P, dS -> shared ;  dV += P^T dO ;  dK += dS^T Q ;  dQ = dS K -> fp32 atomics into dq_accum
// All five products are mma.sync m16n8k16 with ldmatrix operand loads (transposed for the ^T operands and
// for K in dS K). The softmax scale is left out of dS: dK is scaled once in the epilogue, dQ in the
// convert kernel.
//
// Pipeline: with two Q/dO stages, the loads of block m+1 are issued right after block m's wait and
// overlap all five products; with one stage (the widest heads, to fit 163 KB) they are issued after
// dK += dS^T Q, the last reader of Q and dO, and overlap dQ = dS K and its atomics.
#pragma once

#include "core/params.h"
#include "cuda/common/block_info.cuh"
#include "cuda/common/mask.cuh"
#include "cuda/common/score.cuh"
#include "cuda/common/utils.cuh"
#include "cuda/sm80/mainloop_fwd_sm80.cuh"

namespace flashattn {
namespace kern {

// Dropout hook (docs/dropout.md; GPU dropout is a later issue and the host rejects dropout_p > 0). A
// dropout policy would scale the recomputed P by keep(b, h, i, j) / (1 - p) for dV += (P o D)^T dO and
// multiply dP by the same mask before dS = P * (dP - D); this one keeps every element.
struct DropoutNoneBwd {
  static constexpr bool kEnabled = false;
};

// Query rows [m_min, m_max) blocks of kBlockM that see key block n_block, and whether block m needs the
// per-element mask (key tail, or crossing a window edge). The inverse of MaskPolicy::range.
template <int kBlockM, int kBlockN, typename Mask>
struct KeyBlockRows {
  int m_min, m_max;
  int n_first, n_last;  // first / last key of the block (last clamped to the sequence)
  bool key_tail;
  FLASHATTN_DEVICE KeyBlockRows(const Mask& mask, int n_block, int sq, int sk) {
    const int off = sk - sq;
    n_first = n_block * kBlockN;
    n_last = min(n_first + kBlockN, sk) - 1;
    key_tail = n_first + kBlockN > sk;
    m_min = 0;
    m_max = ceil_div_int(sq, kBlockM);
    // Row i sees key j iff j <= i + off + right and j >= i + off - left.
    if (mask.has_right()) m_min = max(0, floor_div(n_first - off - mask.window_right, kBlockM));
    if (mask.has_left()) m_max = min(m_max, floor_div(n_last - off + mask.window_left, kBlockM) + 1);
    m_min = min(m_min, m_max);
  }
  template <typename MaskT>
  FLASHATTN_DEVICE bool needs_mask(const MaskT& mask, int m_block, int sq, int sk) const {
    const int off = sk - sq;
    const int m_first = m_block * kBlockM, m_lastrow = m_first + kBlockM - 1;
    bool masked = key_tail;
    if (mask.has_right()) masked |= n_first + kBlockN - 1 > m_first + off + mask.window_right;
    if (mask.has_left()) masked |= n_first < m_lastrow + off - mask.window_left;
    return masked;
  }
};

// dQ of one block added into its fp32 accumulator block in fragment order: element i of thread t goes to
// block[i * kThreads + t], so the 32 lanes of a warp reduce into 128 contiguous bytes (one L2 request of
// four full sectors; in (row, col) order a warp touched eight half-used sectors, and on H200 at d128 the
// warps stalled on a full load/store queue). The convert kernel maps the order back. Rows past the
// sequence add zeros (their P and dS are 0) into the sequence's own padding block (bwd_dq_pad_rows_sm80).
// One thread per element and a fixed thread -> element map: in deterministic mode (one CTA per slice)
// the additions to an address come from one thread in program order.
template <int kThreads, typename Acc>
FLASHATTN_DEVICE void add_dq(Acc const& acc, float* block, int tidx) {
  float* mine = block + tidx;
  CUTE_UNROLL
  for (int i = 0; i < size(acc); ++i) atomicAdd(mine + i * kThreads, acc(i));
}

template <typename Traits>
struct MainloopBwdSm80 {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;
  static constexpr int kQStages = Traits::kQStages;

  // Issues the cp.async loads of the Q and dO tiles of query block m_block, and of its rows' LSE and D,
  // into `stage`.
  FLASHATTN_DEVICE static void load_q_do(const BwdParams& p, const BlockInfo& bi, int64_t do_offset,
                                         const float* dpsum, int m_block, int stage, Element* smem, int tidx) {
    Tensor s_q = make_tensor(make_smem_ptr(smem + Traits::kOffQ + stage * Traits::kSmemElemsQ),
                             typename Traits::SmemLayoutQ{});
    Tensor s_do = make_tensor(make_smem_ptr(smem + Traits::kOffDo + stage * Traits::kSmemElemsQ),
                              typename Traits::SmemLayoutQ{});
    Tensor m_q = make_tensor(make_gmem_ptr(static_cast<const Element*>(p.q) + bi.q_offset),
                             make_shape(bi.sq, p.head_dim), make_stride(p.q_row_stride, _1{}));
    Tensor m_do = make_tensor(make_gmem_ptr(static_cast<const Element*>(p.dout) + do_offset),
                              make_shape(bi.sq, p.head_dim), make_stride(p.do_row_stride, _1{}));
    Tensor g_q = local_tile(m_q, Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));
    Tensor g_do = local_tile(m_do, Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));
    typename Traits::GmemTiledCopy g2s;
    auto thr = g2s.get_thread_slice(tidx);
    Tensor t_c = thr.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    Tensor pred_col = column_predicate(t_c, p.head_dim);
    const int rows_left = bi.sq - m_block * kBlockM;
    copy_tile_g2s<true>(thr.partition_S(g_q), thr.partition_D(s_q), t_c, pred_col, rows_left);
    copy_tile_g2s<true>(thr.partition_S(g_do), thr.partition_D(s_do), t_c, pred_col, rows_left);
    if (tidx < Traits::kSmemFloatsStats) {  // threads [0, kBlockM): LSE; [kBlockM, 2 kBlockM): D
      const int r = tidx % kBlockM;
      const int64_t row = static_cast<int64_t>(m_block) * kBlockM + r;
      float* dst = stats_smem(smem, stage) + (tidx - r) + Traits::stats_slot(r);
      // With vectors, rows past the sequence get LSE = +inf (P = 0) and D = 0 here (visible, like the
      // copies, after the step's wait and barrier) and the step reads them without a range test; the
      // scalar reads test the range and these rows are zero-filled.
      if (!Traits::kStatsVectors || r < rows_left) {
        cp_async_4_zfill(tidx < kBlockM ? p.lse + bi.lse_offset + row : dpsum + row, dst, r < rows_left);
      } else {
        *dst = tidx < kBlockM ? INFINITY : 0.f;
      }
    }
  }

  // The fp32 [LSE x kBlockM, D x kBlockM] of `stage`, rows in Traits::stats_slot order.
  FLASHATTN_DEVICE static float* stats_smem(Element* smem, int stage) {
    return reinterpret_cast<float*>(smem + Traits::kOffStats) + stage * Traits::kSmemFloatsStats;
  }

  // Runs every query block of head `head` that sees key block n_block. acc_dk / acc_dv: TiledMmaDkv
  // fragments of (kBlockN, kHeadDim); dq_accum: this head's fp32 accumulator blocks of the sequence
  // (block m at m * kBlockM * kHeadDim); dpsum: D of the sequence's rows (row 0 = its first query).
  // K and V must be loading (or loaded) already.
  template <typename Mask, typename Score, typename TensorDK, typename TensorDV>
  FLASHATTN_DEVICE static void run(const BwdParams& p, const BlockInfo& bi, int64_t do_offset, int n_block,
                                   const Mask& mask, const Score& score, float* dq_accum, const float* dpsum,
                                   TensorDK& acc_dk, TensorDV& acc_dv, Element* smem, int tidx) {
    const KeyBlockRows<kBlockM, kBlockN, Mask> rows(mask, n_block, bi.sq, bi.sk);
    // Every warp must be done with the previous head's Q/dO stages before they are refilled.
    __syncthreads();
    if (rows.m_min >= rows.m_max) return;
    load_q_do(p, bi, do_offset, dpsum, rows.m_min, 0, smem, tidx);
    cute::cp_async_fence();

    Tensor s_k = make_tensor(make_smem_ptr(smem + Traits::kOffK), typename Traits::SmemLayoutKV{});
    Tensor s_kt = make_tensor(make_smem_ptr(smem + Traits::kOffK), typename Traits::SmemLayoutKt{});
    Tensor s_v = make_tensor(make_smem_ptr(smem + Traits::kOffV), typename Traits::SmemLayoutKV{});
    Tensor s_p = make_tensor(make_smem_ptr(smem + Traits::kOffP), typename Traits::SmemLayoutPdS{});
    Tensor s_pt = make_tensor(make_smem_ptr(smem + Traits::kOffP), typename Traits::SmemLayoutPdSt{});
    Tensor s_ds = make_tensor(make_smem_ptr(smem + Traits::kOffDs), typename Traits::SmemLayoutPdS{});
    Tensor s_dst = make_tensor(make_smem_ptr(smem + Traits::kOffDs), typename Traits::SmemLayoutPdSt{});

    typename Traits::TiledMmaSdP mma_sdp;
    typename Traits::TiledMmaDkv mma_dkv;
    typename Traits::TiledMmaDq mma_dq;
    const bool softcap_on = Score::kSoftcap && score.tanh_scale != 0.f;

    auto step = [&](int m_block, int stage, auto masked_c) __attribute__((always_inline)) {
      constexpr bool kMasked = decltype(masked_c)::value;
      // Shared/global addresses are rebuilt from an opaque tidx each block (as the forward does): hoisted
      // out of the loop they would pin dozens of registers next to the dK/dV accumulators.
      int t = tidx;
      asm volatile("" : "+r"(t));
      Element* q_ptr = smem + Traits::kOffQ + stage * Traits::kSmemElemsQ;
      Element* do_ptr = smem + Traits::kOffDo + stage * Traits::kSmemElemsQ;
      Tensor s_q = make_tensor(make_smem_ptr(q_ptr), typename Traits::SmemLayoutQ{});
      Tensor s_qt = make_tensor(make_smem_ptr(q_ptr), typename Traits::SmemLayoutQt{});
      Tensor s_do = make_tensor(make_smem_ptr(do_ptr), typename Traits::SmemLayoutQ{});
      Tensor s_dot = make_tensor(make_smem_ptr(do_ptr), typename Traits::SmemLayoutQt{});

      cute::cp_async_wait<0>();
      __syncthreads();  // Q(m), dO(m) (and K, V) visible; every warp is done with the other stage and P, dS
      if constexpr (kQStages == 2) {
        if (m_block + 1 < rows.m_max) load_q_do(p, bi, do_offset, dpsum, m_block + 1, stage ^ 1, smem, t);
        cute::cp_async_fence();
      }

      // ---- S = Q K^T and dP = dO V^T (TiledMmaSdP) ----
      auto thr_sdp = mma_sdp.get_thread_slice(t);
      auto s2r_a = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma_sdp);
      auto thr_s2r_a = s2r_a.get_thread_slice(t);
      auto s2r_b = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, mma_sdp);
      auto thr_s2r_b = s2r_b.get_thread_slice(t);
      Tensor acc_s = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kBlockN>>{});
      Tensor s = rowcol_view(acc_s);
      Tensor coord_s = rowcol_view(thr_sdp.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
      const int row0 = m_block * kBlockM;
      const int col0 = n_block * kBlockN;
      // LSE (times log2 e) and D of this thread's rows, from the stage's shared copy (order:
      // Traits::stats_slot). Rows past the sequence read LSE = +inf (P = 0) and D = 0; rows that see no
      // key have LSE = +inf (no sink) or every score -inf: P = 0, never NaN.
      static_assert(decltype(size<0>(s))::value == Traits::kStatsPerThread);
      float lse2[Traits::kStatsPerThread];
      float dsum[Traits::kStatsPerThread];
      // 64 rows: one vector of each, read just before its use so its registers stay free during the
      // products before it.
      auto row_stats = [&](int offset, float scale, float (&out)[Traits::kStatsPerThread])
          __attribute__((always_inline)) {
        struct alignas(16) Vec { float x[4]; };
        static_assert(!Traits::kStatsVectors || Traits::kStatsPerThread == 4);
        const Vec v = *reinterpret_cast<const Vec*>(stats_smem(smem, stage) + offset +
                                                    4 * Traits::stats_group((t / 32) % 2, (t % 32) / 4));
        CUTE_UNROLL
        for (int mi = 0; mi < 4; ++mi) out[mi] = v.x[mi] * scale;
      };
      // 128 rows: scalar loads, before the S product (see Traits::kStatsVectors).
      if constexpr (!Traits::kStatsVectors) {
        const float* stats = stats_smem(smem, stage);
        CUTE_UNROLL
        for (int mi = 0; mi < size<0>(s); ++mi) {
          const int r = get<0>(coord_s(mi, 0));
          const bool in = row0 + r < bi.sq;
          lse2[mi] = in ? stats[r] * kLog2e : INFINITY;
          dsum[mi] = in ? stats[kBlockM + r] : 0.f;
        }
      }
      clear(acc_s);
      {
        Tensor r_q = thr_sdp.partition_fragment_A(s_q);
        Tensor r_k = thr_sdp.partition_fragment_B(s_k);
        gemm_ss(acc_s, r_q, r_k, thr_s2r_a.partition_S(s_q), thr_s2r_b.partition_S(s_k), mma_sdp, s2r_a, s2r_b,
                thr_s2r_a, thr_s2r_b);
      }
      // Score policy, applied as in the forward; with softcap, tanh'(x) = 1 - tanh^2 is kept for dS.
      Tensor dtanh = make_tensor<float>(make_layout(shape(s)));
      score.template apply<true>(s, coord_s, row0, col0, bi.sq, bi.sk, dtanh);
      if constexpr (kMasked) mask.apply(s, coord_s, row0, col0, bi.sq, bi.sk);

      if constexpr (Traits::kStatsVectors) row_stats(0, kLog2e, lse2);
      CUTE_UNROLL
      for (int mi = 0; mi < size<0>(s); ++mi) {
        CUTE_UNROLL
        for (int nj = 0; nj < size<1>(s); ++nj) s(mi, nj) = exp2f(s(mi, nj) * score.softmax_scale_log2 - lse2[mi]);
      }

      Tensor acc_dp = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kBlockN>>{});
      clear(acc_dp);
      {
        Tensor r_do = thr_sdp.partition_fragment_A(s_do);
        Tensor r_v = thr_sdp.partition_fragment_B(s_v);
        gemm_ss(acc_dp, r_do, r_v, thr_s2r_a.partition_S(s_do), thr_s2r_b.partition_S(s_v), mma_sdp, s2r_a, s2r_b,
                thr_s2r_a, thr_s2r_b);
      }
      Tensor dp = rowcol_view(acc_dp);
      if constexpr (Traits::kStatsVectors) row_stats(kBlockM, 1.f, dsum);
      // dS = P * (dP - D), chain rule through softcap's tanh; computed in place over dP.
      CUTE_UNROLL
      for (int mi = 0; mi < size<0>(dp); ++mi) {
        CUTE_UNROLL
        for (int nj = 0; nj < size<1>(dp); ++nj) {
          float ds = s(mi, nj) * (dp(mi, nj) - dsum[mi]);
          if constexpr (Score::kSoftcap) {
            if (softcap_on) ds *= dtanh(mi, nj);
          }
          dp(mi, nj) = ds;
        }
      }

      // P and dS -> shared (the ^T products need them in the other operand layout).
      {
        auto r2s = make_tiled_copy_C(typename Traits::SmemCopyAtomStore{}, mma_sdp);
        auto thr_r2s = r2s.get_thread_slice(t);
        Tensor r_p = convert_fragment<Element>(acc_s);
        copy(r2s, thr_r2s.retile_S(r_p), thr_r2s.partition_D(s_p));
        Tensor r_ds = convert_fragment<Element>(acc_dp);
        copy(r2s, thr_r2s.retile_S(r_ds), thr_r2s.partition_D(s_ds));
      }
      __syncthreads();  // P, dS visible

      // ---- dQ = dS K (TiledMmaDq), added into the fp32 accumulator ----
      auto dq_product = [&]() __attribute__((always_inline)) {
        auto thr_dq = mma_dq.get_thread_slice(t);
        auto s2r_a_dq = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma_dq);
        auto thr_s2r_a_dq = s2r_a_dq.get_thread_slice(t);
        auto s2r_b_dq = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma_dq);
        auto thr_s2r_b_dq = s2r_b_dq.get_thread_slice(t);
        Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kHeadDim>>{});
        clear(acc_dq);
        Tensor r_ds = thr_dq.partition_fragment_A(s_ds);
        Tensor r_kt = thr_dq.partition_fragment_B(s_kt);
        gemm_ss(acc_dq, r_ds, r_kt, thr_s2r_a_dq.partition_S(s_ds), thr_s2r_b_dq.partition_S(s_kt), mma_dq, s2r_a_dq,
                s2r_b_dq, thr_s2r_a_dq, thr_s2r_b_dq);
        add_dq<Traits::kNThreads>(acc_dq, dq_accum + static_cast<int64_t>(row0) * kHeadDim, t);
      };
      // ---- dV += P^T dO, dK += dS^T Q (TiledMmaDkv, both operands transposed) ----
      auto dkv_products = [&]() __attribute__((always_inline)) {
        auto thr_dkv = mma_dkv.get_thread_slice(t);
        auto s2r_at = make_tiled_copy_A(typename Traits::SmemCopyAtomTransposed{}, mma_dkv);
        auto thr_s2r_at = s2r_at.get_thread_slice(t);
        auto s2r_bt = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma_dkv);
        auto thr_s2r_bt = s2r_bt.get_thread_slice(t);
        {
          Tensor r_pt = thr_dkv.partition_fragment_A(s_pt);
          Tensor r_dot = thr_dkv.partition_fragment_B(s_dot);
          gemm_ss(acc_dv, r_pt, r_dot, thr_s2r_at.partition_S(s_pt), thr_s2r_bt.partition_S(s_dot), mma_dkv, s2r_at,
                  s2r_bt, thr_s2r_at, thr_s2r_bt);
        }
        {
          Tensor r_dst = thr_dkv.partition_fragment_A(s_dst);
          Tensor r_qt = thr_dkv.partition_fragment_B(s_qt);
          gemm_ss(acc_dk, r_dst, r_qt, thr_s2r_at.partition_S(s_dst), thr_s2r_bt.partition_S(s_qt), mma_dkv, s2r_at,
                  s2r_bt, thr_s2r_at, thr_s2r_bt);
        }
      };
      if constexpr (kQStages == 2) {
        // dQ first: its fp32 reductions drain while dV and dK run on the tensor pipe. Issued last, they
        // filled the load/store queue just as the step's register spills were stored, and warps stalled on
        // it (ncu, H100, d64: lg_throttle 0.28-0.36 stalls per issue; FA2's kernel 0.004).
        dq_product();
        dkv_products();
      } else {
        // One stage: dK is the last reader of Q and dO, so the next block's loads go out right after it
        // and overlap dQ and its reductions.
        dkv_products();
        __syncthreads();
        if (m_block + 1 < rows.m_max) load_q_do(p, bi, do_offset, dpsum, m_block + 1, 0, smem, t);
        cute::cp_async_fence();
        dq_product();
      }
    };

    int stage = 0;
    for (int m = rows.m_min; m < rows.m_max; ++m) {
      if (rows.needs_mask(mask, m, bi.sq, bi.sk)) {
        step(m, stage, cute::true_type{});
      } else {
        step(m, stage, cute::false_type{});
      }
      if constexpr (kQStages == 2) stage ^= 1;
    }
  }
};

}  // namespace kern
}  // namespace flashattn
