// Tile helpers shared by the forward and backward passes: packing rows of q/k/v (any dtype, dense or
// paged) into fp32 tiles, and writing the causal / local mask into score tiles.
#pragma once

#include <cstdint>

#include "cpu/cpu_common.h"
#include "cpu/cpu_kernels.h"

namespace flashattn {
namespace cpu {

// Packs `count` rows (row r at src + offsets(r) elements) as the columns of a transposed tile:
// dst[k * ld + r] = scale * row_r[k] for k < dp (zero past head_dim); columns [count, cols) are zeroed.
// `row` is fp32 scratch of dp floats; `prep(r, row)` may edit the fp32 row first (rotary).
template <typename OffsetFn, typename PrepFn>
void pack_transposed(const Kernels& kn, const void* src, DType t, int d, int dp, int count, int cols,
                     float scale, OffsetFn offset, PrepFn prep, float* row, float* dst, int64_t ld) {
  const size_t es = dtype_size(t);
  for (int r = 0; r < count; ++r) {
    kn.load_row(static_cast<const char*>(src) + offset(r) * es, t, d, dp, row);
    prep(r, row);
    for (int k = 0; k < dp; ++k) dst[k * ld + r] = row[k] * scale;
  }
  for (int k = 0; k < dp; ++k)
    for (int r = count; r < cols; ++r) dst[k * ld + r] = 0.f;
}

// Packs `count` rows into a row-major tile dst[r * dp + k] (zero past head_dim).
template <typename OffsetFn>
void pack_rows(const Kernels& kn, const void* src, DType t, int d, int dp, int count, OffsetFn offset,
               float* dst) {
  const size_t es = dtype_size(t);
  for (int r = 0; r < count; ++r) kn.load_row(static_cast<const char*>(src) + offset(r) * es, t, d, dp, dst + r * dp);
}

// Prefetches `count` rows into L2 ahead of their pack. Rows of a (b, s, h, d) tensor sit a full token
// stride apart (often 4 KB or more), so each one starts on a new page the hardware prefetcher does not
// cross: without this every row costs a TLB and cache miss while the GEMMs wait.
template <typename OffsetFn>
void prefetch_rows(const void* src, DType t, int d, int count, OffsetFn offset) {
  const size_t es = dtype_size(t);
  const size_t bytes = d * es;
  for (int r = 0; r < count; ++r) {
    const char* row = static_cast<const char*>(src) + offset(r) * es;
    for (size_t x = 0; x < bytes; x += 64) __builtin_prefetch(row + x, 0, 2);
  }
}

// Transposed score tile (row r = key j0 + r, column c = query row i0 + c): sets every element the window
// hides to -inf. Row j is seen by query rows i in [j - off - wr, j - off + wl].
inline void mask_keys_by_row(const ScoreOpts& o, float* st, int64_t ld, int64_t j0, int n, int64_t i0, int cols,
                             int64_t off) {
  for (int r = 0; r < n; ++r) {
    const int64_t j = j0 + r;
    const int64_t lo = o.wr >= 0 ? clamp_i64(j - off - o.wr - i0, 0, cols) : 0;
    const int64_t hi = o.wl >= 0 ? clamp_i64(j - off + o.wl - i0 + 1, 0, cols) : cols;
    float* row = st + r * ld;
    for (int64_t c = 0; c < cols; ++c)
      if (c < lo || c >= hi) row[c] = -kInf;
  }
}

// Score tile (row r = query i0 + r, column c = key j0 + c): hides keys outside the window and keys >= sk
// (tile padding). Row i sees keys in [i + off - wl, i + off + wr] within [0, sk).
inline void mask_queries_by_row(const ScoreOpts& o, float* s, int64_t ld, int64_t i0, int m, int64_t j0, int cols,
                                int64_t off, int64_t sk) {
  for (int r = 0; r < m; ++r) {
    const int64_t i = i0 + r;
    const int64_t lo = o.wl >= 0 ? clamp_i64(i + off - o.wl - j0, 0, cols) : 0;
    int64_t hi = o.wr >= 0 ? clamp_i64(i + off + o.wr - j0 + 1, 0, cols) : cols;
    hi = min64(hi, clamp_i64(sk - j0, 0, cols));
    float* row = s + r * ld;
    for (int64_t c = 0; c < cols; ++c)
      if (c < lo || c >= hi) row[c] = -kInf;
  }
}

}  // namespace cpu
}  // namespace flashattn
