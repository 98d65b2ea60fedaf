// The sm80 backward's tile table and workspace rules (cuda/common/tile_bwd_sm80.h, plain C++): every tile
// fits its shared-memory class, the short-causal rule swaps in 64-row steps only where the class takes 128,
// and the dQ accumulator's padding follows the tile's block_m.
#include <gtest/gtest.h>

#include "cuda/common/tile_bwd_sm80.h"

namespace flashattn {
namespace {

constexpr size_t kKB = 1024;
constexpr int kHeadDims[] = {32, 64, 96, 128, 160, 192, 224, 256};
constexpr struct {
  SmemClassSm80 cls;
  size_t optin;
} kClasses[] = {{SmemClassSm80::k99KB, 99 * kKB}, {SmemClassSm80::k163KB, 163 * kKB}, {SmemClassSm80::k227KB, 227 * kKB}};

TEST(BwdTiles, EveryTileFitsItsClass) {
  for (int d : kHeadDims) {
    for (const auto& c : kClasses) {
      for (bool short_causal : {false, true}) {
        const TileBwdSm80 t = bwd_tile_sm80(d, c.cls, short_causal);
        if (t.block_m == 0) continue;
        EXPECT_LE(bwd_smem_bytes_sm80(d, t), c.optin) << "d" << d << " class " << c.optin / kKB << " KB";
        EXPECT_TRUE(t.block_m == 64 || t.block_m == 128) << "d" << d;
        EXPECT_EQ(t.warps, 8);
      }
    }
  }
  // Head dims the 99 KB class cannot hold (docs/kernels_sm80_bwd.md): none there, one elsewhere.
  for (int d : {192, 224, 256}) EXPECT_EQ(bwd_tile_for_device_sm80(d, 99 * kKB).block_m, 0) << "d" << d;
  for (int d : kHeadDims) EXPECT_GT(bwd_tile_for_device_sm80(d, 163 * kKB).block_m, 0) << "d" << d;
}

TEST(BwdTiles, ShortCausalRule) {
  EXPECT_TRUE(bwd_short_causal_sm80(true, 1));
  EXPECT_TRUE(bwd_short_causal_sm80(true, kBwdShortCausalRows));
  EXPECT_FALSE(bwd_short_causal_sm80(true, kBwdShortCausalRows + 1));
  EXPECT_FALSE(bwd_short_causal_sm80(false, 128));
  for (int d : kHeadDims) {
    for (const auto& c : kClasses) {
      const TileBwdSm80 base = bwd_tile_sm80(d, c.cls), shorter = bwd_tile_sm80(d, c.cls, true);
      // Only the row count may change, and only from 128 to 64.
      EXPECT_EQ(shorter.block_n, base.block_n);
      EXPECT_EQ(shorter.q_stages, base.q_stages);
      EXPECT_EQ(shorter.block_m, base.block_m == 128 ? 64 : base.block_m) << "d" << d;
    }
  }
  // d64 on an H100: 128 rows, 64 for a short causal problem; the same 64-row tile as the 99 KB class's.
  EXPECT_EQ(bwd_tile_for_device_sm80(64, 227 * kKB).block_m, 128);
  EXPECT_EQ(bwd_tile_for_device_sm80(64, 227 * kKB, true), bwd_tile_sm80(64, SmemClassSm80::k99KB));
  EXPECT_EQ(bwd_tile_for_device_sm80(128, 227 * kKB, true), bwd_tile_for_device_sm80(128, 227 * kKB));
}

TEST(BwdWorkspace, PaddingFollowsBlockM) {
  // Fixed lengths that fill whole blocks need no pad; others and varlen get one block per sequence.
  EXPECT_EQ(bwd_dq_pad_rows_sm80(false, 512, 128), 0);
  EXPECT_EQ(bwd_dq_pad_rows_sm80(false, 576, 128), 128);
  EXPECT_EQ(bwd_dq_pad_rows_sm80(false, 576, 64), 0);
  EXPECT_EQ(bwd_dq_pad_rows_sm80(true, 512, 64), 64);
  const BwdWorkspaceSm80 w = bwd_workspace_sm80(1, 16, 4 * 576, 64, 128, 4, 576, false, false);
  EXPECT_EQ(w.dq_pad_rows, 128);
  EXPECT_EQ(w.dq_rows, 4 * 576 + 4 * 128);
  EXPECT_EQ(w.dpsum % 256, 0u);
  EXPECT_GE(w.dpsum, static_cast<size_t>(16) * w.dq_rows * 64 * sizeof(float));
  EXPECT_EQ(w.total, w.sink_partial);  // no sinks: no partials
}

}  // namespace
}  // namespace flashattn
