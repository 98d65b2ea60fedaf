// Launch template of the sm80-path forward kernel, included only by the generated TUs (kernels.toml,
// family "fwd"). One TU = (dtype, head dim, causal); inside it the mask and the score policy are run-time
// switches over the template instantiations listed at fwd_score_sm80 (tile_sm80.h), and each distinct
// tile of the shared-memory classes is instantiated.
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

#include "core/params.h"
#include "cuda/common/device_smem.cuh"
#include "cuda/common/tile_sm80.h"
#include "cuda/sm80/fwd_kernel_sm80.cuh"

namespace flashattn {

namespace kern {

template <typename Traits, typename Mask, typename Score>
void launch_fwd_sm80(const FwdParams& p, cudaStream_t stream) {
  using Kernel = FwdKernelSm80<Traits, Mask, Score>;
  auto* fn = &fwd_kernel_sm80<Kernel, Traits::kNThreads>;
  constexpr int smem = Traits::kSmemBytes;
  if (smem > 48 * 1024) cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const int64_t ctas = Kernel::Scheduler::num_ctas(Kernel::num_m_blocks(p), p.batch, p.nheads);
  if (ctas <= 0) return;
  fn<<<dim3(static_cast<unsigned>(ctas)), dim3(Traits::kNThreads), smem, stream>>>(p);
}

// The kernel set of one TU follows fwd_score_sm80 / fwd_uses_causal_tu_sm80 (tile_sm80.h): the host
// sends a causal TU only causal problems with at most one of softcap and ALiBi. kLocal: the local-mask
// kernels of a non-causal TU (fwd_uses_local_mask_sm80), which may run on a tile of their own.
template <typename Traits, bool kCausal, bool kLocal>
void dispatch_fwd_sm80(const FwdParams& p, cudaStream_t stream) {
  const FwdScoreSm80 score = fwd_score_sm80(p);
  if constexpr (kCausal) {
    if (score == FwdScoreSm80::kSoftcap) {
      launch_fwd_sm80<Traits, MaskCausal, ScoreSoftcap>(p, stream);
    } else if (score == FwdScoreSm80::kAlibi) {
      launch_fwd_sm80<Traits, MaskCausal, ScoreAlibi>(p, stream);
    } else {
      launch_fwd_sm80<Traits, MaskCausal, ScorePlain>(p, stream);
    }
  } else if constexpr (kLocal) {
    if (score != FwdScoreSm80::kPlain) {
      launch_fwd_sm80<Traits, MaskLocal, ScoreGeneral>(p, stream);
    } else {
      launch_fwd_sm80<Traits, MaskLocal, ScorePlain>(p, stream);
    }
  } else {
    launch_fwd_sm80<Traits, MaskNone, ScorePlain>(p, stream);
  }
}

}  // namespace kern

// Entry point called by the generated TUs. kCausal: fwd_uses_causal_tu_sm80 holds (window (-1, 0) with at
// most one of softcap and ALiBi); everything else runs the non-causal instantiation. The tile is
// fwd_tile_for_problem_sm80's, as the planner reports it; equal tiles of different classes (or of short
// and long rows) are one instantiation.
template <typename T, int kHeadDim, bool kCausal, bool kLocal, SmemClassSm80 kClass>
void run_fwd_tile_sm80(const FwdParams& p, cudaStream_t stream) {
  constexpr TileSm80 kLong = fwd_tile_sm80(kHeadDim, kClass, false, kLocal);
  constexpr TileSm80 kShort = fwd_tile_sm80(kHeadDim, kClass, true, kLocal);
  if (fwd_short_rows_sm80(p.seqlen_q, p.seqlen_k, p.window_left, p.window_right)) {
    kern::dispatch_fwd_sm80<kern::FwdTraitsSm80<kHeadDim, kShort.block_m, kShort.block_n, kShort.warps, T>, kCausal,
                            kLocal>(p, stream);
  } else {
    kern::dispatch_fwd_sm80<kern::FwdTraitsSm80<kHeadDim, kLong.block_m, kLong.block_n, kLong.warps, T>, kCausal,
                            kLocal>(p, stream);
  }
}

template <typename T, int kHeadDim, bool kCausal, SmemClassSm80 kClass>
void run_fwd_class_sm80(const FwdParams& p, cudaStream_t stream) {
  if constexpr (kCausal) {
    run_fwd_tile_sm80<T, kHeadDim, true, false, kClass>(p, stream);
  } else if (fwd_uses_local_mask_sm80(p)) {
    run_fwd_tile_sm80<T, kHeadDim, false, true, kClass>(p, stream);
  } else {
    run_fwd_tile_sm80<T, kHeadDim, false, false, kClass>(p, stream);
  }
}

template <typename T, int kHeadDim, bool kCausal>
void run_fwd_sm80(const FwdParams& p, cudaStream_t stream) {
  // A build without sm_80 code runs only on sm_90 devices (the planner rejects others), all of the 227 KB
  // class: the other classes' tiles are not compiled (the dev preset's build time).
  if constexpr (!FLASHATTN_SM80_CODE) {
    return run_fwd_class_sm80<T, kHeadDim, kCausal, SmemClassSm80::k227KB>(p, stream);
  } else {
    switch (smem_class_sm80(kern::device_smem_optin_bytes())) {
      case SmemClassSm80::k227KB:
        return run_fwd_class_sm80<T, kHeadDim, kCausal, SmemClassSm80::k227KB>(p, stream);
      case SmemClassSm80::k163KB:
        return run_fwd_class_sm80<T, kHeadDim, kCausal, SmemClassSm80::k163KB>(p, stream);
      default:
        return run_fwd_class_sm80<T, kHeadDim, kCausal, SmemClassSm80::k99KB>(p, stream);
    }
  }
}

}  // namespace flashattn
