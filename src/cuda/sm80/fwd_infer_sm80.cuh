// The sm80-path inference forward (kernels.toml family "fwd_infer"): the plain forward's skeleton and
// mainloop with three additions, all run-time or policy choices that leave the plain kernels untouched:
//   - paged K/V (KvPaged addressing policy, a compile-time variant: one TU each);
//   - split-KV: the grid gains a split axis; a split visits its share of the sequence's key blocks and
//     writes fp32 O (normalised by its own softmax) and LSE partials that the combine kernel merges;
//   - PackGQA: the host hands the kernel a view with one head per KV head (fwd_infer.h); the tile's rows
//     are (token, query head) pairs placed by RowMaps: this kernel loads Q and stores O/LSE itself.
// Causal runs as the local mask with window (-1, 0) (one mask instantiation fewer per TU; the key-block
// range and the per-element test are the same formulas).
#pragma once

#include <type_traits>

#include <cuda_runtime.h>

#include "core/params.h"
#include "cuda/common/block_info.cuh"
#include "cuda/common/epilogue_fwd.cuh"
#include "cuda/common/fwd_infer.h"
#include "cuda/common/mask.cuh"
#include "cuda/common/paged_kv.cuh"
#include "cuda/common/score.cuh"
#include "cuda/common/softmax.cuh"
#include "cuda/sm80/kernel_traits_sm80.cuh"
#include "cuda/sm80/mainloop_fwd_sm80.cuh"

namespace flashattn {

namespace kern {

// Grid: one CTA per (m block, split, batch, head), m block fastest, so the CTAs of one (batch, head)
// (which read the same K/V) are adjacent and a split's neighbours share L2.
struct InferTile {
  int m_block, split, batch, head;
  FLASHATTN_DEVICE static InferTile get(int num_m_blocks, int num_splits, int nheads) {
    const int idx = static_cast<int>(blockIdx.x);
    InferTile t;
    const int rest = idx / num_m_blocks;
    t.m_block = idx - rest * num_m_blocks;
    const int bh = rest / num_splits;
    t.split = rest - bh * num_splits;
    t.batch = bh / nheads;
    t.head = bh - t.batch * nheads;
    return t;
  }
};

template <typename Traits, typename Mask, typename Score, bool kPaged>
struct FwdInferKernelSm80 {
  using Element = typename Traits::Element;
  // Rows of a key tile each thread copies: the tiled copy covers kNThreads / kGmemThreadsPerRow rows a pass.
  static constexpr int kKvRowsPerThread = Traits::kBlockN / (Traits::kNThreads / Traits::kGmemThreadsPerRow);
  using Kv = std::conditional_t<kPaged, KvPaged<Element, kKvRowsPerThread>, KvDense>;
  using Mainloop = MainloopFwdSm80<Traits, Kv>;
  using Epilogue = EpilogueFwd<Traits>;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;

  // Tile rows: tokens x packed heads (PackGQA) per (batch, head of the view).
  FLASHATTN_HOST_DEVICE static int num_m_blocks(const FwdInferParams& ip) {
    return static_cast<int>((static_cast<int64_t>(ip.p.seqlen_q) * ip.pack + kBlockM - 1) / kBlockM);
  }

  FLASHATTN_DEVICE static void run(const FwdInferParams& ip, Element* smem) {
    const FwdParams& p = ip.p;
    const int tidx = threadIdx.x;
    const InferTile tile = InferTile::get(num_m_blocks(ip), ip.num_splits, p.nheads);
    BlockInfo bi = BlockInfo::make(p, tile.batch, tile.head);
    bi.sq *= ip.pack;  // from here on bi.sq counts tile rows; the mask divides by pack again
    const int row0 = tile.m_block * kBlockM;
    if (row0 >= bi.sq) return;

    Mask mask(p);
    mask.pack = ip.pack;
    const Score score(p, tile.batch, tile.head);
    BlockRange range = mask.template range<kBlockM, kBlockN>(tile.m_block, bi.sq, bi.sk);
    if (ip.write_partial) {
      // This split's key blocks: fixed-size chunks (batch-invariant) or an even share of this
      // sequence's own blocks. Either way the boundaries depend on this sequence alone.
      const int n_blocks = ceil_div_int(bi.sk, kBlockN);
      const int per = ip.split_blocks > 0 ? ip.split_blocks : ceil_div_int(n_blocks, ip.num_splits);
      const int lo = tile.split * per;
      range.n_min = max(range.n_min, lo);
      range.n_max = min(range.n_max, lo + per);
      range.n_min = min(range.n_min, range.n_max);
    }

    Kv kv;
    if constexpr (kPaged) kv = Kv::make(p, tile.batch, tile.head / p.head_ratio, kBlockN);
    load_q(ip, bi, row0, smem, tidx);

    typename Traits::TiledMma tiled_mma;
    Tensor acc_o = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
    clear(acc_o);
    typename Mainloop::Softmax softmax;
    softmax.init();
    Mainloop::template run<false>(p, bi, tile.m_block, range, mask, score, softmax, acc_o, smem, tidx, kv);

    float lse[Traits::kRowsPerThread];
    Tensor o_rc = rowcol_view(acc_o);
    if (ip.write_partial) {
      // Sinks join once, in the combine; a split that saw no key reports LSE +inf (weight 0 there).
      softmax.finalize(o_rc, score.softmax_scale_log2, false, 0.f, lse);
      store_partial(ip, tile, acc_o, lse, tidx);
      cute::cp_async_wait<0>();  // nothing may be in flight into shared memory when the CTA exits
      return;
    }
    // Sinks are per query head: a packed view never gets here with sinks (use_pack_gqa).
    const bool has_sink = p.sinks != nullptr;
    const float sink = has_sink ? p.sinks[tile.head] : 0.f;
    softmax.finalize(o_rc, score.softmax_scale_log2, has_sink, sink, lse);
    cute::cp_async_wait<0>();
    __syncthreads();
    Epilogue::store_rows(p, static_cast<Element*>(p.out) + bi.o_offset, RowMap{ip.pack, p.o_row_stride, ip.o_pack_stride},
                         p.lse != nullptr ? p.lse + bi.lse_offset : nullptr, RowMap{ip.pack, 1, ip.lse_pack_stride},
                         row0, bi.sq - row0, acc_o, lse, smem, tidx);
  }

  // The Q tile's cp.async (committed with the mainloop's first K load), rows placed by the PackGQA map.
  FLASHATTN_DEVICE static void load_q(const FwdInferParams& ip, const BlockInfo& bi, int row0, Element* smem,
                                      int tidx) {
    const FwdParams& p = ip.p;
    Tensor s_q = make_tensor(make_smem_ptr(smem), typename Traits::SmemLayoutQ{});
    typename Traits::GmemTiledCopyQKV g2s;
    auto thr_g2s = g2s.get_thread_slice(tidx);
    Tensor t_qs = thr_g2s.partition_D(s_q);
    Tensor t_qc = thr_g2s.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    Tensor pred_col = make_tensor<bool>(make_shape(size<2>(t_qs)));
    CUTE_UNROLL
    for (int k = 0; k < size(pred_col); ++k) pred_col(k) = get<1>(t_qc(0, 0, k)) < p.head_dim;
    const Element* q = static_cast<const Element*>(p.q) + bi.q_offset;
    const RowMap q_map{ip.pack, p.q_row_stride, ip.q_pack_stride};
    copy_rows_g2s<true>(t_qs, t_qc, pred_col, bi.sq - row0, [&](int, int r) { return q + q_map(row0 + r); });
  }

  // fp32 partials straight from the accumulator fragment: each thread holds pairs of adjacent columns, so
  // the stores are 8 bytes; the partials are small (rows * head_dim per split) next to the K/V read.
  template <typename TensorO, int kNRows>
  FLASHATTN_DEVICE static void store_partial(const FwdInferParams& ip, const InferTile& tile, TensorO const& acc_o,
                                             const float (&lse)[kNRows], int tidx) {
    const FwdParams& p = ip.p;
    const SeqInfo s = seq_info(p, tile.batch);
    const bool varlen_q = p.cu_seqlens_q != nullptr;
    const int row0 = tile.m_block * kBlockM;
    const int rows_left = static_cast<int>(s.sq) * ip.pack - row0;
    const int64_t first_token = varlen_q ? s.q_start : 0;
    const int64_t b_off = varlen_q ? 0 : tile.batch;
    float* o_base = p.out_accum + tile.split * ip.oa_split_stride + b_off * ip.oa_batch_stride +
                    first_token * ip.oa_row_stride + tile.head * ip.oa_head_stride;
    float* l_base = p.lse_accum + tile.split * ip.la_split_stride + b_off * ip.la_batch_stride +
                    first_token * ip.la_row_stride + tile.head * ip.la_head_stride;
    const RowMap o_map{ip.pack, ip.oa_row_stride, ip.oa_pack_stride};
    const RowMap l_map{ip.pack, ip.la_row_stride, ip.la_pack_stride};
    typename Traits::TiledMma tiled_mma;
    auto thr_mma = tiled_mma.get_thread_slice(tidx);
    Tensor coord = rowcol_view(thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{})));
    Tensor o_rc = rowcol_view(acc_o);
    static_assert(decltype(size<0>(coord))::value == kNRows);
    CUTE_UNROLL
    for (int mi = 0; mi < kNRows; ++mi) {
      const int r = get<0>(coord(mi, 0));
      if (r >= rows_left) continue;
      float* o_row = o_base + o_map(row0 + r);
      CUTE_UNROLL
      for (int nj = 0; nj < size<1>(o_rc); nj += 2) {
        const int c = get<1>(coord(mi, nj));
        // head_dim is a multiple of 8 and c is even: the pair is in bounds whenever c is.
        if (c < p.head_dim) *reinterpret_cast<float2*>(o_row + c) = make_float2(o_rc(mi, nj), o_rc(mi, nj + 1));
      }
      if (get<1>(coord(0, 0)) == 0) l_base[l_map(row0 + r)] = lse[mi];
    }
  }
};

template <typename Kernel, int kNThreads>
__global__ void __launch_bounds__(kNThreads, 1) fwd_infer_kernel_sm80(const __grid_constant__ FwdInferParams ip) {
  extern __shared__ cute::uint128_t smem_fwd_infer_sm80[];
  Kernel::run(ip, reinterpret_cast<typename Kernel::Element*>(smem_fwd_infer_sm80));
}

template <typename Traits, typename Mask, typename Score, bool kPaged>
void launch_fwd_infer_sm80(const FwdInferParams& ip, cudaStream_t stream) {
  using Kernel = FwdInferKernelSm80<Traits, Mask, Score, kPaged>;
  auto* fn = &fwd_infer_kernel_sm80<Kernel, Traits::kNThreads>;
  constexpr int smem = Traits::kSmemBytes;
  if (smem > 48 * 1024) cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const int64_t ctas = static_cast<int64_t>(Kernel::num_m_blocks(ip)) * ip.num_splits * ip.p.batch * ip.p.nheads;
  if (ctas <= 0) return;
  fn<<<dim3(static_cast<unsigned>(ctas)), dim3(Traits::kNThreads), smem, stream>>>(ip);
}

}  // namespace kern

// Entry point called by the generated TUs: mask (none / local, causal included, PackGQA-aware) and score policy
// (plain / general) are run-time switches over four instantiations.
template <typename T, int kHeadDim, bool kPaged>
void run_fwd_infer_sm80(const FwdInferParams& ip, cudaStream_t stream) {
  constexpr TileSm80 kTile = fwd_infer_tile_sm80(kHeadDim);
  using Traits = kern::FwdTraitsSm80<kHeadDim, kTile.block_m, kTile.block_n, kTile.warps, T>;
  const FwdParams& p = ip.p;
  const bool general = p.softcap > 0.f || p.alibi_slopes != nullptr;
  const bool local = p.is_causal || p.window_left >= 0 || p.window_right >= 0;
  if (local) {
    if (general) {
      kern::launch_fwd_infer_sm80<Traits, kern::MaskLocalPacked, kern::ScoreGeneral, kPaged>(ip, stream);
    } else {
      kern::launch_fwd_infer_sm80<Traits, kern::MaskLocalPacked, kern::ScorePlain, kPaged>(ip, stream);
    }
  } else if (general) {
    kern::launch_fwd_infer_sm80<Traits, kern::MaskNone, kern::ScoreGeneral, kPaged>(ip, stream);
  } else {
    kern::launch_fwd_infer_sm80<Traits, kern::MaskNone, kern::ScorePlain, kPaged>(ip, stream);
  }
}

}  // namespace flashattn
