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
// score tile block_m*block_n/threads floats; 4 warps x 128 rows keeps O + S <= ~192 registers up to d128.
// Wider heads move to 8 warps (16 rows per warp) so O stays <= 128 floats per thread at d256.
constexpr TileSm80 fwd_tile_sm80(int head_dim, bool small_smem) {
  // d32/d64: 128x128, 4 warps. Small K/V rows make loads cheap; a wide N amortises the softmax row
  // reductions (S = 128 floats, O <= 64 floats per thread). 24 / 48 KB smem: 3-4 CTAs per SM.
  if (head_dim <= 64) return {128, 128, 4};
  // d96/d128: 128x64, 4 warps: O = 96/128 + S = 64 floats per thread (no spills), 48 / 64 KB smem
  // (3 CTAs per SM on H100, 1-2 on sm86). 128x128 would need S + O = 256 floats: spills.
  if (head_dim <= 128) return {128, 64, 4};
  // d160/d192: 128x64 with 8 warps: O = 80/96 floats, 80 / 96 KB smem: fits the 99 KB of sm86/89 too.
  if (head_dim <= 192) return {128, 64, 8};
  // d224/d256: 128x64, 8 warps: O = 112/128 floats, 112 / 128 KB smem (1 CTA of 8 warps on H100,
  // A100). sm86/89 cannot fit it in 99 KB: 64x64 with 4 warps (84 / 96 KB, O = 112/128 floats).
  if (small_smem) return {64, 64, 4};
  return {128, 64, 8};
}

// The large table is used when the device's per-block opt-in shared memory holds its tile.
constexpr TileSm80 fwd_tile_for_device_sm80(int head_dim, size_t smem_optin_bytes) {
  const TileSm80 large = fwd_tile_sm80(head_dim, false);
  return fwd_smem_bytes_sm80(head_dim, large) <= smem_optin_bytes ? large : fwd_tile_sm80(head_dim, true);
}

}  // namespace flashattn
