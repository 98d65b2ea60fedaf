// KV-cache helpers: the in-place append of k_new / v_new and rotary embedding (docs/semantics.md).
#pragma once

#include <cstdint>

#include "core/params.h"
#include "cpu/cpu_common.h"

namespace flashattn {
namespace cpu {

// Rotates the first rotary_dim entries of the fp32 row x by the angles of row `pos` of rotary_cos/sin
// (interleaved pairs (2r, 2r+1) or NeoX pairs (r, r + rotary_dim/2)). pos is clamped to the table.
void rotate_row(const FwdParams& p, float* x, int64_t pos);

// Position of query row i of sequence b in the rotary table: every row at cache_seqlens[b] unless the
// attention is causal or local, then cache_seqlens[b] + i (as FA2).
inline int64_t query_rotary_pos(const FwdParams& p, const ScoreOpts& o, int b, int64_t i) {
  return static_cast<int64_t>(p.cache_seqlens[b]) + (has_window(o) ? i : 0);
}

inline bool rotates_queries(const FwdParams& p) {
  return p.cache_seqlens && p.rotary_dim > 0 && p.rotary_cos && p.rotary_sin;
}

// Appends token t of sequence b (all kv heads) into the cache at position cache_seqlens[b] + t; k is
// rotated when rotary is on. `row` is fp32 scratch of head_dim floats. Positions outside the cache's
// capacity are skipped (the validator rejects them; this keeps a bad device value from writing out of bounds).
void append_token(const FwdParams& p, int b, int64_t t, float* row);

}  // namespace cpu
}  // namespace flashattn
