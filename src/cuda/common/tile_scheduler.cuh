// Maps a 1-D grid onto (m_block, batch, head) work tiles.
// - Consecutive CTAs share (batch, head): the CTAs resident at one time read the same K/V, so it is
//   fetched from HBM about once and re-read from L2 (at 16k keys, d128 a head's K+V is 8 MB).
// - A right bound (causal, or a window's right side): later query blocks see no fewer keys than
//   the first ones, so within a head the m_blocks run from the last to the first: the longest tiles start
//   first and the short ones fill the tail of the wave (LPT order). A sliding window's full-width
//   blocks all cost the same; its first blocks, cut by key 0, are the short ones. H200, d128 bf16,
//   windows (1024, 0) at 8k-16k, (256, 0) to (512, 0) at 1k-2k, (256, 256): 0.4-3.5% faster than
//   first-to-last. (Running every head's cut blocks after all full ones was 7-20% faster at 1k-2k but
//   1-5% slower at 8k and at d256: the late cut blocks re-read K/V from HBM.)
// A 1-D grid has no 65535 limit on batch * heads.
#pragma once

#include <cstdint>

#include "core/platform.h"

namespace flashattn {
namespace kern {

struct WorkTile {
  int m_block, batch, head;
};

struct TileSchedulerFwd {
  static int64_t num_ctas(int num_m_blocks, int batch, int nheads) {
    return static_cast<int64_t>(num_m_blocks) * batch * nheads;
  }
  FLASHATTN_DEVICE static WorkTile get(int num_m_blocks, int nheads, bool last_first) {
    const int idx = static_cast<int>(blockIdx.x);
    const int bh = idx / num_m_blocks;
    const int m = idx - bh * num_m_blocks;
    WorkTile t;
    t.m_block = last_first ? num_m_blocks - 1 - m : m;
    t.batch = bh / nheads;
    t.head = bh - t.batch * nheads;
    return t;
  }
};

}  // namespace kern
}  // namespace flashattn
