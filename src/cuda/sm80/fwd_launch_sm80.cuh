// Launch template of the sm80-path forward kernel, included only by the generated TUs (kernels.toml,
// family "fwd"). One TU = (dtype, head dim, causal); inside it the mask (none/local) and the score policy
// (plain/general) are run-time switches over template instantiations, and head dims 224/256 also carry
// the 99 KB-shared-memory tile for sm86/89.
#pragma once

#include <atomic>
#include <cstddef>

#include <cuda_runtime.h>

#include "core/params.h"
#include "cuda/common/tile_sm80.h"
#include "cuda/sm80/fwd_kernel_sm80.cuh"

namespace flashattn {

namespace kern {

// Per-block opt-in shared memory of the current device, cached per device (it never changes).
inline size_t device_smem_optin_bytes() {
  static std::atomic<int> cache[64];
  int dev = 0;
  cudaGetDevice(&dev);
  if (dev >= 0 && dev < 64) {
    int v = cache[dev].load(std::memory_order_relaxed);
    if (v > 0) return static_cast<size_t>(v);
  }
  int v = 0;
  cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (dev >= 0 && dev < 64 && v > 0) cache[dev].store(v, std::memory_order_relaxed);
  return static_cast<size_t>(v);
}

template <typename Traits, typename Mask, typename Score, bool kLongestFirst = Mask::kCausal>
void launch_fwd_sm80(const FwdParams& p, cudaStream_t stream) {
  using Kernel = FwdKernelSm80<Traits, Mask, Score, kLongestFirst>;
  auto* fn = &fwd_kernel_sm80<Kernel, Traits::kNThreads>;
  constexpr int smem = Traits::kSmemBytes;
  if (smem > 48 * 1024) cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const int64_t ctas = Kernel::Scheduler::num_ctas(Kernel::num_m_blocks(p), p.batch, p.nheads);
  if (ctas <= 0) return;
  fn<<<dim3(static_cast<unsigned>(ctas)), dim3(Traits::kNThreads), smem, stream>>>(p);
}

template <typename Traits, bool kCausal>
void dispatch_fwd_sm80(const FwdParams& p, cudaStream_t stream) {
  const bool general_score = p.softcap > 0.f || p.alibi_slopes != nullptr;
  if constexpr (kCausal) {
    if (general_score) {
      launch_fwd_sm80<Traits, MaskCausal, ScoreGeneral>(p, stream);
    } else {
      launch_fwd_sm80<Traits, MaskCausal, ScorePlain>(p, stream);
    }
  } else {
    const bool local = p.window_left >= 0 || p.window_right >= 0;
    if (local) {
      if (general_score) {
        launch_fwd_sm80<Traits, MaskLocal, ScoreGeneral>(p, stream);
      } else {
        launch_fwd_sm80<Traits, MaskLocal, ScorePlain>(p, stream);
      }
    } else if (general_score) {
      launch_fwd_sm80<Traits, MaskNone, ScoreGeneral>(p, stream);
    } else {
      launch_fwd_sm80<Traits, MaskNone, ScorePlain>(p, stream);
    }
  }
}

}  // namespace kern

// Entry point called by the generated TUs. kCausal: window (-1, 0) exactly (the host picks the causal
// instantiation then); any other window runs the local mask of the non-causal instantiation.
template <typename T, int kHeadDim, bool kCausal>
void run_fwd_sm80(const FwdParams& p, cudaStream_t stream) {
  constexpr TileSm80 kLarge = fwd_tile_sm80(kHeadDim, false);
  constexpr TileSm80 kSmall = fwd_tile_sm80(kHeadDim, true);
  using LargeTraits = kern::FwdTraitsSm80<kHeadDim, kLarge.block_m, kLarge.block_n, kLarge.warps, T>;
  if constexpr (kLarge == kSmall) {
    kern::dispatch_fwd_sm80<LargeTraits, kCausal>(p, stream);
  } else {
    using SmallTraits = kern::FwdTraitsSm80<kHeadDim, kSmall.block_m, kSmall.block_n, kSmall.warps, T>;
    if (fwd_tile_for_device_sm80(kHeadDim, kern::device_smem_optin_bytes()) == kLarge) {
      kern::dispatch_fwd_sm80<LargeTraits, kCausal>(p, stream);
    } else {
      kern::dispatch_fwd_sm80<SmallTraits, kCausal>(p, stream);
    }
  }
}

}  // namespace flashattn
