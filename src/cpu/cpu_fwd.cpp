// CPU forward: fixed-length, varlen, paged and KV-cache attention through one blocked online-softmax loop.
//
// Work item = (sequence, query head, block of kBlockM query rows). The item packs Q^T once (scale and
// log2(e) folded in), then for every key block that some row can see: packs K and V rows (any dtype,
// dense or paged, through KeyAddr), S^T = K Q^T, masks only blocks the window cuts, runs the online
// softmax down the key rows (row statistics are vectors over the query columns: no horizontal
// reductions) and accumulates O = diag(alpha) O + P V. The transposed score tile is what lets P feed
// the P V product with no transpose: the GEMM micro-kernel broadcasts A with any strides.
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/backend.h"
#include "cpu/cpu_amx.h"
#include "cpu/cpu_common.h"
#include "cpu/cpu_dropout.h"
#include "cpu/cpu_kernels.h"
#include "cpu/cpu_kvcache.h"
#include "cpu/cpu_tiles.h"

namespace flashattn {
namespace cpu {

namespace {

// Per-thread scratch of one work item. Sizes in floats; carved from the caller's workspace.
struct FwdScratch {
  float* qt;     // dp x kBlockM   Q^T, scaled
  float* o;      // kBlockM x dp   output accumulator
  float* k;      // kBlockN x dp
  float* v;      // kBlockN x dp
  float* st;     // kBlockN x kBlockM   scores, then probabilities (transposed)
  float* mask;   // kBlockN x kBlockM   dropout multipliers
  float* m;      // kBlockM   running max (base 2)
  float* l;      // kBlockM   running sum
  float* alpha;  // kBlockM   rescale of this step
  float* row;    // dp        conversion scratch
  // AMX path (bf16): Q^T / V pair-interleaved, K rows and P in bf16, P V product before the rescale.
  uint16_t* qv;  // dp / 2 x kBlockM x 2
  uint16_t* kb;  // kBlockN x dp
  uint16_t* vv;  // kBlockN / 2 x dp x 2
  uint16_t* pb;  // kBlockM x kBlockN
  float* pv;     // kBlockM x dp
};

FwdScratch carve_fwd(Arena& a, int dp) {
  FwdScratch s;
  s.qt = a.take<float>(int64_t(dp) * kBlockM);
  s.o = a.take<float>(int64_t(kBlockM) * dp);
  s.k = a.take<float>(int64_t(kBlockN) * dp);
  s.v = a.take<float>(int64_t(kBlockN) * dp);
  s.st = a.take<float>(int64_t(kBlockN) * kBlockM);
  s.mask = a.take<float>(int64_t(kBlockN) * kBlockM);
  s.m = a.take<float>(kBlockM);
  s.l = a.take<float>(kBlockM);
  s.alpha = a.take<float>(kBlockM);
  s.row = a.take<float>(dp);
  s.qv = a.take<uint16_t>(int64_t(dp) * kBlockM);
  s.kb = a.take<uint16_t>(int64_t(kBlockN) * dp);
  s.vv = a.take<uint16_t>(int64_t(kBlockN) * dp);
  s.pb = a.take<uint16_t>(int64_t(kBlockM) * kBlockN);
  s.pv = a.take<float>(int64_t(kBlockM) * dp);
  return s;
}

int padded_dim(const FwdParams& p) { return static_cast<int>(round_up(p.head_dim, 16)); }

size_t fwd_thread_bytes(const FwdParams& p) {
  Arena a(nullptr, 0);
  carve_fwd(a, padded_dim(p));
  return a.used();
}

size_t fwd_header_bytes(const FwdParams& p) { return align_bytes(sizeof(int64_t) * (p.batch + 1)); }

size_t fwd_workspace_bytes(const FwdParams& p, int threads) {
  return fwd_header_bytes(p) + fwd_thread_bytes(p) * threads;
}

// Final normalisation of one row: folds in the sink, returns the natural-log LSE and the output factor.
void finish_row(const ScoreOpts& o, float sink, float m2, float l, float* lse, float* out_scale) {
  if (o.sinks) {
    const float sink2 = sink * kLog2e;
    const float mf = m2 > sink2 ? m2 : sink2;
    const float keep = std::exp2(m2 - mf);  // 0 when the row saw no key
    const float lf = l * keep + std::exp2(sink2 - mf);
    *out_scale = keep / lf;
    *lse = (mf + std::log2(lf)) * kLn2;
  } else if (l > 0.f) {
    *out_scale = 1.f / l;
    *lse = (m2 + std::log2(l)) * kLn2;
  } else {
    *out_scale = 0.f;
    *lse = kInf;
  }
}

// AMX tile products serve bf16 with head_dim a multiple of 32 (the tile depth); FLASHATTN_CPU_ISA set to
// anything but "amx" turns them off.
bool use_amx(const FwdParams& p) {
  if (p.dtype != DType::kBF16 || p.head_dim % 32 != 0) return false;
  const char* cap = std::getenv("FLASHATTN_CPU_ISA");
  if (cap && std::strcmp(cap, "amx") != 0) return false;
  return isa_amx::usable();
}

void fwd_item(const FwdParams& p, const ScoreOpts& o, const Kernels& kn, const FwdScratch& w, bool amx, int b,
              int h, int64_t mb) {
  const SeqInfo s = seq_info(p, b);
  const int hk = h / head_ratio(p);
  const int d = p.head_dim, dp = padded_dim(p);
  const int64_t i0 = mb * kBlockM;
  const int m = static_cast<int>(min64(kBlockM, s.sq - i0));
  const int64_t off = s.sk - s.sq;
  const size_t es = dtype_size(p.dtype);
  const bool rotary = rotates_queries(p);

  auto q_row = [&](int r) { return q_row_offset(p, s, b, i0 + r, p.q_batch_stride, p.q_row_stride) + h * p.q_head_stride; };
  auto q_prep = [&](int r, float* row) {
    if (!rotary) return;
    rotate_row(p, row, query_rotary_pos(p, o, b, i0 + r));
    for (int k = 0; k < d; ++k) row[k] = round_to(p.dtype, row[k]);  // as if q were rotated in memory
  };
  if (amx) {
    // Q^T in pairs: qv[(kk * kBlockM + r) * 2 + t] = q[r][2 kk + t], unscaled (scaled after the product).
    for (int r = 0; r < kBlockM; ++r) {
      if (r < m) {
        kn.load_row(static_cast<const char*>(p.q) + q_row(r) * es, p.dtype, d, dp, w.row);
        q_prep(r, w.row);
      }
      for (int k = 0; k < dp; ++k) w.qv[((k / 2) * kBlockM + r) * 2 + k % 2] = r < m ? f32_to_bf16(w.row[k]) : 0;
    }
  } else {
    pack_transposed(kn, p.q, p.dtype, d, dp, m, kBlockM, o.q_scale, q_row, q_prep, w.row, w.qt, kBlockM);
  }
  for (int r = 0; r < kBlockM; ++r) {
    w.m[r] = -kInf;
    w.l[r] = 0.f;
  }
  for (int64_t x = 0; x < int64_t(kBlockM) * dp; ++x) w.o[x] = 0.f;

  Range keys = visible_keys(o, i0, i0 + m - 1, off, s.sk);
  keys.lo = max64(keys.lo, 0);
  const KeyAddr addr = key_addr(p, s, b);
  const float slope2 = o.alibi ? p.alibi_slopes[b * p.alibi_batch_stride + h] * kLog2e : 0.f;
  const int64_t bh = int64_t(b) * p.nheads + h;
  for (int64_t j0 = keys.empty() ? keys.hi : keys.lo / kBlockN * kBlockN; j0 < keys.hi; j0 += kBlockN) {
    const int n = static_cast<int>(min64(kBlockN, s.sk - j0));
    auto k_row = [&](int64_t j) { return addr.row_offset(j, p.k_batch_stride, p.k_row_stride) + hk * p.k_head_stride; };
    auto v_row = [&](int64_t j) { return addr.row_offset(j, p.v_batch_stride, p.v_row_stride) + hk * p.v_head_stride; };
    if (amx) {
      const uint16_t* vrows[kBlockN];
      for (int r = 0; r < kBlockN; ++r) {
        uint16_t* dst = w.kb + int64_t(r) * d;
        if (r < n) {
          std::memcpy(dst, static_cast<const uint16_t*>(p.k) + k_row(j0 + r), d * sizeof(uint16_t));
          vrows[r] = static_cast<const uint16_t*>(p.v) + v_row(j0 + r);
        } else {
          std::memset(dst, 0, d * sizeof(uint16_t));
        }
      }
      isa_amx::pack_pairs(vrows, n, kBlockN, d, w.vv);
    } else {
      pack_rows(kn, p.k, p.dtype, d, dp, n, [&](int r) { return k_row(j0 + r); }, w.k);
      pack_rows(kn, p.v, p.dtype, d, dp, n, [&](int r) { return v_row(j0 + r); }, w.v);
    }
    if (j0 + kBlockN < keys.hi) {  // the next block's rows arrive while this block computes
      const int nn = static_cast<int>(min64(kBlockN, keys.hi - j0 - kBlockN));
      prefetch_rows(p.k, p.dtype, d, nn, [&](int r) { return k_row(j0 + kBlockN + r); });
      prefetch_rows(p.v, p.dtype, d, nn, [&](int r) { return v_row(j0 + kBlockN + r); });
    }
    if (amx) {
      isa_amx::gemm_bf16(kBlockN, kBlockM, d, w.kb, d, w.qv, 2 * kBlockM, w.st, kBlockM);
      isa_amx::scale_rows(w.st, kBlockM, n, kBlockM, o.q_scale);
    } else {
      kn.gemm(n, kBlockM, d, w.k, dp, 1, w.qt, kBlockM, w.st, kBlockM, nullptr, kGemmStore);
    }
    if (o.softcap) kn.softcap(w.st, kBlockM, n, kBlockM, o.cap2, nullptr);
    if (o.alibi) kn.alibi(w.st, kBlockM, n, kBlockM, float(i0 + off - j0), -1.f, 1.f, slope2);
    if (!block_unmasked(o, i0, i0 + m - 1, j0, j0 + n - 1, off, s.sk))
      mask_keys_by_row(o, w.st, kBlockM, j0, n, i0, kBlockM, off);
    kn.softmax_cols(w.st, kBlockM, n, kBlockM, w.m, w.l, w.alpha);
    if (o.dropout) {  // after the row sums: the normaliser is computed before dropout
      dropout_mask_tile(o, bh, i0, m, j0, n, true, w.mask, kBlockM, n, kBlockM);
      apply_mask(w.st, w.mask, kBlockM, n, kBlockM);
    }
    if (amx) {
      isa_amx::probs_to_bf16(w.st, kBlockM, n, kBlockM, w.pb, kBlockN);
      isa_amx::gemm_bf16(kBlockM, d, kBlockN, w.pb, kBlockN, w.vv, 2 * d, w.pv, d);
      isa_amx::rescale_add(w.o, w.pv, w.alpha, kBlockM, d);
    } else {
      kn.gemm(m, dp, n, w.st, 1, kBlockM, w.v, dp, w.o, dp, w.alpha, kGemmRescale);
    }
  }

  const float sink = o.sinks ? p.sinks[h] : 0.f;
  for (int r = 0; r < m; ++r) {
    float lse, scale;
    finish_row(o, sink, w.m[r], w.l[r], &lse, &scale);
    const int64_t at = q_row_offset(p, s, b, i0 + r, p.o_batch_stride, p.o_row_stride) + h * p.o_head_stride;
    kn.store_row(w.o + int64_t(r) * dp, scale, d, static_cast<char*>(p.out) + at * es, p.dtype);
    if (p.lse) p.lse[lse_offset(p, s, b, h, i0 + r)] = lse;
  }
}

}  // namespace

Plan plan_fwd(const FwdParams& p) {
  Plan plan;
  plan.path = FLASHATTN_PATH_CPU;
  plan.block_m = kBlockM;
  plan.block_n = kBlockN;
  plan.num_warps = 0;
  plan.head_dim_rounded = padded_dim(p);
  plan.num_splits = 1;  // the CPU always computes the exact result in one pass
  plan.workspace_bytes = fwd_workspace_bytes(p, resolved_threads());
  plan.kernel = std::string(p.cache_seqlens ? "cpu_fwd_kvcache_fp32acc_" : "cpu_fwd_fp32acc_") +
                (use_amx(p) ? "amx" : kernels().isa);
  return plan;
}

void fwd(const FwdParams& p, const Plan& plan, void* workspace, size_t workspace_bytes) {
  (void)plan;
  const int threads = resolved_threads();
  const size_t need = fwd_workspace_bytes(p, threads);
  if (workspace_bytes < need || (need > 0 && !workspace))
    fail(FLASHATTN_STATUS_WORKSPACE_TOO_SMALL, "cpu fwd: workspace of ", workspace_bytes, " bytes, need ", need,
         " (plan again after changing the thread count)");
  const ScoreOpts o = make_score_opts(p);
  const Kernels& kn = kernels();

  // Work items per sequence: nheads * ceil(sq / kBlockM), as a prefix sum for the item -> (b, h, block) map.
  int64_t* prefix = static_cast<int64_t*>(workspace);
  prefix[0] = 0;
  for (int b = 0; b < p.batch; ++b) prefix[b + 1] = prefix[b] + p.nheads * ((seq_info(p, b).sq + kBlockM - 1) / kBlockM);
  const int64_t items = prefix[p.batch];
  const int64_t append_items = p.cache_seqlens && p.k_new && p.v_new ? int64_t(p.batch) * p.seqlen_new : 0;
  char* thread_base = static_cast<char*>(workspace) + fwd_header_bytes(p);
  const size_t thread_bytes = fwd_thread_bytes(p);
  const bool amx = use_amx(p);

#pragma omp parallel num_threads(threads)
  {
    Arena arena(thread_base + thread_bytes * omp_get_thread_num(), thread_bytes);
    const FwdScratch w = carve_fwd(arena, padded_dim(p));
    if (amx) isa_amx::tile_begin();
    // KV cache: append every new token first; the implicit barrier orders it before any attention read.
#pragma omp for schedule(static)
    for (int64_t x = 0; x < append_items; ++x)
      append_token(p, static_cast<int>(x / p.seqlen_new), x % p.seqlen_new, w.row);
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int b = find_batch(prefix, p.batch, item);
      const int64_t blocks = (prefix[b + 1] - prefix[b]) / p.nheads;
      const int64_t rem = item - prefix[b];
      fwd_item(p, o, kn, w, amx, b, static_cast<int>(rem / blocks), rem % blocks);
    }
    if (amx) isa_amx::tile_end();
  }
}

}  // namespace cpu
}  // namespace flashattn
