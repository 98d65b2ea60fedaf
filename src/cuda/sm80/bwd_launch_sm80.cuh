// Launch template of the sm80-path backward, included only by the generated TUs (kernels.toml, family
// "bwd"). One TU = (dtype, head dim, causal); inside it the mask (none/local) and the score policy
// (plain/general) are run-time switches over template instantiations, and head dims with a 99 KB tile
// (tile_bwd_sm80.h) carry it as well. Sequence on the stream, no allocation, no host sync:
//   memset dq_accum -> preprocess (D, dsinks partials) -> main kernel -> convert dQ -> reduce dsinks.
#pragma once

#include <atomic>
#include <cstddef>

#include <cuda_runtime.h>

#include "core/params.h"
#include "cuda/common/bwd_preprocess.cuh"
#include "cuda/common/tile_bwd_sm80.h"
#include "cuda/sm80/bwd_kernel_sm80.cuh"

namespace flashattn {

namespace kern {

// Per-block opt-in shared memory of the current device, cached per device (it never changes).
inline size_t bwd_device_smem_optin_bytes() {
  static std::atomic<int> cache[64];
  int dev = 0;
  cudaGetDevice(&dev);
  if (dev >= 0 && dev < 64) {
    const int v = cache[dev].load(std::memory_order_relaxed);
    if (v > 0) return static_cast<size_t>(v);
  }
  int v = 0;
  cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (dev >= 0 && dev < 64 && v > 0) cache[dev].store(v, std::memory_order_relaxed);
  return static_cast<size_t>(v);
}

template <typename Traits, typename Mask, typename Score>
void launch_bwd_main_sm80(const BwdParams& p, const BwdWorkspacePtrs& ws, cudaStream_t stream) {
  using Kernel = BwdKernelSm80<Traits, Mask, Score>;
  auto* fn = &bwd_kernel_sm80<Kernel, Traits::kNThreads>;
  constexpr int smem = Traits::kSmemBytes;
  if (smem > 48 * 1024) cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const int64_t ctas = static_cast<int64_t>(ws.grid_n) * p.batch * p.nheads_k;
  if (ctas <= 0) return;
  fn<<<dim3(static_cast<unsigned>(ctas)), dim3(Traits::kNThreads), smem, stream>>>(p, ws);
}

template <typename Traits, bool kCausal>
void dispatch_bwd_main_sm80(const BwdParams& p, const BwdWorkspacePtrs& ws, cudaStream_t stream) {
  const bool general_score = p.softcap > 0.f || p.alibi_slopes != nullptr;
  if constexpr (kCausal) {
    if (general_score) {
      launch_bwd_main_sm80<Traits, MaskCausal, ScoreGeneral>(p, ws, stream);
    } else {
      launch_bwd_main_sm80<Traits, MaskCausal, ScorePlain>(p, ws, stream);
    }
  } else {
    const bool local = p.window_left >= 0 || p.window_right >= 0;
    if (local) {
      if (general_score) {
        launch_bwd_main_sm80<Traits, MaskLocal, ScoreGeneral>(p, ws, stream);
      } else {
        launch_bwd_main_sm80<Traits, MaskLocal, ScorePlain>(p, ws, stream);
      }
    } else if (general_score) {
      launch_bwd_main_sm80<Traits, MaskNone, ScoreGeneral>(p, ws, stream);
    } else {
      launch_bwd_main_sm80<Traits, MaskNone, ScorePlain>(p, ws, stream);
    }
  }
}

// The whole backward for one tile. p.workspace holds the regions of bwd_workspace_sm80(); p.num_splits
// carries the number of dQ accumulator slices the host planned (1 unless deterministic).
template <typename Traits, bool kCausal>
void run_bwd_tile_sm80(const BwdParams& p, cudaStream_t stream) {
  using Element = typename Traits::Element;
  const int slices = p.num_splits > 1 ? p.num_splits : 1;
  const bool sinks = p.sinks != nullptr && p.dsinks != nullptr;
  const BwdWorkspaceSm80 layout =
      bwd_workspace_sm80(slices, p.nheads, p.total_q, Traits::kHeadDim, p.batch, p.seqlen_q, sinks);
  char* base = static_cast<char*>(p.workspace);
  BwdWorkspacePtrs ws;
  ws.dq_accum = reinterpret_cast<float*>(base + layout.dq_accum);
  ws.dpsum = reinterpret_cast<float*>(base + layout.dpsum);
  ws.slices = slices;
  ws.num_n_blocks = static_cast<int>((p.seqlen_k + Traits::kBlockN - 1) / Traits::kBlockN);
  ws.grid_n = p.deterministic ? slices : ws.num_n_blocks;
  float* sink_partial = sinks ? reinterpret_cast<float*>(base + layout.sink_partial) : nullptr;

  if (layout.dpsum > 0) cudaMemsetAsync(ws.dq_accum, 0, layout.dpsum, stream);
  const int prep_blocks = static_cast<int>((p.seqlen_q + kBwdPrepRows - 1) / kBwdPrepRows);
  const int64_t prep_ctas = static_cast<int64_t>(prep_blocks) * p.batch * p.nheads;
  if (prep_ctas > 0) {
    bwd_preprocess_kernel<Element><<<dim3(static_cast<unsigned>(prep_ctas)), dim3(kBwdPrepThreads), 0, stream>>>(
        p, ws.dpsum, sink_partial, prep_blocks);
  }
  if (ws.num_n_blocks > 0) dispatch_bwd_main_sm80<Traits, kCausal>(p, ws, stream);
  if (prep_ctas > 0) {
    bwd_convert_dq_kernel<Element><<<dim3(static_cast<unsigned>(prep_ctas)), dim3(kBwdPrepThreads), 0, stream>>>(
        p, ws.dq_accum, slices, Traits::kHeadDim, prep_blocks);
  }
  if (sinks) {
    const int64_t per_head = static_cast<int64_t>(p.batch) * prep_blocks;
    if (per_head > 0) {
      bwd_reduce_dsinks_kernel<kBwdPrepThreads><<<dim3(p.nheads), dim3(kBwdPrepThreads), 0, stream>>>(p.dsinks, sink_partial,
                                                                                     per_head);
    } else {
      cudaMemsetAsync(p.dsinks, 0, sizeof(float) * p.nheads, stream);
    }
  }
}

}  // namespace kern

// Entry point called by the generated TUs. kCausal: window (-1, 0) exactly; any other window runs the
// local mask of the non-causal instantiation. The host planner has already rejected head dims with no
// tile on this device, so the small branch only runs where its tile exists.
template <typename T, int kHeadDim, bool kCausal>
void run_bwd_sm80(const BwdParams& p, cudaStream_t stream) {
  constexpr TileBwdSm80 kLarge = bwd_tile_sm80(kHeadDim, false);
  constexpr TileBwdSm80 kSmall = bwd_tile_sm80(kHeadDim, true);
  using LargeTraits = kern::BwdTraitsSm80<kHeadDim, kLarge.block_m, kLarge.block_n, kLarge.warps, kLarge.q_stages, T>;
  if constexpr (kLarge == kSmall || kSmall.block_m == 0) {
    kern::run_bwd_tile_sm80<LargeTraits, kCausal>(p, stream);
  } else {
    using SmallTraits = kern::BwdTraitsSm80<kHeadDim, kSmall.block_m, kSmall.block_n, kSmall.warps, kSmall.q_stages, T>;
    if (bwd_tile_for_device_sm80(kHeadDim, kern::bwd_device_smem_optin_bytes()) == kLarge) {
      kern::run_bwd_tile_sm80<LargeTraits, kCausal>(p, stream);
    } else {
      kern::run_bwd_tile_sm80<SmallTraits, kCausal>(p, stream);
    }
  }
}

}  // namespace flashattn
