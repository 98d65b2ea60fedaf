// Tile shapes and workspace layout of the sm80-path backward. Plain C++ (no CUDA headers): the host
// planner sizes the workspace from it and the launch template instantiates exactly these tiles, so the
// two can never disagree.
//
// Shared memory of one CTA: Q and dO tiles (kBlockM x d, `q_stages` buffers each), K and V tiles
// (kBlockN x d), P and dS tiles (kBlockM x kBlockN), all 16-bit, and the fp32 LSE and D of each stage's
// rows. One table per shared-memory class (SmemClassSm80 in tile_sm80.h: 99 KB sm86/sm89, 163 KB
// A100/A30, 227 KB H100/H200 running sm_90 SASS); a head dim with no tile in any class that fits the
// device has none (block_m == 0): NOT_SUPPORTED.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "cuda/common/tile_sm80.h"

namespace flashattn {

struct TileBwdSm80 {
  int block_m;   // query rows per inner step (0: no tile fits)
  int block_n;   // keys per CTA (the dK/dV rows a CTA owns)
  int warps;     // 8 everywhere: a 4 x 2 warp grid for all five products
  int q_stages;  // 2: the next Q/dO tile loads while this one is used; 1: loaded after its last use
  constexpr bool operator==(const TileBwdSm80& o) const {
    return block_m == o.block_m && block_n == o.block_n && warps == o.warps && q_stages == o.q_stages;
  }
};

constexpr size_t bwd_smem_bytes_sm80(int head_dim, TileBwdSm80 t) {
  return static_cast<size_t>(2 * t.q_stages * t.block_m * head_dim + 2 * t.block_n * head_dim +
                             2 * t.block_m * t.block_n) * 2 +
         static_cast<size_t>(t.q_stages) * 2 * t.block_m * 4;
}

// Register budget (255 per thread, 256 threads): dK and dV accumulate in registers for the whole CTA,
// 2 * block_n * d / 256 floats, plus S and dP (block_m * block_n / 256 each). block_n = 128 keeps that
// <= 128 + 64 up to d128; wider heads drop to block_n = 64 (dK + dV = 128 floats at d256).
// block_m is the k extent of the dK/dV += ^T products and the M of S, dP and dQ. 64 rows everywhere
// but d64, where 128 rows (FA2's choice there) halve the per-step work outside the MMAs (barriers, row
// statistics, Q/dO copies) per MMA: 4.0 instructions per HMMA in the loop against 4.65. S and dP then
// take 128 registers and ptxas spills 220 bytes (plain score; 5 stores and about one load per step,
// by ncu) to 584 bytes (softcap/ALiBi). Measured on H100 (bf16, flashattn-bench --op bwd, one run):
// +6% at b16 s1k h32, +7% at b4 s4k and b2 s8k causal, -3% at b32 s512 causal (2.5 steps per CTA).
constexpr TileBwdSm80 bwd_tile_sm80(int head_dim, SmemClassSm80 cls) {
  const bool small_smem = cls == SmemClassSm80::k99KB;
  // d32: 64 KB. d64: 160 KB with 128 rows (fits A100's 163 KB); 96 KB with 64 rows on sm86/89.
  if (head_dim <= 32) return {64, 128, 8, 2};
  if (head_dim <= 64) return small_smem ? TileBwdSm80{64, 128, 8, 2} : TileBwdSm80{128, 128, 8, 2};
  // d96: 128 KB large; 88 KB small with 64 keys per CTA.
  if (head_dim <= 96) return small_smem ? TileBwdSm80{64, 64, 8, 2} : TileBwdSm80{64, 128, 8, 2};
  // d128: 160 KB large (fits A100's 163 KB); 80 KB small, single-buffered Q/dO.
  if (head_dim <= 128) return small_smem ? TileBwdSm80{64, 64, 8, 1} : TileBwdSm80{64, 128, 8, 2};
  // d160: 136 KB large; 96 KB small single-buffered.
  if (head_dim <= 160) return small_smem ? TileBwdSm80{64, 64, 8, 1} : TileBwdSm80{64, 64, 8, 2};
  // d192: 160 KB large. Small would need 112 KB even single-buffered: not supported on sm86/89.
  if (head_dim <= 192) return small_smem ? TileBwdSm80{0, 0, 0, 0} : TileBwdSm80{64, 64, 8, 2};
  // d224/d256: none on sm86/89; single-buffered Q/dO (128 / 144 KB) on A100's 163 KB; double-buffered
  // (188 / 208 KB) where 227 KB allow, so the next block's Q/dO loads overlap all five products.
  if (small_smem) return TileBwdSm80{0, 0, 0, 0};
  return cls == SmemClassSm80::k163KB ? TileBwdSm80{64, 64, 8, 1} : TileBwdSm80{64, 64, 8, 2};
}

// Short causal problems (the causal kernels, seqlen_q <= 512) step through 64 query rows where the
// class's tile takes 128 (d64): a CTA there has 2.5 steps of 128 rows on average, so the first Q/dO
// load it waits for (half as large with 64 rows) and the diagonal step weigh most. Still one CTA per SM
// (registers). H100, fp16 h32 d64, 64 against 128 rows: b32 s512 causal -1.6% time; b16 s1k causal
// +1.8%, b32 s512 non-causal +5%.
constexpr int64_t kBwdShortCausalRows = 512;
constexpr bool bwd_short_causal_sm80(bool causal_kernel, int64_t seqlen_q) {
  return causal_kernel && seqlen_q <= kBwdShortCausalRows;
}
constexpr TileBwdSm80 bwd_tile_sm80(int head_dim, SmemClassSm80 cls, bool short_causal) {
  TileBwdSm80 t = bwd_tile_sm80(head_dim, cls);
  if (short_causal && t.block_m == 128) t.block_m = 64;
  return t;
}

// The tile of the largest class whose table fits the device's opt-in shared memory (none: block_m 0).
constexpr TileBwdSm80 bwd_tile_for_device_sm80(int head_dim, size_t smem_optin_bytes, bool short_causal = false) {
  for (SmemClassSm80 c : {SmemClassSm80::k227KB, SmemClassSm80::k163KB, SmemClassSm80::k99KB}) {
    const TileBwdSm80 t = bwd_tile_sm80(head_dim, c);
    if (t.block_m > 0 && bwd_smem_bytes_sm80(head_dim, t) <= smem_optin_bytes) {
      return bwd_tile_sm80(head_dim, c, short_causal);
    }
  }
  return TileBwdSm80{0, 0, 0, 0};
}

// Rows per CTA of the preprocess (D = rowsum(dO * O)) and dQ-convert kernels.
constexpr int kBwdPrepRows = 32;

// Number of dQ accumulator slices. Non-deterministic: 1 (every key-block CTA adds into it with fp32
// atomics). Deterministic: each CTA owns one slice and walks its key blocks in a fixed order; the
// convert kernel sums the slices in slice order. Enough CTAs to fill the GPU twice, never more than the
// key blocks.
inline int bwd_dq_slices_sm80(bool deterministic, int num_sms, int64_t batch, int nheads_k, int64_t seqlen_k,
                              int block_n) {
  if (!deterministic) return 1;
  const int64_t n_blocks = seqlen_k > 0 ? (seqlen_k + block_n - 1) / block_n : 1;
  const int64_t bh = batch * nheads_k > 0 ? batch * nheads_k : 1;
  int64_t s = (2 * static_cast<int64_t>(num_sms) + bh - 1) / bh;
  if (s > n_blocks) s = n_blocks;
  return s < 1 ? 1 : static_cast<int>(s);
}

// Padding rows per sequence in the dQ accumulator: one block where a sequence may end inside a block
// (varlen, or a fixed length that is not a multiple of block_m), so that its last, partial block owns a
// whole block (sequence b's block m starts at row q_start + b * pad + m * block_m); none when every
// sequence fills whole blocks (at seqlen 512 with 128-row blocks the padding was a quarter of the
// accumulator's memory, memset and convert traffic).
// Inside a block the accumulator is in the main kernel's fragment order (add_dq in mainloop_bwd_sm80.cuh).
constexpr int bwd_dq_pad_rows_sm80(bool varlen_q, int64_t seqlen_q, int block_m) {
  return varlen_q || seqlen_q % block_m != 0 ? block_m : 0;
}
// Rows of one head's dQ accumulator.
constexpr int64_t bwd_dq_rows_sm80(int64_t total_q, int64_t batch, int pad_rows) { return total_q + batch * pad_rows; }
// Accumulator row of sequence `batch`'s first query in slice `slice`, head `head` (the padding rule above);
// used by the main kernel and the convert kernel alike.
constexpr int64_t bwd_dq_seq_row0_sm80(int slice, int nheads, int head, int64_t dq_rows, int64_t q_start, int batch,
                                       int pad_rows) {
  return (static_cast<int64_t>(slice) * nheads + head) * dq_rows + q_start + static_cast<int64_t>(batch) * pad_rows;
}

// Workspace carved by bwd(): every region 256-byte aligned, offsets in bytes.
struct BwdWorkspaceSm80 {
  size_t dq_accum;     // fp32 (slices, nheads, bwd_dq_rows_sm80, head_dim_rounded)
  size_t dpsum;        // fp32 (nheads, total_q): D = rowsum(dO * O)
  size_t sink_partial; // fp32 (nheads, batch * prep_blocks): per-CTA partial sums of dsinks
  size_t total;
  int dq_pad_rows;     // bwd_dq_pad_rows_sm80
  int64_t dq_rows;     // bwd_dq_rows_sm80: one head's accumulator rows
};

constexpr size_t bwd_align256(size_t x) { return (x + 255) / 256 * 256; }

inline BwdWorkspaceSm80 bwd_workspace_sm80(int slices, int nheads, int64_t total_q, int head_dim_rounded, int block_m,
                                           int64_t batch, int64_t seqlen_q, bool varlen_q, bool sinks) {
  BwdWorkspaceSm80 w{};
  w.dq_pad_rows = bwd_dq_pad_rows_sm80(varlen_q, seqlen_q, block_m);
  w.dq_rows = bwd_dq_rows_sm80(total_q, batch, w.dq_pad_rows);
  const size_t dq = static_cast<size_t>(slices) * nheads * w.dq_rows * head_dim_rounded * sizeof(float);
  const size_t dps = static_cast<size_t>(nheads) * total_q * sizeof(float);
  const int64_t prep_blocks = (seqlen_q + kBwdPrepRows - 1) / kBwdPrepRows;
  const size_t sp = sinks ? static_cast<size_t>(nheads) * batch * prep_blocks * sizeof(float) : 0;
  w.dq_accum = 0;
  w.dpsum = bwd_align256(dq);
  w.sink_partial = w.dpsum + bwd_align256(dps);
  w.total = w.sink_partial + bwd_align256(sp);
  return w;
}

}  // namespace flashattn
