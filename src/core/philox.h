// Dropout random numbers: Philox4x32-10, tile-independent (docs/dropout.md).
//
// The keep decision for score element (b, h, i, j) depends only on those four coordinates and on
// (seed, offset), never on tile shapes or thread layout, so every backend produces the same mask and
// the backward pass regenerates it.
#pragma once

#include <cstdint>

#include "core/platform.h"

namespace flashattn {

struct Philox4 {
  uint32_t x[4];
};

FLASHATTN_HOST_DEVICE inline uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Philox4x32 with 10 rounds (Salmon et al., SC'11), the generator of curand and torch.
FLASHATTN_HOST_DEVICE inline Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(kM0, ctr.x[0], &hi0);
    const uint32_t lo1 = mulhilo32(kM1, ctr.x[2], &hi1);
    Philox4 next;
    next.x[0] = hi1 ^ ctr.x[1] ^ k0;
    next.x[1] = lo1;
    next.x[2] = hi0 ^ ctr.x[3] ^ k1;
    next.x[3] = lo0;
    ctr = next;
    k0 += kW0;
    k1 += kW1;
  }
  return ctr;
}

// The 128 random bits shared by the 8 columns j = 8*g .. 8*g+7 of row i of head (b, h).
// Counter = (g, i, b * nheads + h, offset_lo); key = (seed_lo, seed_hi ^ offset_hi).
FLASHATTN_HOST_DEVICE inline Philox4 dropout_bits(uint64_t seed, uint64_t offset, int64_t bh, int64_t row,
                                                  int64_t col_group) {
  Philox4 c;
  c.x[0] = static_cast<uint32_t>(col_group);
  c.x[1] = static_cast<uint32_t>(row);
  c.x[2] = static_cast<uint32_t>(bh);
  c.x[3] = static_cast<uint32_t>(offset);
  return philox4x32_10(c, static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32) ^ static_cast<uint32_t>(offset >> 32));
}

// 16-bit random number of column j (j % 8 selects the half-word: word (j%8)/2, low half first).
FLASHATTN_HOST_DEVICE inline uint32_t dropout_u16(const Philox4& bits, int64_t col) {
  const int k = static_cast<int>(col & 7);
  return (bits.x[k >> 1] >> ((k & 1) * 16)) & 0xFFFFu;
}

// Keep threshold for drop probability p: element kept iff u16 < threshold.
inline uint32_t dropout_keep_threshold(float p) {
  double t = (1.0 - static_cast<double>(p)) * 65536.0 + 0.5;
  uint32_t ti = static_cast<uint32_t>(t);
  return ti < 1u ? 1u : (ti > 65536u ? 65536u : ti);
}

}  // namespace flashattn
