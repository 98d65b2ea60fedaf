// Tile shapes of the sm80-path forward kernel per head dim. Plain C++ (no CUDA headers): the host planner
// reports them through flashattn_fwd_plan() and the launch template instantiates exactly these.
//
// Two tables: "large" for GPUs that give a block >= 160 KB of shared memory (A100/A30 sm80, H100/H200
// running the sm80 path as sm_90 SASS: 163 / 227 KB) and "small" for sm86/sm89 (99 KB per block). Only
// the head dims whose large tile does not fit 99 KB get a second instantiation, to keep compile time down.
#pragma once

#include <cstddef>

namespace flashattn {

struct TileSm80 {
  int block_m;  // query rows per CTA
  int block_n;  // keys per mainloop step
  int warps;    // warps per CTA; every warp owns block_m / warps rows (16 per MMA row tile)
  constexpr bool operator==(const TileSm80& o) const {
    return block_m == o.block_m && block_n == o.block_n && warps == o.warps;
  }
};

// Instantiated head dims; a problem runs on the smallest one >= its head dim (columns predicated off).
constexpr int kFwdHeadDimsSm80[] = {32, 64, 96, 128, 160, 192, 224, 256};

constexpr int round_head_dim_sm80(int d) {
  for (int hd : kFwdHeadDimsSm80) {
    if (d <= hd) return hd;
  }
  return 0;
}

// Shared memory of one CTA: Q tile (reused for the O tile in the epilogue) + one K tile + one V tile,
// 16-bit elements.
constexpr size_t fwd_smem_bytes_sm80(int head_dim, TileSm80 t) {
  return static_cast<size_t>(t.block_m + 2 * t.block_n) * head_dim * 2;
}

// Register budget (255/thread, fp32 accumulators): per thread, O holds block_m*d/threads floats and the
// score tile block_m*block_n/threads floats; 4 warps x 128 rows keeps O + S <= 192 registers up to d128.
// Wider heads move to 8 warps (16 rows per warp) so O stays <= 128 floats per thread at d256.
// Every choice below was timed against its neighbours with tools/device_check.sh STEPS=sweep
// (docs/kernels_sm80.md has the numbers).
constexpr TileSm80 fwd_tile_sm80(int head_dim, bool small_smem) {
  // d32: 128x128, 4 warps (S = 128 + O = 32 floats per thread, 24 KB smem): a wide N amortises the
  // per-block softmax and barriers over the short QK^T. Measured on H200: 128x64 is 5-12% slower.
  if (head_dim <= 32) return {128, 128, 4};
  // d64..d128: 128x64, 4 warps: S = 64 + O <= 128 floats per thread, 32-64 KB smem (2 CTAs per SM by
  // registers). Measured on H200 at d64: 128x128 (S = 128 floats) is 10-15% slower, 8 warps 20-30%
  // slower (each warp re-reads all of K and V from shared memory for only 16 rows).
  if (head_dim <= 128) return {128, 64, 4};
  // d160/d192: 128x64 with 8 warps: O = 80/96 floats, 80 / 96 KB smem: fits the 99 KB of sm86/89 too.
  if (head_dim <= 192) return {128, 64, 8};
  // d224/d256: 128x64, 8 warps: O = 112/128 floats, 112 / 128 KB smem (1 CTA of 8 warps on H100,
  // A100). Measured on H200 at d256: 64x64/4w (2 CTAs per SM) is 4-8% slower except causal at 1k,
  // 128x32/8w 15-20% slower. sm86/89 cannot fit 128 KB in 99 KB: 64x64 with 4 warps (84 / 96 KB).
  if (small_smem) return {64, 64, 4};
  return {128, 64, 8};
}

// The large table is used when the device's per-block opt-in shared memory holds its tile.
constexpr TileSm80 fwd_tile_for_device_sm80(int head_dim, size_t smem_optin_bytes) {
  const TileSm80 large = fwd_tile_sm80(head_dim, false);
  return fwd_smem_bytes_sm80(head_dim, large) <= smem_optin_bytes ? large : fwd_tile_sm80(head_dim, true);
}

}  // namespace flashattn
