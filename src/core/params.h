// Normalised problem description shared by every backend (CPU, sm75, sm80, sm90).
//
// The C API validates its arguments and fills these plain structs; backends never see the C structs.
// They are POD and free of CUDA headers, so host code (g++) and kernels (nvcc) use the same layout and a
// kernel can take them by value. All strides are in elements, all offsets are int64.
#pragma once

#include <cstdint>

#include "core/platform.h"

namespace flashattn {

enum class DType : int32_t { kInvalid = 0, kFP32 = 1, kFP16 = 2, kBF16 = 3, kInt32 = 4, kInt64 = 5 };

// Everything a forward attention kernel needs. Varlen, paged and KV-cache forms are all expressed here:
// a backend reads per-sequence lengths and offsets through seq_info() below, never by itself.
struct FwdParams {
  DType dtype;     // of q, k, v, out (k_new, v_new, rotary cos/sin too)
  int32_t batch;   // number of sequences
  int32_t nheads;  // query heads
  int32_t nheads_k;
  int32_t head_ratio;  // nheads / nheads_k: query head h reads kv head h / head_ratio
  int32_t head_dim;
  int64_t seqlen_q;  // fixed-length: the query length; varlen: max_seqlen_q (an upper bound)
  int64_t seqlen_k;  // fixed-length: the key length; varlen: max_seqlen_k; paged: max_pages * page_size
  int64_t total_q;   // rows of q: batch * seqlen_q, or total tokens for varlen
  int64_t total_k;   // rows of k for dense varlen (bounds cu_seqlens_k reads)
  int32_t batch_k;   // batch rows of dense k/v (the cache's rows when cache_batch_idx is used)

  // Tensors. For varlen, batch strides are 0 and offsets come from cu_seqlens.
  const void* q;
  int64_t q_batch_stride, q_row_stride, q_head_stride;
  const void* k;  // paged: (num_pages, page_size, hk, d); batch stride = page stride
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  const void* v;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  void* out;
  int64_t o_batch_stride, o_row_stride, o_head_stride;
  // LSE, fp32, natural log. Fixed: (b, h, sq); varlen: (h, total_q) addressed by global token index.
  float* lse;  // may be null
  int64_t lse_batch_stride, lse_head_stride;

  // Varlen / per-sequence metadata (device-resident on GPU; kernels clamp what they read).
  const int32_t* cu_seqlens_q;  // (b + 1) or null
  const int32_t* cu_seqlens_k;  // (b + 1) or null
  const int32_t* seqused_k;     // (b) or null: keys actually used by sequence b
  // KV cache: the key length of sequence b is cache_seqlens[b] + seqlen_new (minus leftpad).
  const int32_t* cache_seqlens;    // (b) or null
  const int32_t* cache_batch_idx;  // (b) or null: cache row of batch element b
  const int32_t* leftpad_k;        // (b) or null: keys of sequence b start at this index

  // Paged K/V.
  const int32_t* block_table;  // (b, max_pages_per_seq) or null
  int64_t block_table_batch_stride;
  int32_t page_size;
  int32_t num_pages;
  int32_t max_pages_per_seq;

  // New keys/values appended into the cache in place (KV cache only).
  const void* k_new;
  int64_t knew_batch_stride, knew_row_stride, knew_head_stride;
  const void* v_new;
  int64_t vnew_batch_stride, vnew_row_stride, vnew_head_stride;
  int64_t seqlen_new;  // 0 when nothing is appended
  // Rotary embedding on q and k_new (KV cache only). cos/sin: (seqlen_ro, rotary_dim / 2), contiguous.
  const void* rotary_cos;
  const void* rotary_sin;
  int32_t rotary_dim;  // 0 = off
  int32_t rotary_interleaved;
  int64_t seqlen_ro;

  // Score and mask options, already normalised by the validator.
  float scale_softmax;       // applied to q.k (1/sqrt(d) by default)
  float scale_softmax_log2;  // scale_softmax * log2(e), or log2(e) when softcap is on (see softcap)
  float softcap;             // 0 = off; otherwise s = softcap * tanh(scale_softmax * q.k / softcap)
  int32_t is_causal;         // kept for kernels that specialise on it; window_right is 0 when set
  int32_t window_left;       // -1 = unbounded
  int32_t window_right;      // -1 = unbounded
  const float* alibi_slopes; // (h) or (b, h), or null
  int64_t alibi_batch_stride;  // 0 for (h)
  const float* sinks;        // (h) or null

  // Dropout (docs/dropout.md): keep iff philox16(b, h, i, j) < dropout_keep_threshold.
  float dropout_p;
  uint32_t dropout_keep_threshold;  // in [1, 65536]: round((1 - p) * 65536)
  float dropout_rescale;            // 1 / (1 - p)
  uint64_t seed, offset;
  const int64_t* rng_state;  // device {seed, offset}, or null to use seed/offset above

  // Split-KV.
  int32_t num_splits;  // >= 1
  float* out_accum;    // workspace: (splits, b, sq, h, d_rounded) fp32 when num_splits > 1
  float* lse_accum;    // workspace: (splits, b, h, sq) fp32
  int32_t batch_invariant;
};

struct BwdParams : FwdParams {
  const void* dout;
  int64_t do_batch_stride, do_row_stride, do_head_stride;
  void* dq;
  int64_t dq_batch_stride, dq_row_stride, dq_head_stride;
  void* dk;
  int64_t dk_batch_stride, dk_row_stride, dk_head_stride;
  void* dv;
  int64_t dv_batch_stride, dv_row_stride, dv_head_stride;
  float* dsinks;  // (h) or null
  int32_t deterministic;
  // Workspace carved by the backend's own planner (fp32 accumulators, row sums D = rowsum(dO * O)).
  void* workspace;
  uint64_t workspace_bytes;
};

// Per-sequence view: where sequence b's rows live and how long it is. All lengths >= 0.
struct SeqInfo {
  int64_t q_start;  // first query token (global token index for varlen, b * seqlen_q otherwise)
  int64_t sq;       // query rows of this sequence
  int64_t k_start;  // first key token in k/v (dense), or the first logical key position (paged)
  int64_t sk;       // keys visible to this sequence (after leftpad, including appended keys)
  int64_t leftpad;  // keys skipped at the start of the cache row
  int64_t k_batch;  // batch row of k/v (cache_batch_idx) for dense K/V
};

FLASHATTN_HOST_DEVICE inline int64_t clamp_i64(int64_t x, int64_t lo, int64_t hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

// Reads device metadata with clamping, so a corrupt value can shorten a sequence but never send an
// index out of bounds (the check mode reports such values as errors instead).
FLASHATTN_HOST_DEVICE inline SeqInfo seq_info(const FwdParams& p, int b) {
  SeqInfo s;
  if (p.cu_seqlens_q) {
    const int64_t start = clamp_i64(p.cu_seqlens_q[b], 0, p.total_q);
    const int64_t end = clamp_i64(p.cu_seqlens_q[b + 1], start, p.total_q);
    s.q_start = start;
    s.sq = end - start;
  } else {
    s.q_start = static_cast<int64_t>(b) * p.seqlen_q;
    s.sq = p.seqlen_q;
  }
  s.k_batch = p.cache_batch_idx ? clamp_i64(p.cache_batch_idx[b], 0, p.batch_k - 1) : b;
  s.leftpad = 0;
  if (p.cache_seqlens) {
    // KV cache: keys [leftpad, cache_seqlens + seqlen_new) of cache row k_batch.
    const int64_t cap = p.seqlen_k;
    s.k_start = 0;
    s.sk = clamp_i64(static_cast<int64_t>(p.cache_seqlens[b]) + p.seqlen_new, 0, cap);
  } else if (p.cu_seqlens_k && !p.block_table) {
    const int64_t start = clamp_i64(p.cu_seqlens_k[b], 0, p.total_k);
    const int64_t end = clamp_i64(p.cu_seqlens_k[b + 1], start, p.total_k);
    s.k_start = start;
    s.sk = end - start;
  } else {
    s.k_start = 0;
    s.sk = p.seqlen_k;
  }
  if (p.seqused_k) s.sk = clamp_i64(p.seqused_k[b], 0, s.sk);
  if (p.leftpad_k) {
    s.leftpad = clamp_i64(p.leftpad_k[b], 0, s.sk);
    s.k_start += s.leftpad;
    s.sk -= s.leftpad;
  }
  return s;
}

}  // namespace flashattn
