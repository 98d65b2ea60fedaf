// The sm80-path inference forward (kernels.toml family "fwd_infer"): the plain forward's skeleton and
// mainloop with three additions, all run-time or policy choices that leave the plain kernels untouched:
//   - paged K/V (KvPaged addressing policy, a compile-time variant: one TU each);
//   - split-KV: the grid gains a split axis; a split visits its share of the sequence's key blocks and
//     writes fp32 O (normalised by its own softmax) and LSE partials that the combine kernel merges;
//   - PackGQA needs nothing here: the host hands the kernel the packed view of q/out/LSE (fwd_infer.h).
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
  using Kv = std::conditional_t<kPaged, KvPaged<Element>, KvDense>;
  using Mainloop = MainloopFwdSm80<Traits, Kv>;
  using Epilogue = EpilogueFwd<Traits>;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;

  static int num_m_blocks(const FwdParams& p) { return static_cast<int>((p.seqlen_q + kBlockM - 1) / kBlockM); }

  FLASHATTN_DEVICE static void run(const FwdInferParams& ip, Element* smem) {
    const FwdParams& p = ip.p;
    const int tidx = threadIdx.x;
    const int num_m = static_cast<int>((p.seqlen_q + kBlockM - 1) / kBlockM);
    const InferTile tile = InferTile::get(num_m, ip.num_splits, p.nheads);
    const BlockInfo bi = BlockInfo::make(p, tile.batch, tile.head);
    if (tile.m_block * kBlockM >= bi.sq) return;

    const Mask mask(p);
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
    if constexpr (kPaged) kv = Kv::make(p, tile.batch, tile.head, kBlockN);

    typename Traits::TiledMma tiled_mma;
    Tensor acc_o = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
    clear(acc_o);
    typename Mainloop::Softmax softmax;
    softmax.init();
    Mainloop::run(p, bi, tile.m_block, range, mask, score, softmax, acc_o, smem, tidx, kv);

    float lse[Traits::kRowsPerThread];
    Tensor o_rc = rowcol_view(acc_o);
    if (ip.write_partial) {
      // Sinks join once, in the combine; a split that saw no key reports LSE +inf (weight 0 there).
      softmax.finalize(o_rc, score.softmax_scale_log2, false, 0.f, lse);
      store_partial(ip, tile, acc_o, lse, tidx);
      cute::cp_async_wait<0>();  // nothing may be in flight into shared memory when the CTA exits
      return;
    }
    const bool has_sink = p.sinks != nullptr;
    const float sink = has_sink ? p.sinks[tile.head] : 0.f;
    softmax.finalize(o_rc, score.softmax_scale_log2, has_sink, sink, lse);
    cute::cp_async_wait<0>();
    __syncthreads();
    Epilogue::store(p, bi, tile.m_block, acc_o, lse, smem, tidx);
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
    const int rows_left = static_cast<int>(s.sq) - row0;
    const int64_t first_row = (varlen_q ? s.q_start : 0) + row0;
    const int64_t b_off = varlen_q ? 0 : tile.batch;
    float* o_base = p.out_accum + tile.split * ip.oa_split_stride + b_off * ip.oa_batch_stride +
                    first_row * ip.oa_row_stride + tile.head * ip.oa_head_stride;
    float* l_base = p.lse_accum + tile.split * ip.la_split_stride + b_off * ip.la_batch_stride +
                    first_row * ip.la_row_stride + tile.head * ip.la_head_stride;
    typename Traits::TiledMma tiled_mma;
    auto thr_mma = tiled_mma.get_thread_slice(tidx);
    Tensor coord = rowcol_view(thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{})));
    Tensor o_rc = rowcol_view(acc_o);
    static_assert(decltype(size<0>(coord))::value == kNRows);
    CUTE_UNROLL
    for (int mi = 0; mi < kNRows; ++mi) {
      const int r = get<0>(coord(mi, 0));
      if (r >= rows_left) continue;
      float* o_row = o_base + r * ip.oa_row_stride;
      CUTE_UNROLL
      for (int nj = 0; nj < size<1>(o_rc); nj += 2) {
        const int c = get<1>(coord(mi, nj));
        // head_dim is a multiple of 8 and c is even: the pair is in bounds whenever c is.
        if (c < p.head_dim) *reinterpret_cast<float2*>(o_row + c) = make_float2(o_rc(mi, nj), o_rc(mi, nj + 1));
      }
      if (get<1>(coord(0, 0)) == 0) l_base[r * ip.la_row_stride] = lse[mi];
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
  const int64_t ctas = static_cast<int64_t>(Kernel::num_m_blocks(ip.p)) * ip.num_splits * ip.p.batch * ip.p.nheads;
  if (ctas <= 0) return;
  fn<<<dim3(static_cast<unsigned>(ctas)), dim3(Traits::kNThreads), smem, stream>>>(ip);
}

}  // namespace kern

// Entry point called by the generated TUs: mask (none / local, causal included) and score policy
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
      kern::launch_fwd_infer_sm80<Traits, kern::MaskLocal, kern::ScoreGeneral, kPaged>(ip, stream);
    } else {
      kern::launch_fwd_infer_sm80<Traits, kern::MaskLocal, kern::ScorePlain, kPaged>(ip, stream);
    }
  } else if (general) {
    kern::launch_fwd_infer_sm80<Traits, kern::MaskNone, kern::ScoreGeneral, kPaged>(ip, stream);
  } else {
    kern::launch_fwd_infer_sm80<Traits, kern::MaskNone, kern::ScorePlain, kPaged>(ip, stream);
  }
}

}  // namespace flashattn
