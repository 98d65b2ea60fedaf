// The sm80-path forward kernel: the common skeleton (tile scheduler -> block info -> mask range ->
// mainloop -> softmax finalize -> epilogue) with the sm80 mainloop plugged in.
#pragma once

#include "core/params.h"
#include "cuda/common/block_info.cuh"
#include "cuda/common/epilogue_fwd.cuh"
#include "cuda/common/mask.cuh"
#include "cuda/common/score.cuh"
#include "cuda/common/softmax.cuh"
#include "cuda/common/tile_scheduler.cuh"
#include "cuda/sm80/kernel_traits_sm80.cuh"
#include "cuda/sm80/mainloop_fwd_sm80.cuh"

namespace flashattn {
namespace kern {

template <typename Traits, typename Mask, typename Score>
struct FwdKernelSm80 {
  using Element = typename Traits::Element;
  using Mainloop = MainloopFwdSm80<Traits>;
  using Epilogue = EpilogueFwd<Traits>;
  using Scheduler = TileSchedulerFwd;
  static constexpr int kBlockM = Traits::kBlockM;

  static int num_m_blocks(const FwdParams& p) { return static_cast<int>((p.seqlen_q + kBlockM - 1) / kBlockM); }

  FLASHATTN_DEVICE static void run(const FwdParams& p, Element* smem) {
    const int tidx = threadIdx.x;
    const int num_m = static_cast<int>((p.seqlen_q + kBlockM - 1) / kBlockM);
    // With a right bound the last query blocks see the most keys: start them first.
    const bool last_first = Mask::kCausal || (Mask::kLocal && p.window_right >= 0);
    const WorkTile tile = Scheduler::get(num_m, p.nheads, last_first);
    const BlockInfo bi = BlockInfo::make(p, tile.batch, tile.head);
    // Varlen: seqlen_q is the longest sequence; shorter ones leave trailing CTAs idle.
    if (tile.m_block * kBlockM >= bi.sq) return;

    const Mask mask(p);
    const Score score(p, tile.batch, tile.head);
    const BlockRange range = mask.template range<kBlockM, Traits::kBlockN>(tile.m_block, bi.sq, bi.sk);

    typename Traits::TiledMma tiled_mma;
    Tensor acc_o = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<Traits::kHeadDim>>{});
    clear(acc_o);
    typename Mainloop::Softmax softmax;
    softmax.init();
    Mainloop::run(p, bi, tile.m_block, range, mask, score, softmax, acc_o, smem, tidx);

    float lse[Traits::kRowsPerThread];
    const bool has_sink = p.sinks != nullptr;
    const float sink = has_sink ? p.sinks[tile.head] : 0.f;
    Tensor o_rc = rowcol_view(acc_o);
    softmax.finalize(o_rc, score.softmax_scale_log2, has_sink, sink, lse);

    // The O tile reuses Q's shared memory: wait for outstanding loads and for every warp's last read.
    cute::cp_async_wait<0>();
    __syncthreads();
    Epilogue::store(p, bi, tile.m_block, acc_o, lse, smem, tidx);
  }
};

template <typename Kernel, int kNThreads>
__global__ void __launch_bounds__(kNThreads, 1) fwd_kernel_sm80(const __grid_constant__ FwdParams p) {
  extern __shared__ cute::uint128_t smem_fwd_sm80[];
  Kernel::run(p, reinterpret_cast<typename Kernel::Element*>(smem_fwd_sm80));
}

}  // namespace kern
}  // namespace flashattn
