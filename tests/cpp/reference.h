// Independent fp64 reference of the function in docs/semantics.md, and a "low-precision" twin.
//
// This file shares no code with the library (no src/ include, not even philox.h): it is written from the
// documents, so agreement between the two is evidence that both follow the spec, not that they share a bug.
// It is deliberately naive (explicit loops, one row at a time) so every formula can be read off the code.
//
// Two precisions are offered (the FA tolerance rule needs both, see tolerance.h):
//   Precision::kExact - every operation in double on the (already rounded) input values: the "truth".
//   Precision::kLow   - standard (non-flash) attention as a framework computes it in the input dtype:
//                       each intermediate (scaled scores, softcap steps, biased scores, P, dropped P, the
//                       output, and in backward dP, dS and the gradients) is rounded to the input dtype.
//                       Sums inside one matmul are carried in double (tensor cores accumulate in fp32),
//                       only their results are rounded. Its distance to kExact measures the error that
//                       the input dtype itself causes.
//
// Layouts are plain row-major vectors of double, one entry per sequence (batch element):
//   q: (sq, nheads, d), k/v: (sk, nheads_k, d), out/dout/dq: (sq, nheads, d), lse: (nheads, sq).
// Frontends below turn the library's layouts (varlen, paged pools, KV cache with append and rotary) into
// that per-sequence form, each written from docs/semantics.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ref {

enum class DType { kFP32, kFP16, kBF16 };
enum class Precision { kExact, kLow };

const char* dtype_name(DType t);
// Round to the nearest value of the dtype (ties to even); fp16 overflows to +-inf like IEEE.
double round_to(DType t, double x);
// Round only in low-precision mode (identity in kExact).
inline double rnd(Precision p, DType t, double x) { return p == Precision::kLow ? round_to(t, x) : x; }

// ---- Dropout: Philox4x32-10 written from Salmon et al. (SC'11), and the keep rule of docs/dropout.md ----
struct Philox4 {
  uint32_t w[4];
};
Philox4 philox4x32_10(Philox4 counter, uint32_t key0, uint32_t key1);
// Keep threshold: round((1 - p) * 65536) clamped to [1, 65536].
uint32_t dropout_threshold(double p);
// Whether score (b, h, i, j) survives dropout; bh = b * nheads + h, i/j 0-based within the sequence.
bool dropout_keep(uint64_t seed, uint64_t offset, int64_t bh, int64_t i, int64_t j, double p);

// ---- The core problem: per-sequence dense tensors plus the options ----
struct Seq {
  int64_t sq = 0, sk = 0;
  std::vector<double> q, k, v;  // (sq, h, d), (sk, hk, d), (sk, hk, d)
};

struct Options {
  double scale = 0;  // <= 0: 1/sqrt(head_dim)
  bool causal = false;
  int64_t window_left = -1, window_right = -1;
  double softcap = 0;
  std::vector<double> alibi;  // empty, (h) or (b, h)
  bool alibi_per_batch = false;
  std::vector<double> sinks;  // empty or (h)
  double dropout_p = 0;
  uint64_t seed = 0, offset = 0;
};

struct Problem {
  DType dtype = DType::kFP16;  // dtype the inputs came in (used by Precision::kLow)
  int nheads = 1, nheads_k = 1, head_dim = 1;
  std::vector<Seq> seqs;
  Options opt;
};

struct FwdResult {
  std::vector<std::vector<double>> out;  // per sequence (sq, h, d)
  std::vector<std::vector<double>> lse;  // per sequence (h, sq); +inf (or the sink) for rows that see no key
};

struct BwdResult {
  std::vector<std::vector<double>> dq, dk, dv;  // per sequence, shapes of q, k, v
  std::vector<double> dsinks;                   // (h) when sinks are given
  // (h): sqrt(sum over rows of exp(sink - LSE_i)^2 * sum_d (dO_id * O_id)^2). An implementation's D_i
  // uses its own rounded O; independent roundings of relative size u move dsinks by about u * this.
  std::vector<double> dsinks_scale;
  // With sinks: max over dq (dk) elements of sum over their terms of P_ij * scale * |k_j| (|q_i|) *
  // sum_d |dO_id * O_id|, the move of that element when D_i = dO_i . O_i is computed from an O rounded
  // with relative error 1. With a sink, dS = P * (dP - D) can be a small difference of large terms (one
  // key: dP - D = (1 - P) dP), so the stored O's rounding shows in dq and dk beyond what the rounded twin
  // happens to make of it.
  double dq_delta_scale = 0, dk_delta_scale = 0;
};

// Whether row i of a (sq, sk) sequence sees key j under the window/causal rule of docs/semantics.md.
bool visible(const Options& o, int64_t sq, int64_t sk, int64_t i, int64_t j);

FwdResult reference_fwd(const Problem& pb, Precision prec);
// Gradients of sum(out * dout). Uses the forward of the same precision internally.
BwdResult reference_bwd(const Problem& pb, const std::vector<std::vector<double>>& dout, Precision prec);

// ---- Frontends ----
// Paged gather: logical key t of a sequence is page table_row[t / page_size], row t % page_size.
// pool: (num_pages, page_size, hk, d). Returns (sk, hk, d).
std::vector<double> gather_paged(const std::vector<double>& pool, int64_t page_size, int64_t hk, int64_t d,
                                 const int32_t* table_row, int64_t sk);

// Rotary embedding of one vector x[0..d) at angle row `pos` (cos/sin: (seqlen_ro, rotary_dim/2)).
void apply_rotary(double* x, int64_t rotary_dim, bool interleaved, const std::vector<double>& cos_tab,
                  const std::vector<double>& sin_tab, int64_t pos);

// Forward over a KV cache with optional in-place append and rotary (docs/semantics.md "KV cache").
struct KvCache {
  DType dtype = DType::kFP16;
  int batch = 1, nheads = 1, nheads_k = 1, head_dim = 1;
  int64_t seqlen_q = 1;
  std::vector<double> q;  // (b, sq, h, d)
  // Dense cache (cache_rows, cache_len, hk, d), or paged pool (num_pages, page_size, hk, d) when page_size > 0.
  std::vector<double> k_cache, v_cache;
  int64_t cache_rows = 0, cache_len = 0;
  int64_t page_size = 0, pages_per_seq = 0;
  std::vector<int32_t> block_table;  // (b, pages_per_seq) when paged
  int64_t seqlen_new = 0;
  std::vector<double> k_new, v_new;  // (b, s_new, hk, d)
  std::vector<int32_t> cache_seqlens, cache_batch_idx, cache_leftpad;  // (b) each; the last two optional
  int64_t rotary_dim = 0;
  bool rotary_interleaved = false;
  std::vector<double> rotary_cos, rotary_sin;  // (seqlen_ro, rotary_dim/2)
  Options opt;
};

struct KvCacheResult {
  FwdResult fwd;
  std::vector<double> k_cache, v_cache;  // the caches after the append (same layout as the inputs)
  Problem problem;                       // the per-sequence problem attention ran on
};

KvCacheResult reference_fwd_kvcache(const KvCache& kc, Precision prec);

// Split-KV combine: out = sum_s exp(lse_s - lse) out_s, lse = log(sum_s exp(lse_s) [+ exp(sink)]).
// out_partial: (splits, rows, d), lse_partial: (splits, rows); sink per row or NaN for none.
void reference_combine(int64_t splits, int64_t rows, int64_t d, const std::vector<double>& out_partial,
                       const std::vector<double>& lse_partial, const std::vector<double>& sink_per_row,
                       std::vector<double>* out, std::vector<double>* lse);

}  // namespace ref
