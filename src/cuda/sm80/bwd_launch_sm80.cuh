// Launch template of the sm80-path backward, included only by the generated TUs (kernels.toml, family
// "bwd"). One TU = (dtype, head dim, causal); inside it the mask (none/local) and the score policy
// (plain/general) are run-time switches over template instantiations, and each distinct tile of the
// shared-memory classes (tile_bwd_sm80.h) is instantiated.
// Sequence on the stream, no allocation, no host sync:
//   memset dq_accum -> preprocess (D, dsinks partials) -> main kernel -> convert dQ -> reduce dsinks.
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

#include "core/params.h"
#include "cuda/common/bwd_preprocess.cuh"
#include "cuda/common/device_smem.cuh"
#include "cuda/common/tile_bwd_sm80.h"
#include "cuda/sm80/bwd_kernel_sm80.cuh"

namespace flashattn {

namespace kern {

template <typename Traits, typename Mask, typename Score>
void launch_bwd_main_sm80(const BwdParams& p, const BwdWorkspacePtrs& ws, cudaStream_t stream) {
  using Kernel = BwdKernelSm80<Traits, Mask, Score>;
  auto* fn = &bwd_kernel_sm80<Kernel, Traits::kNThreads>;
  constexpr int smem = Traits::kSmemBytes;
  static_assert(smem == bwd_smem_bytes_sm80(Traits::kHeadDim, TileBwdSm80{Traits::kBlockM, Traits::kBlockN,
                                                                          Traits::kNWarps, Traits::kQStages}),
                "the planner's shared-memory size must match the kernel's");
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
      bwd_workspace_sm80(slices, p.nheads, p.total_q, Traits::kHeadDim, Traits::kBlockM, p.batch, p.seqlen_q,
                         p.cu_seqlens_q != nullptr, sinks);
  char* base = static_cast<char*>(p.workspace);
  BwdWorkspacePtrs ws;
  ws.dq_accum = reinterpret_cast<float*>(base + layout.dq_accum);
  ws.dq_pad_rows = layout.dq_pad_rows;
  ws.dq_rows = layout.dq_rows;
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
  const int dq_blocks = static_cast<int>((p.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM);
  const int64_t dq_ctas = static_cast<int64_t>(dq_blocks) * p.batch * p.nheads;
  if (dq_ctas > 0) {
    bwd_convert_dq_kernel<Element, typename Traits::TiledMmaDq, Traits::kBlockM, Traits::kHeadDim>
        <<<dim3(static_cast<unsigned>(dq_ctas)), dim3(kBwdPrepThreads), 0, stream>>>(p, ws.dq_accum, slices,
                                                                                    ws.dq_rows, ws.dq_pad_rows, dq_blocks);
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
// local mask of the non-causal instantiation. One instantiation per distinct tile of the shared-memory
// classes (classes with the same tile share it), plus a causal kernel's short-problem tile where it
// differs (bwd_short_causal_sm80); the host planner has already rejected head dims with no tile on this
// device, so only classes whose tile exists are launched.
template <typename T, int kHeadDim, bool kCausal, SmemClassSm80 kClass, bool kShortCausal>
void run_bwd_tile_of_class_sm80(const BwdParams& p, cudaStream_t stream) {
  constexpr TileBwdSm80 kTile = bwd_tile_sm80(kHeadDim, kClass, kShortCausal);
  if constexpr (kTile.block_m > 0) {
    using Traits = kern::BwdTraitsSm80<kHeadDim, kTile.block_m, kTile.block_n, kTile.warps, kTile.q_stages, T>;
    kern::run_bwd_tile_sm80<Traits, kCausal>(p, stream);
  }
}

template <typename T, int kHeadDim, bool kCausal, SmemClassSm80 kClass>
void run_bwd_class_sm80(const BwdParams& p, cudaStream_t stream) {
  if constexpr (kCausal && !(bwd_tile_sm80(kHeadDim, kClass, true) == bwd_tile_sm80(kHeadDim, kClass))) {
    if (bwd_short_causal_sm80(true, p.seqlen_q)) {
      run_bwd_tile_of_class_sm80<T, kHeadDim, kCausal, kClass, true>(p, stream);
      return;
    }
  }
  run_bwd_tile_of_class_sm80<T, kHeadDim, kCausal, kClass, false>(p, stream);
}

template <typename T, int kHeadDim, bool kCausal>
void run_bwd_sm80(const BwdParams& p, cudaStream_t stream) {
  // A build without sm_80 code runs only on sm_90 devices, all of the 227 KB class (tile_sm80.h): the
  // other classes' tiles are not compiled, as in the forward.
  if constexpr (!FLASHATTN_SM80_CODE) {
    run_bwd_class_sm80<T, kHeadDim, kCausal, SmemClassSm80::k227KB>(p, stream);
  } else {
    const TileBwdSm80 tile = bwd_tile_for_device_sm80(kHeadDim, kern::device_smem_optin_bytes());
    if (tile == bwd_tile_sm80(kHeadDim, SmemClassSm80::k227KB)) {
      run_bwd_class_sm80<T, kHeadDim, kCausal, SmemClassSm80::k227KB>(p, stream);
    } else if (tile == bwd_tile_sm80(kHeadDim, SmemClassSm80::k163KB)) {
      run_bwd_class_sm80<T, kHeadDim, kCausal, SmemClassSm80::k163KB>(p, stream);
    } else {
      run_bwd_class_sm80<T, kHeadDim, kCausal, SmemClassSm80::k99KB>(p, stream);
    }
  }
}

}  // namespace flashattn
