// Dropout mask tiles (docs/dropout.md): one Philox4x32-10 call per 8 consecutive keys of a row, so the mask
// of element (b, h, i, j) depends only on those coordinates and (seed, offset), never on the tiling.
#pragma once

#include <cstdint>

#include "core/philox.h"
#include "cpu/cpu_common.h"

namespace flashattn {
namespace cpu {

// Writes keep(i, j) * rescale (or 0) for the query rows [i0, i0 + m) and keys [j0, j0 + n) into a
// rows x cols tile; every other element of the tile is set to 0. Tile element (r, c) is (i0 + r, j0 + c),
// or (i0 + c, j0 + r) when `keys_are_rows` (the transposed score tiles of the forward pass and dq pass).
// j0 must be a multiple of 8 (key blocks are).
inline void dropout_mask_tile(const ScoreOpts& o, int64_t bh, int64_t i0, int m, int64_t j0, int n,
                              bool keys_are_rows, float* mask, int64_t ld, int rows, int cols) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) mask[r * ld + c] = 0.f;
  for (int qi = 0; qi < m; ++qi) {
    for (int g = 0; g < n; g += 8) {
      const Philox4 bits = dropout_bits(o.seed, o.offset, bh, i0 + qi, (j0 + g) >> 3);
      const int cnt = n - g < 8 ? n - g : 8;
      for (int t = 0; t < cnt; ++t) {
        const float keep = dropout_u16(bits, j0 + g + t) < o.keep_threshold ? o.rescale : 0.f;
        if (keys_are_rows) mask[(g + t) * ld + qi] = keep; else mask[qi * ld + g + t] = keep;
      }
    }
  }
}

// x *= mask over a rows x cols tile (same leading dimension).
inline void apply_mask(float* x, const float* mask, int64_t ld, int rows, int cols) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) x[r * ld + c] *= mask[r * ld + c];
}

}  // namespace cpu
}  // namespace flashattn
