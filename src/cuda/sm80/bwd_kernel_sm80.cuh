// The sm80-path backward kernel: one CTA per (key block, batch, kv head). K and V of the key block stay
// in shared memory and dK/dV in registers while the CTA walks every query head of its GQA group and,
// per head, every query block that sees the key block (MainloopBwdSm80). dK/dV are written once, with no
// atomics and no workspace: the group reduction happens in registers, in a fixed order.
//
// Deterministic mode: the grid has `slices` CTAs per (batch, kv head); CTA s walks key blocks
// s, s + slices, ... in order and adds dQ into its own dq_accum slice, so every dQ address is updated by
// one thread of one CTA in program order. The convert kernel sums the slices in order.
#pragma once

#include "core/params.h"
#include "cuda/common/block_info.cuh"
#include "cuda/common/mask.cuh"
#include "cuda/common/score.cuh"
#include "cuda/common/tile_bwd_sm80.h"
#include "cuda/common/utils.cuh"
#include "cuda/sm80/kernel_traits_bwd_sm80.cuh"
#include "cuda/sm80/mainloop_bwd_sm80.cuh"

namespace flashattn {
namespace kern {

// Device-side view of the carved workspace (filled by the launcher).
struct BwdWorkspacePtrs {
  float* dq_accum;      // (slices, nheads, dq_rows, kHeadDim), blocks in fragment order (add_dq)
  int64_t dq_rows;      // bwd_dq_rows_sm80: total_q + dq_pad_rows per sequence
  int dq_pad_rows;      // bwd_dq_pad_rows_sm80: kBlockM or 0
  float* dpsum;         // (nheads, total_q)
  int slices;           // dQ accumulator slices (1 unless deterministic)
  int grid_n;           // CTAs per (batch, kv head): key blocks, or slices when deterministic
  int num_n_blocks;
};

template <typename Traits, typename Mask, typename Score>
struct BwdKernelSm80 {
  using Element = typename Traits::Element;
  using Mainloop = MainloopBwdSm80<Traits>;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;

  // dK (scaled by the softmax scale) and dV: registers -> shared (the K/V tiles' space) -> 16-byte
  // coalesced stores, rows past the sequence and columns past head_dim never written.
  template <typename TensorA>
  FLASHATTN_DEVICE static void store_tile(TensorA const& acc, Element* smem_tile, Element* gmem, int64_t row_stride,
                                          int rows_left, int head_dim, int tidx) {
    typename Traits::TiledMmaDkv mma;
    Tensor s_t = make_tensor(make_smem_ptr(smem_tile), typename Traits::SmemLayoutKV{});
    Tensor r = convert_fragment<Element>(acc);
    auto r2s = make_tiled_copy_C(typename Traits::SmemCopyAtomStore{}, mma);
    auto thr_r2s = r2s.get_thread_slice(tidx);
    copy(r2s, thr_r2s.retile_S(r), thr_r2s.partition_D(s_t));
    __syncthreads();
    Tensor m_g = make_tensor(make_gmem_ptr(gmem), make_shape(max(rows_left, 0), head_dim), make_stride(row_stride, _1{}));
    Tensor g = local_tile(m_g, Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(0, 0));
    typename Traits::GmemTiledCopyOut s2g;
    auto thr = s2g.get_thread_slice(tidx);
    Tensor t_s = thr.partition_S(s_t);
    Tensor t_g = thr.partition_D(g);
    Tensor t_r = make_tensor<Element>(shape(t_g));
    copy(s2g, t_s, t_r);
    Tensor t_c = thr.partition_D(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
    CUTE_UNROLL
    for (int m = 0; m < size<1>(t_g); ++m) {
      if (get<0>(t_c(0, m, 0)) < rows_left) {
        CUTE_UNROLL
        for (int k = 0; k < size<2>(t_g); ++k) {
          if (get<1>(t_c(0, m, k)) < head_dim) copy(s2g, t_r(_, m, k), t_g(_, m, k));
        }
      }
    }
  }

  FLASHATTN_DEVICE static void run_key_block(const BwdParams& p, const BwdWorkspacePtrs& ws, int n_block, int b,
                                             int hk, int slice, Element* smem, int tidx) {
    const SeqInfo seq = seq_info(p, b);
    const int sk = static_cast<int>(seq.sk);
    const int n0 = n_block * kBlockN;
    if (n0 >= sk) return;  // varlen: this sequence has fewer key blocks
    const int h_first = hk * p.head_ratio;
    const BlockInfo bi_k = BlockInfo::make(p, b, h_first);

    // K and V of the block; the first Q/dO wait in the mainloop covers this group too.
    __syncthreads();  // the previous key block's epilogue is done with the K/V space
    {
      Tensor s_k = make_tensor(make_smem_ptr(smem + Traits::kOffK), typename Traits::SmemLayoutKV{});
      Tensor s_v = make_tensor(make_smem_ptr(smem + Traits::kOffV), typename Traits::SmemLayoutKV{});
      Tensor m_k = make_tensor(make_gmem_ptr(static_cast<const Element*>(p.k) + bi_k.k_offset),
                               make_shape(sk, p.head_dim), make_stride(p.k_row_stride, _1{}));
      Tensor m_v = make_tensor(make_gmem_ptr(static_cast<const Element*>(p.v) + bi_k.v_offset),
                               make_shape(sk, p.head_dim), make_stride(p.v_row_stride, _1{}));
      Tensor g_k = local_tile(m_k, Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(n_block, 0));
      Tensor g_v = local_tile(m_v, Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(n_block, 0));
      typename Traits::GmemTiledCopy g2s;
      auto thr = g2s.get_thread_slice(tidx);
      Tensor t_c = thr.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
      Tensor pred_col = column_predicate(t_c, p.head_dim);
      copy_tile_g2s<true>(thr.partition_S(g_k), thr.partition_D(s_k), t_c, pred_col, sk - n0);
      copy_tile_g2s<true>(thr.partition_S(g_v), thr.partition_D(s_v), t_c, pred_col, sk - n0);
      cute::cp_async_fence();
    }

    typename Traits::TiledMmaDkv mma_dkv;
    Tensor acc_dk = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kHeadDim>>{});
    Tensor acc_dv = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kHeadDim>>{});
    clear(acc_dk);
    clear(acc_dv);

    const bool varlen_q = p.cu_seqlens_q != nullptr;
    for (int h = h_first; h < h_first + p.head_ratio; ++h) {
      const BlockInfo bi = BlockInfo::make(p, b, h);
      const int64_t do_offset =
          (varlen_q ? seq.q_start * p.do_row_stride : b * p.do_batch_stride) + h * p.do_head_stride;
      const int64_t head_rows = static_cast<int64_t>(h) * p.total_q + seq.q_start;
      float* dq_accum =
          ws.dq_accum + bwd_dq_seq_row0_sm80(slice, p.nheads, h, ws.dq_rows, seq.q_start, b, ws.dq_pad_rows) * kHeadDim;
      const Mask mask(p);
      const Score score(p, b, h);
      Mainloop::run(p, bi, do_offset, n_block, mask, score, dq_accum, ws.dpsum + head_rows, acc_dk, acc_dv, smem,
                    tidx);
    }

    // Keys no query row sees still get their (zero) gradients written.
    cute::cp_async_wait<0>();
    __syncthreads();
    CUTE_UNROLL
    for (int i = 0; i < size(acc_dk); ++i) acc_dk(i) *= p.scale_softmax;
    const bool varlen_k = p.cu_seqlens_k != nullptr;
    const int64_t dk_off = (varlen_k ? seq.k_start * p.dk_row_stride : b * p.dk_batch_stride) +
                           hk * p.dk_head_stride + static_cast<int64_t>(n0) * p.dk_row_stride;
    const int64_t dv_off = (varlen_k ? seq.k_start * p.dv_row_stride : b * p.dv_batch_stride) +
                           hk * p.dv_head_stride + static_cast<int64_t>(n0) * p.dv_row_stride;
    store_tile(acc_dk, smem + Traits::kOffK, static_cast<Element*>(p.dk) + dk_off, p.dk_row_stride, sk - n0,
               p.head_dim, tidx);
    store_tile(acc_dv, smem + Traits::kOffV, static_cast<Element*>(p.dv) + dv_off, p.dv_row_stride, sk - n0,
               p.head_dim, tidx);
  }

  // 1-D grid: CTA index -> (key-block slot, batch, kv head), slot fastest (CTAs of one head share Q/dO
  // in L2). Causal: low key blocks see the most query rows and run first.
  FLASHATTN_DEVICE static void run(const BwdParams& p, const BwdWorkspacePtrs& ws, Element* smem) {
    const int idx = static_cast<int>(blockIdx.x);
    const int bh = idx / ws.grid_n;
    const int slot = idx - bh * ws.grid_n;
    const int b = bh / p.nheads_k;
    const int hk = bh - b * p.nheads_k;
    const bool deterministic = ws.slices > 1 || p.deterministic;
    const int slice = deterministic ? slot : 0;
    for (int n = slot; n < ws.num_n_blocks; n += ws.grid_n) {
      run_key_block(p, ws, n, b, hk, slice, smem, threadIdx.x);
    }
  }
};

template <typename Kernel, int kNThreads>
__global__ void __launch_bounds__(kNThreads, 1) bwd_kernel_sm80(const __grid_constant__ BwdParams p,
                                                                const BwdWorkspacePtrs ws) {
  extern __shared__ cute::uint128_t smem_bwd_sm80[];
  Kernel::run(p, ws, reinterpret_cast<typename Kernel::Element*>(smem_bwd_sm80));
}

}  // namespace kern
}  // namespace flashattn
