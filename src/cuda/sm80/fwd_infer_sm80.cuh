// The sm80-path inference forward (kernels.toml family "fwd_infer"): the plain forward's skeleton and
// mainloop with three additions, all run-time or policy choices that leave the plain kernels untouched:
//   - paged K/V (KvPaged addressing policy, a compile-time variant: one TU each);
//   - split-KV: the grid gains a split axis; a split visits its share of the sequence's key blocks and
//     writes fp32 O (normalised by its own softmax) and LSE partials that the combine kernel merges;
//   - PackGQA: the host hands the kernel a view with one head per KV head (fwd_infer.h); the tile's rows
//     are (token, query head) pairs placed by RowMaps: this kernel loads Q and stores O/LSE itself.
// Causal runs as the local mask with window (-1, 0) (one mask instantiation fewer per TU; the key-block
// range and the per-element test are the same formulas). Tiles of at most 16 rows run on the decode
// kernel (fwd_decode_sm80.cuh) instead, chosen by the planner (FwdInferParams::decode).
#pragma once

#include <type_traits>

#include <cuda_runtime.h>

#include "core/params.h"
#include "cuda/common/block_info.cuh"
#include "cuda/common/fwd_infer.h"
#include "cuda/common/mask.cuh"
#include "cuda/common/paged_kv.cuh"
#include "cuda/common/pdl.cuh"
#include "cuda/common/score.cuh"
#include "cuda/sm80/fwd_decode_sm80.cuh"
#include "cuda/sm80/fwd_infer_io_sm80.cuh"
#include "cuda/sm80/kernel_traits_sm80.cuh"
#include "cuda/sm80/mainloop_fwd_sm80.cuh"

namespace flashattn {

namespace kern {

template <typename Traits, typename Mask, typename Score, bool kPaged>
struct FwdInferKernelSm80 {
  using Element = typename Traits::Element;
  // Rows of a key tile each thread copies: the tiled copy covers kNThreads / kGmemThreadsPerRow rows a pass.
  static constexpr int kKvRowsPerThread = Traits::kBlockN / (Traits::kNThreads / Traits::kGmemThreadsPerRow);
  using Kv = std::conditional_t<kPaged, KvPaged<Element, kKvRowsPerThread>, KvDense>;
  using Mainloop = MainloopFwdSm80<Traits, Kv>;
  using Io = InferRows<Traits>;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;
  static constexpr int kNThreads = Traits::kNThreads;
  static constexpr int kSmemBytes = Traits::kSmemBytes;

  FLASHATTN_DEVICE static void run(const FwdInferParams& ip, Element* smem) {
    const FwdParams& p = ip.p;
    const int tidx = threadIdx.x;
    const InferWork<kBlockM, kBlockN, Mask, Score> work(ip);
    if (work.empty()) return;

    Kv kv;
    if constexpr (kPaged) kv = Kv::make(p, work.tile.batch, work.tile.head / p.head_ratio, kBlockN);
    Io::load_q(ip, work.bi, work.row0, smem, tidx);

    typename Traits::TiledMma tiled_mma;
    Tensor acc_o = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
    clear(acc_o);
    typename Mainloop::Softmax softmax;
    softmax.init();
    Mainloop::template run<false>(p, work.bi, work.tile.m_block, work.range, work.mask, work.score, softmax, acc_o,
                                  smem, tidx, kv);
    Io::finish(ip, work.tile, work.bi, work.row0, work.score.softmax_scale_log2, softmax, acc_o, smem, tidx);
  }
};

template <typename Kernel>
__global__ void __launch_bounds__(Kernel::kNThreads, 1)
    fwd_infer_kernel_sm80(const __grid_constant__ FwdInferParams ip) {
  extern __shared__ cute::uint128_t smem_fwd_infer_sm80[];
  allow_dependent_launch();  // the split combine may start now; it waits for this grid's partials
  Kernel::run(ip, reinterpret_cast<typename Kernel::Element*>(smem_fwd_infer_sm80));
}

template <typename Kernel>
void launch_fwd_infer_sm80(const FwdInferParams& ip, cudaStream_t stream) {
  auto* fn = &fwd_infer_kernel_sm80<Kernel>;
  constexpr int smem = Kernel::kSmemBytes;
  if (smem > 48 * 1024) cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const int64_t ctas =
      static_cast<int64_t>(infer_num_m_blocks<Kernel::kBlockM>(ip)) * ip.num_splits * ip.p.batch * ip.p.nheads;
  if (ctas <= 0) return;
  fn<<<dim3(static_cast<unsigned>(ctas)), dim3(Kernel::kNThreads), smem, stream>>>(ip);
}

template <typename T>
struct PolicyTag {
  using type = T;
};

}  // namespace kern

// Entry point called by the generated TUs: kernel (64-row / decode), mask (none / local, causal included,
// PackGQA-aware) and score policy (plain / general) are run-time switches over eight instantiations, and
// a paged TU's decode kernel comes in two addressings (whole slices in a page, or per row): twelve.
template <typename T, int kHeadDim, bool kPaged>
void run_fwd_infer_sm80(const FwdInferParams& ip, cudaStream_t stream) {
  constexpr TileSm80 kTile = fwd_infer_tile_sm80(kHeadDim);
  using Traits = kern::FwdTraitsSm80<kHeadDim, kTile.block_m, kTile.block_n, kTile.warps, T>;
  auto launch = [&](auto mask_tag, auto score_tag) {
    using Mask = typename decltype(mask_tag)::type;
    using Score = typename decltype(score_tag)::type;
    if (ip.decode) {
      // Pages that hold whole 16-key slices (vLLM's 16, and every larger power of two) take the dense-like
      // addressing; other page sizes look each row up.
      using Decode = kern::FwdDecodeKernelSm80<T, kHeadDim, kTile.block_n, Mask, Score, kPaged, false>;
      using DecodeSliceInPage = kern::FwdDecodeKernelSm80<T, kHeadDim, kTile.block_n, Mask, Score, kPaged, true>;
      if constexpr (kPaged) {
        if (ip.p.page_size % kDecodeSliceKeys == 0) {
          kern::launch_fwd_infer_sm80<DecodeSliceInPage>(ip, stream);
          return;
        }
      }
      kern::launch_fwd_infer_sm80<Decode>(ip, stream);
    } else {
      kern::launch_fwd_infer_sm80<kern::FwdInferKernelSm80<Traits, Mask, Score, kPaged>>(ip, stream);
    }
  };
  const FwdParams& p = ip.p;
  const bool general = p.softcap > 0.f || p.alibi_slopes != nullptr;
  const bool local = p.is_causal || p.window_left >= 0 || p.window_right >= 0;
  using kern::PolicyTag;
  if (local) {
    if (general) {
      launch(PolicyTag<kern::MaskLocalPacked>{}, PolicyTag<kern::ScoreGeneral>{});
    } else {
      launch(PolicyTag<kern::MaskLocalPacked>{}, PolicyTag<kern::ScorePlain>{});
    }
  } else if (general) {
    launch(PolicyTag<kern::MaskNone>{}, PolicyTag<kern::ScoreGeneral>{});
  } else {
    launch(PolicyTag<kern::MaskNone>{}, PolicyTag<kern::ScorePlain>{});
  }
}

}  // namespace flashattn
