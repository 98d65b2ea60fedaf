// The inference forward (KV cache, paged K/V, split-KV, PackGQA): what the host planner and the kernels
// agree on. Plain C++ (no CUDA headers): backend_cuda.cpp plans with it, the fwd_infer TUs include it.
//
// Everything here is a pure function of host-visible sizes (shapes, capacities, options, SM count), never
// of device metadata, so a plan made before a CUDA-graph capture stays valid for every replay.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/params.h"
#include "cuda/common/tile_sm80.h"

namespace flashattn {

// What the fwd_infer kernels take: the problem as the kernel sees it (PackGQA view applied, q possibly
// redirected to the rotated copy in the workspace) plus the split-KV layout of the fp32 partials.
struct FwdInferParams {
  FwdParams p;
  int32_t num_splits;     // CTAs per (m block, batch, head) along the keys; 1 = no split
  int32_t split_blocks;   // > 0: every split covers exactly this many key blocks (batch-invariant mode);
                          // 0: each sequence's own key blocks are divided evenly over num_splits
  int32_t write_partial;  // 1: write fp32 O and LSE partials (a combine follows); 0: write out/lse directly
  int32_t pack;           // PackGQA: query heads per KV head packed into the rows of one tile; 1 = not packed
  int32_t decode;         // 1: the 16-row decode kernel (use_decode_tile); 0: the 64-row kernel
  // Partials, in floats. Rows of a varlen q are addressed by global token index (batch stride 0).
  int64_t oa_split_stride, oa_batch_stride, oa_row_stride, oa_head_stride;
  int64_t la_split_stride, la_batch_stride, la_row_stride, la_head_stride;
  // PackGQA: tile row r of (batch, kv head) is token r / pack and query head kv_head * pack + r % pack;
  // these are the strides between neighbouring query heads of q, out, LSE and the partials.
  int64_t q_pack_stride, o_pack_stride, lse_pack_stride, oa_pack_stride, la_pack_stride;
};

// Tile of the inference kernel: 64 query rows (decode has few rows, PackGQA a group of heads), 4 warps,
// 128 keys per step up to d128 (S = 64 + O <= 64 floats per thread), 64 above. Shared memory is at most
// 96 KB (d256), so one table serves every sm8x/sm90 device.
constexpr TileSm80 fwd_infer_tile_sm80(int head_dim) {
  return head_dim <= 128 ? TileSm80{64, 128, 4} : TileSm80{64, 64, 4};
}

// The decode tile (fwd_decode_sm80.cuh) for problems of at most 16 tile rows: 4 warps share the 16 rows
// and split every key block (the 64-row tile's block_n) into 16-key slices, each warp with its own
// cp.async pipeline of (K, V) slices.
constexpr int kDecodeRows = 16;
constexpr int kDecodeWarps = 4;
constexpr int kDecodeSliceKeys = 16;

// Two (K, V) slice buffers per warp: one in flight while the other is used. Three (112 KB per CTA at d128)
// measured 1-2% slower at B >= 32 on H100 (decode suite, 32/8 heads, d128) and would not fit sm86/sm89.
constexpr int kDecodeStages = 2;

// Per warp: its Q tile and the stages' (K slice, V slice) buffers, 16-bit elements: 80 KB at d128 (two
// CTAs per SM by registers and shared memory; fits the 99 KB of sm86/sm89 too), 160 KB at d256.
constexpr size_t fwd_decode_smem_bytes_sm80(int head_dim) {
  return static_cast<size_t>(kDecodeWarps) * (kDecodeRows + kDecodeStages * 2 * kDecodeSliceKeys) * head_dim * 2;
}

// Batch-invariant mode splits every sequence into chunks of this many keys (a multiple of every
// block_n), whatever else is in the batch.
constexpr int kInvariantSplitKeys = 1024;
constexpr int kMaxSplitsSm80 = 256;  // the validator's bound on num_splits
constexpr int kMaxHeuristicSplits = 128;

// PackGQA: the query heads that share a KV head become consecutive rows of one M tile (token-major:
// row r is token r / g, head r % g), so each K/V tile is read once per KV head rather than once per
// query head: g times less K/V traffic in decode, at any query length (FA2 packs only single-token
// queries). Masks work on the token (mask.cuh's pack). Not with ALiBi (slope per head). Sinks are per
// head: without partials (the combine adds them per head) they are excluded.
inline bool use_pack_gqa(const FwdParams& p, bool write_partial) {
  if (p.head_ratio <= 1 || p.alibi_slopes != nullptr) return false;
  if (static_cast<int64_t>(p.seqlen_q) * p.head_ratio > (int64_t{1} << 30)) return false;  // rows stay int
  return write_partial || p.sinks == nullptr;
}

// The PackGQA view: one "head" per KV head whose rows are the g query heads of each token. Row strides
// stay the token strides; FwdInferParams' pack strides step between the packed heads.
inline FwdParams pack_gqa_view(const FwdParams& p) {
  FwdParams v = p;
  const int64_t g = p.head_ratio;
  v.nheads = p.nheads_k;
  v.head_ratio = 1;
  v.q_head_stride = g * p.q_head_stride;
  v.o_head_stride = g * p.o_head_stride;
  v.lse_head_stride = g * p.lse_head_stride;
  return v;
}

// Tile rows of one (batch, head of the view): query tokens times the PackGQA group when packing applies.
inline int64_t infer_tile_rows(const FwdParams& p) {
  return use_pack_gqa(p, true) ? static_cast<int64_t>(p.seqlen_q) * p.head_ratio : p.seqlen_q;
}

// The decode tile serves every problem whose tile rows fit it (packed or not: a problem packed only when
// splitting has fewer rows unpacked), where the device's per-block shared memory holds it (d > 128 needs
// more than sm86/sm89's 99 KB; the 64-row kernel runs there).
inline bool use_decode_tile(const FwdParams& p, size_t smem_optin_bytes) {
  return infer_tile_rows(p) <= kDecodeRows &&
         fwd_decode_smem_bytes_sm80(round_head_dim_sm80(p.head_dim)) <= smem_optin_bytes;
}

struct SplitDecision {
  int num_splits = 1;
  int split_blocks = 0;
  bool write_partial = false;
};

// FA2's rule with a tighter bar (docs/kernels_sm80_inference.md): with `ctas` work tiles and `slots` CTAs
// resident at once, no split when the tiles fill >= 80% of a wave; otherwise the smallest split count
// whose wave efficiency (ctas*s/slots over its ceiling) reaches 95% of the best (FA2: 85%), skipping
// counts that give the same blocks per split as the previous one. Decode at batch 1 is bound by how many
// CTAs stream K/V at once: at 32k keys, 85% picked 29 splits (232 CTAs on 264 slots), 95% picks 32 (256).
inline int num_splits_heuristic(int64_t ctas, int slots, int n_blocks, int max_splits) {
  if (ctas <= 0 || slots <= 0 || n_blocks < 2) return 1;
  if (ctas * 10 >= static_cast<int64_t>(slots) * 8) return 1;
  max_splits = max_splits < slots ? max_splits : slots;
  max_splits = max_splits < n_blocks ? max_splits : n_blocks;
  auto eff = [&](int s) {
    const double waves = static_cast<double>(ctas) * s / slots;
    const double full = static_cast<double>(static_cast<int64_t>(waves + 0.999999));
    return full > 0 ? waves / full : 0.0;
  };
  auto same = [&](int s) { return s > 1 && (n_blocks + s - 1) / s == (n_blocks + s - 2) / (s - 1); };
  double best = 0;
  for (int s = 1; s <= max_splits; ++s) {
    if (!same(s) && eff(s) > best) best = eff(s);
  }
  for (int s = 1; s <= max_splits; ++s) {
    if (!same(s) && eff(s) >= 0.95 * best) return s;
  }
  return 1;
}

// How one call splits. `p` is the caller's problem (before the PackGQA view); `num_sms` and
// `ctas_per_sm` describe the device. Depends on host-visible values only.
inline SplitDecision decide_splits(const FwdParams& p, int num_sms, int ctas_per_sm) {
  SplitDecision d;
  const int block_n = fwd_infer_tile_sm80(round_head_dim_sm80(p.head_dim)).block_n;
  const int64_t cap_k = p.seqlen_k > 0 ? p.seqlen_k : 1;  // capacity / max_seqlen_k
  const int n_blocks = static_cast<int>((cap_k + block_n - 1) / block_n);
  if (p.num_splits > 1) {
    d.num_splits = p.num_splits;
  } else if (p.num_splits == 0 && p.batch_invariant) {
    // Fixed chunks of kInvariantSplitKeys keys; enough grid splits for the longest possible sequence.
    d.split_blocks = kInvariantSplitKeys / block_n;
    d.num_splits = static_cast<int>((cap_k + kInvariantSplitKeys - 1) / kInvariantSplitKeys);
  } else if (p.num_splits == 0) {
    const int64_t rows = infer_tile_rows(p);
    const int64_t heads = use_pack_gqa(p, true) ? p.nheads_k : p.nheads;
    const int64_t ctas = static_cast<int64_t>(p.batch) * heads * ((rows + 63) / 64);
    d.num_splits = num_splits_heuristic(ctas, num_sms * ctas_per_sm, n_blocks, kMaxHeuristicSplits);
  }
  // Batch-invariant: always through the partials and the combine, so a sequence's bits do not depend on
  // whether the batch happened to need a split.
  d.write_partial = d.num_splits > 1 || p.batch_invariant;
  return d;
}

// Workspace of one call: [rotated q (dtype, total_q * h * d)] [O partials (fp32, splits * total_q * h * d)]
// [LSE partials (fp32, splits * total_q * h)], each 256-byte aligned.
struct InferWorkspace {
  size_t q_rot = 0, o_accum = 0, lse_accum = 0, bytes = 0;
};

inline size_t align256(size_t x) { return (x + 255) / 256 * 256; }

inline InferWorkspace infer_workspace(const FwdParams& p, const SplitDecision& d) {
  InferWorkspace w;
  const size_t rows = static_cast<size_t>(p.total_q) * static_cast<size_t>(p.nheads);
  size_t off = 0;
  if (p.rotary_dim > 0 && p.cache_seqlens != nullptr) {
    w.q_rot = off;
    off += align256(rows * static_cast<size_t>(p.head_dim) * 2);
  }
  if (d.write_partial) {
    w.o_accum = off;
    off += align256(static_cast<size_t>(d.num_splits) * rows * static_cast<size_t>(p.head_dim) * sizeof(float));
    w.lse_accum = off;
    off += align256(static_cast<size_t>(d.num_splits) * rows * sizeof(float));
  }
  w.bytes = off;
  return w;
}

}  // namespace flashattn
