// Tile shapes of the sm80-path forward kernel per head dim. Plain C++ (no CUDA headers): the host
// planner reports them through flashattn_fwd_plan() and the launch template instantiates exactly these.
//
// One table per shared-memory class (SmemClassSm80: the per-block opt-in of sm86/sm89, of A100/A30,
// and of H100/H200 running the sm80 path as sm_90 SASS). Only head dims whose tile differs between
// classes get more than one instantiation, to keep compile time down.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/params.h"

// 1 when the sm80 path is built as sm_80 SASS + compute_80 PTX (FLASHATTN_ARCHS has 80: every sm80+ GPU),
// 0 when it is sm_90 SASS only (sm_90 devices, all in the 227 KB class: the forward and backward launch
// templates then instantiate that class's tiles alone, and the planner rejects other devices). Set by the
// build for the library's objects.
#ifndef FLASHATTN_SM80_CODE
#define FLASHATTN_SM80_CODE 1
#endif

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

// The shared-memory classes the tile tables are written for, by per-block opt-in bytes: sm86/sm89
// (99 KB), A100/A30 (163 KB), H100/H200 (227 KB; 228 KB per SM, so two 96 KB CTAs fit).
enum class SmemClassSm80 { k99KB, k163KB, k227KB };

constexpr SmemClassSm80 smem_class_sm80(size_t smem_optin_bytes) {
  return smem_optin_bytes >= 227 * 1024   ? SmemClassSm80::k227KB
         : smem_optin_bytes >= 163 * 1024 ? SmemClassSm80::k163KB
                                          : SmemClassSm80::k99KB;
}

// Register budget (255/thread, fp32 accumulators): per thread, O holds block_m*d/threads floats and the
// score tile block_m*block_n/threads floats. Every choice below was timed against its neighbours with
// tools/device_check.sh STEPS=sweep and bench/bench.py on an H200 (docs/kernels_sm80.md has the numbers).
// `short_rows`: the problem's query rows visit few keys on average (fwd_short_rows_sm80); only d224/d256
// on the 227 KB class pick a different tile for them. `local`: the problem runs a local-mask kernel
// (fwd_uses_local_mask_sm80).
constexpr TileSm80 fwd_tile_sm80(int head_dim, SmemClassSm80 cls, bool short_rows, bool local) {
  // d32, d64: 128x128, 4 warps (S = 128 + O = 32/64 floats per thread, 24 / 48 KB smem): a wide N
  // halves the per-block softmax, barriers and pipeline waits against the short QK^T. At d64 it
  // spills ~140 B (outside the MMA stream) and still beats 128x64 by 3-8% non-causal and 1-2% causal
  // from 2k keys; it loses 8% only at 512 causal keys, where it still runs 1.08x FA2.
  if (head_dim <= 64) return {128, 128, 4};
  // d96/d128: 128x64, 4 warps: O = 96/128 + S = 64 floats, 48 / 64 KB smem (2 CTAs per SM by
  // registers). 64x64/4w is ~20% slower, 128x128/8w 3-15% slower.
  // Local masks: 64x64 with 2 warps (the same 32 rows and registers per warp, 36 / 48 KB, 4 CTAs per
  // SM on the 227 KB class: the same 8 warps). A sliding window's band visits 1024 + 64 keys per row
  // instead of 1024 + 128 and masks 2 of 17 blocks instead of 4 of 18: +4% at (1024, 0) on an H200,
  // while unmasked and causal rows up to 8k keys run as fast as on 128x64/4w (-4% at 16k causal).
  // sm86/89 (99 KB) fit two such CTAs, the same 4 warps as one 128x64/4w CTA (unmeasured). On A100
  // (163 KB) three (6 warps) would replace two CTAs of 8 warps: it keeps 128x64/4w (unmeasured).
  if (head_dim <= 128) {
    return local && cls != SmemClassSm80::k163KB ? TileSm80{64, 64, 2} : TileSm80{128, 64, 4};
  }
  // d160/d192, 227 KB class: 64x64 with 4 warps (O = 80/96 + S = 32 floats per thread, 60 / 72 KB): two
  // CTAs per SM overlap each other's prologue and epilogue: 3-20% faster than 128x64/8w up to 2k keys,
  // within 2% at 16k, causal and not (H100, H200; docs/kernels_sm80.md). Elsewhere 128x64 with 8 warps
  // (O = 80/96 floats, 80 / 96 KB: fits the 99 KB of sm86/89 too; 4 warps x 128 rows would hold 160-192
  // O floats: spills).
  if (head_dim <= 192) return cls == SmemClassSm80::k227KB ? TileSm80{64, 64, 4} : TileSm80{128, 64, 8};
  // d224/d256, 227 KB class: two tiles. 64x64 with 4 warps (O = 112/128 floats, 84 / 96 KB) runs two
  // CTAs per SM, so one CTA's prologue and epilogue overlap the other's MMAs and uneven causal rows
  // balance: +4% non-causal at 512 keys, +14% / +10% / +6% / +2% causal at 512 / 1k / 2k / 8k keys
  // (H200). 128x64 with 8 warps (112 / 128 KB, one CTA per SM) reads each K/V block from L2 for twice
  // the rows: 2-5% faster once rows visit more keys than that. A100's 164 KB hold one 96 KB CTA only:
  // 128x64/8w always. sm86/89 cannot fit 128 KB: 64x64/4w always.
  if (cls == SmemClassSm80::k227KB) return short_rows ? TileSm80{64, 64, 4} : TileSm80{128, 64, 8};
  if (cls == SmemClassSm80::k163KB) return {128, 64, 8};
  return {64, 64, 4};
}

// Whether the query rows of a problem visit few keys on average (the short_rows tile): rows under a
// bottom-right diagonal (causal, or a right-bounded window with no left bound; row i of sq sees
// sk - sq + i + 1 keys) up to 4096 keys on average, other rows up to 1024 keys (the window's width when
// both sides are bounded). The two thresholds are the measured crossovers at d256 on an H200: uneven
// diagonal rows keep profiting from two CTAs per SM for longer.
constexpr bool fwd_short_rows_sm80(int64_t seqlen_q, int64_t seqlen_k, int window_left, int window_right) {
  if (window_left >= 0 && window_right >= 0) {
    const int64_t width = static_cast<int64_t>(window_left) + window_right + 1;
    return (width < seqlen_k ? width : seqlen_k) <= 1024;
  }
  if (window_right >= 0) {
    const int64_t avg = seqlen_k - seqlen_q / 2 + window_right;
    return avg <= 4096;
  }
  return seqlen_k <= 1024;
}

// Which instantiation of the "fwd" family serves a problem (the host's registry lookup and the launch
// template's dispatch both follow this). The kernels of one (dtype, head dim):
//   causal TU:     causal x {plain, softcap, alibi}
//   non-causal TU: none x plain, local x {plain, general}
// Softcap and ALiBi each get a causal kernel of their own: a kernel able to apply both issues the
// other's instructions under a false predicate in every key block (64 MUFU.TANH per thread and block for
// an ALiBi call: 0.87-0.93x of the plain causal kernel on an H200, 1.00x on its own kernel). The rare rest
// (both together, either one without causal) runs the local general kernel: window (-1, 0) is the causal
// mask, (-1, -1) no mask.
enum class FwdScoreSm80 { kPlain, kSoftcap, kAlibi, kGeneral };

constexpr FwdScoreSm80 fwd_score_sm80(const FwdParams& p) {
  const bool softcap = p.softcap > 0.f, alibi = p.alibi_slopes != nullptr;
  if (softcap && alibi) return FwdScoreSm80::kGeneral;
  if (softcap) return FwdScoreSm80::kSoftcap;
  return alibi ? FwdScoreSm80::kAlibi : FwdScoreSm80::kPlain;
}

// True when the causal TU serves p: the window (-1, 0) exactly, with at most one of softcap and ALiBi.
constexpr bool fwd_uses_causal_tu_sm80(const FwdParams& p) {
  return p.window_left < 0 && p.window_right == 0 && fwd_score_sm80(p) != FwdScoreSm80::kGeneral;
}

// True when p runs a local-mask kernel of the non-causal TU: a window other than (-1, 0), or softcap /
// ALiBi outside the causal TU's kernels.
constexpr bool fwd_uses_local_mask_sm80(const FwdParams& p) {
  return !fwd_uses_causal_tu_sm80(p) &&
         (p.window_left >= 0 || p.window_right >= 0 || fwd_score_sm80(p) != FwdScoreSm80::kPlain);
}

// The tile a forward problem runs on: the launch template and the host planner both call this.
constexpr TileSm80 fwd_tile_for_problem_sm80(int head_dim, size_t smem_optin_bytes, const FwdParams& p) {
  return fwd_tile_sm80(head_dim, smem_class_sm80(smem_optin_bytes),
                       fwd_short_rows_sm80(p.seqlen_q, p.seqlen_k, p.window_left, p.window_right),
                       fwd_uses_local_mask_sm80(p));
}

}  // namespace flashattn
