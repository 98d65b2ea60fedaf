// Maps a 1-D grid onto (m_block, batch, head) work tiles.
// - Consecutive CTAs share (batch, head): the CTAs resident at one time read the same K/V, so it is
//   fetched from HBM about once and re-read from L2 (at 16k keys, d128 a head's K+V is 8 MB).
// - Causal: within a head the m_blocks run from the last (the most key blocks) to the first, so the
//   longest tiles start first and the short ones fill the tail of the wave (LPT order).
// A 1-D grid has no 65535 limit on batch * heads.
#pragma once

#include <cstdint>

#include "core/platform.h"

namespace flashattn {
namespace kern {

struct WorkTile {
  int m_block, batch, head;
};

template <bool kLongestFirst>
struct TileSchedulerFwd {
  static int64_t num_ctas(int num_m_blocks, int batch, int nheads) {
    return static_cast<int64_t>(num_m_blocks) * batch * nheads;
  }
  FLASHATTN_DEVICE static WorkTile get(int num_m_blocks, int nheads) {
    const int idx = static_cast<int>(blockIdx.x);
    const int bh = idx / num_m_blocks;
    const int m = idx - bh * num_m_blocks;
    WorkTile t;
    t.m_block = kLongestFirst ? num_m_blocks - 1 - m : m;
    t.batch = bh / nheads;
    t.head = bh - t.batch * nheads;
    return t;
  }
};

}  // namespace kern
}  // namespace flashattn
