// CPU backward: dq, dk, dv (and dsinks) for fixed-length and varlen dense attention.
//
// Deterministic by construction, with no atomics: every output element is written by exactly one work
// item in a fixed order, whatever the thread count.
//   pass 0  D_i = dO_i . O_i per (row, head), and per-(b, h) partial sums of the sink gradient;
//   pass 1  per (sequence, head, query block): recompute P^T, dP^T, dS^T against every visible key block
//           and accumulate dQ = dS K (the transposed tiles again make the GEMM operands free);
//   pass 2  per (sequence, kv head, key block): over the query heads of the group and the query blocks
//           that see the block, recompute S = Q K^T, P, dP = dO V^T, dS and accumulate dV = P^T dO,
//           dK = dS^T Q. K^T and V^T are packed once per block and reused by every query block.
// The recomputation costs two extra block products over a single atomic pass; the price of determinism
// without O(seqlen^2) memory.
#include <omp.h>

#include <cmath>
#include <string>

#include "core/backend.h"
#include "cpu/cpu_common.h"
#include "cpu/cpu_dropout.h"
#include "cpu/cpu_kernels.h"
#include "cpu/cpu_tiles.h"

namespace flashattn {
namespace cpu {

namespace {

constexpr int64_t kTile = int64_t(kBlockM) * kBlockN;

struct DqScratch {
  float *qt, *dot, *dq, *k, *v, *st, *t, *pt, *dpt, *mask, *lse2, *dvec, *row;
};

struct DkvScratch {
  float *kt, *vt, *dk, *dv, *q, *dout, *s, *t, *p, *dp, *pd, *mask, *lse2, *dvec, *row;
};

int padded_dim(const FwdParams& p) { return static_cast<int>(round_up(p.head_dim, 16)); }

DqScratch carve_dq(Arena& a, int dp) {
  DqScratch s;
  s.qt = a.take<float>(int64_t(dp) * kBlockM);
  s.dot = a.take<float>(int64_t(dp) * kBlockM);
  s.dq = a.take<float>(int64_t(kBlockM) * dp);
  s.k = a.take<float>(int64_t(kBlockN) * dp);
  s.v = a.take<float>(int64_t(kBlockN) * dp);
  s.st = a.take<float>(kTile);
  s.t = a.take<float>(kTile);
  s.pt = a.take<float>(kTile);
  s.dpt = a.take<float>(kTile);
  s.mask = a.take<float>(kTile);
  s.lse2 = a.take<float>(kBlockM);
  s.dvec = a.take<float>(kBlockM);
  s.row = a.take<float>(dp);
  return s;
}

DkvScratch carve_dkv(Arena& a, int dp) {
  DkvScratch s;
  s.kt = a.take<float>(int64_t(dp) * kBlockN);
  s.vt = a.take<float>(int64_t(dp) * kBlockN);
  s.dk = a.take<float>(int64_t(kBlockN) * dp);
  s.dv = a.take<float>(int64_t(kBlockN) * dp);
  s.q = a.take<float>(int64_t(kBlockM) * dp);
  s.dout = a.take<float>(int64_t(kBlockM) * dp);
  s.s = a.take<float>(kTile);
  s.t = a.take<float>(kTile);
  s.p = a.take<float>(kTile);
  s.dp = a.take<float>(kTile);
  s.pd = a.take<float>(kTile);
  s.mask = a.take<float>(kTile);
  s.lse2 = a.take<float>(kBlockM);
  s.dvec = a.take<float>(kBlockM);
  s.row = a.take<float>(dp);
  return s;
}

// Both passes share one per-thread region, so it is sized for the larger.
size_t bwd_thread_bytes(const FwdParams& p) {
  Arena a(nullptr, 0), b(nullptr, 0);
  carve_dq(a, padded_dim(p));
  carve_dkv(b, padded_dim(p));
  return a.used() > b.used() ? a.used() : b.used();
}

struct BwdShared {
  int64_t* prefix_q;  // batch + 1: query-block items
  int64_t* prefix_k;  // batch + 1: key-block items
  float* dvec;        // nheads x total_q: D = dO . O by global row
  float* dsink_part;  // batch x nheads
};

BwdShared carve_shared(Arena& a, const FwdParams& p) {
  BwdShared s;
  s.prefix_q = a.take<int64_t>(p.batch + 1);
  s.prefix_k = a.take<int64_t>(p.batch + 1);
  s.dvec = a.take<float>(int64_t(p.nheads) * p.total_q);
  s.dsink_part = a.take<float>(int64_t(p.batch) * p.nheads);
  return s;
}

size_t bwd_header_bytes(const FwdParams& p) {
  Arena a(nullptr, 0);
  carve_shared(a, p);
  return a.used();
}

size_t bwd_workspace_bytes(const FwdParams& p, int threads) {
  return bwd_header_bytes(p) + bwd_thread_bytes(p) * threads;
}

// Rows of k/v that belong to sequence b in the dense tensors (dk/dv rows past the used keys get zeros).
int64_t key_capacity(const FwdParams& p, int b) {
  if (!p.cu_seqlens_k) return p.seqlen_k;
  const int64_t start = clamp_i64(p.cu_seqlens_k[b], 0, p.total_k);
  return clamp_i64(p.cu_seqlens_k[b + 1], start, p.total_k) - start;
}

// Pass 0: D for the rows of (b, h), and the (b, h) share of the sink gradient.
void row_dots(const BwdParams& p, const ScoreOpts& o, const Kernels& kn, const BwdShared& sh, float* ra, float* rb,
              int b, int h) {
  const SeqInfo s = seq_info(p, b);
  const size_t es = dtype_size(p.dtype);
  const int d = p.head_dim;
  const float sink = o.sinks ? p.sinks[h] : 0.f;
  float dsink = 0.f;
  for (int64_t i = 0; i < s.sq; ++i) {
    kn.load_row(static_cast<const char*>(p.dout) +
                    (q_row_offset(p, s, b, i, p.do_batch_stride, p.do_row_stride) + h * p.do_head_stride) * es,
                p.dtype, d, d, ra);
    kn.load_row(static_cast<const char*>(p.out) +
                    (q_row_offset(p, s, b, i, p.o_batch_stride, p.o_row_stride) + h * p.o_head_stride) * es,
                p.dtype, d, d, rb);
    float dot = 0.f;
    for (int k = 0; k < d; ++k) dot += ra[k] * rb[k];
    sh.dvec[int64_t(h) * p.total_q + s.q_start + i] = dot;
    if (o.sinks) {
      const float lse = p.lse[lse_offset(p, s, b, h, i)];
      dsink -= std::exp(sink - lse) * dot;
    }
  }
  sh.dsink_part[int64_t(b) * p.nheads + h] = dsink;
}

void load_row_stats(const BwdParams& p, const SeqInfo& s, const BwdShared& sh, int b, int h, int64_t i0, int m,
                    float* lse2, float* dvec) {
  for (int r = 0; r < kBlockM; ++r) {
    lse2[r] = r < m ? p.lse[lse_offset(p, s, b, h, i0 + r)] * kLog2e : kInf;  // +inf LSE: P = 0
    dvec[r] = r < m ? sh.dvec[int64_t(h) * p.total_q + s.q_start + i0 + r] : 0.f;
  }
}

void dq_item(const BwdParams& p, const ScoreOpts& o, const Kernels& kn, const BwdShared& sh, const DqScratch& w,
             int b, int h, int64_t mb) {
  const SeqInfo s = seq_info(p, b);
  const int hk = h / head_ratio(p);
  const int d = p.head_dim, dp = padded_dim(p);
  const int64_t i0 = mb * kBlockM;
  const int m = static_cast<int>(min64(kBlockM, s.sq - i0));
  const int64_t off = s.sk - s.sq;
  const size_t es = dtype_size(p.dtype);
  auto no_prep = [](int, float*) {};
  pack_transposed(
      kn, p.q, p.dtype, d, dp, m, kBlockM, o.q_scale,
      [&](int r) { return q_row_offset(p, s, b, i0 + r, p.q_batch_stride, p.q_row_stride) + h * p.q_head_stride; },
      no_prep, w.row, w.qt, kBlockM);
  pack_transposed(
      kn, p.dout, p.dtype, d, dp, m, kBlockM, 1.f,
      [&](int r) { return q_row_offset(p, s, b, i0 + r, p.do_batch_stride, p.do_row_stride) + h * p.do_head_stride; },
      no_prep, w.row, w.dot, kBlockM);
  load_row_stats(p, s, sh, b, h, i0, m, w.lse2, w.dvec);
  for (int64_t x = 0; x < int64_t(kBlockM) * dp; ++x) w.dq[x] = 0.f;

  Range keys = visible_keys(o, i0, i0 + m - 1, off, s.sk);
  keys.lo = max64(keys.lo, 0);
  const KeyAddr addr = key_addr(p, s, b);
  const float slope2 = o.alibi ? p.alibi_slopes[b * p.alibi_batch_stride + h] * kLog2e : 0.f;
  const int64_t bh = int64_t(b) * p.nheads + h;
  for (int64_t j0 = keys.empty() ? keys.hi : keys.lo / kBlockN * kBlockN; j0 < keys.hi; j0 += kBlockN) {
    const int n = static_cast<int>(min64(kBlockN, s.sk - j0));
    pack_rows(kn, p.k, p.dtype, d, dp, n,
              [&](int r) { return addr.row_offset(j0 + r, p.k_batch_stride, p.k_row_stride) + hk * p.k_head_stride; },
              w.k);
    pack_rows(kn, p.v, p.dtype, d, dp, n,
              [&](int r) { return addr.row_offset(j0 + r, p.v_batch_stride, p.v_row_stride) + hk * p.v_head_stride; },
              w.v);
    kn.gemm(n, kBlockM, d, w.k, dp, 1, w.qt, kBlockM, w.st, kBlockM, nullptr, kGemmStore);
    if (o.softcap) kn.softcap(w.st, kBlockM, n, kBlockM, o.cap2, w.t);
    if (o.alibi) kn.alibi(w.st, kBlockM, n, kBlockM, float(i0 + off - j0), -1.f, 1.f, slope2);
    if (!block_unmasked(o, i0, i0 + m - 1, j0, j0 + n - 1, off, s.sk))
      mask_keys_by_row(o, w.st, kBlockM, j0, n, i0, kBlockM, off);
    kn.exp2_sub(w.st, kBlockM, n, kBlockM, w.lse2, 1, w.pt);
    kn.gemm(n, kBlockM, d, w.v, dp, 1, w.dot, kBlockM, w.dpt, kBlockM, nullptr, kGemmStore);
    if (o.dropout) {
      dropout_mask_tile(o, bh, i0, m, j0, n, true, w.mask, kBlockM, n, kBlockM);
      apply_mask(w.dpt, w.mask, kBlockM, n, kBlockM);
    }
    kn.grad_scores(w.pt, w.dpt, o.softcap ? w.t : nullptr, kBlockM, n, kBlockM, w.dvec, 1, o.grad_scale, w.dpt);
    kn.gemm(m, dp, n, w.dpt, 1, kBlockM, w.k, dp, w.dq, dp, nullptr, kGemmAccumulate);
  }
  for (int r = 0; r < m; ++r) {
    const int64_t at = q_row_offset(p, s, b, i0 + r, p.dq_batch_stride, p.dq_row_stride) + h * p.dq_head_stride;
    kn.store_row(w.dq + int64_t(r) * dp, 1.f, d, static_cast<char*>(p.dq) + at * es, p.dtype);
  }
}

void dkv_item(const BwdParams& p, const ScoreOpts& o, const Kernels& kn, const BwdShared& sh, const DkvScratch& w,
              int b, int hk, int64_t nb) {
  const SeqInfo s = seq_info(p, b);
  const int ratio = head_ratio(p);
  const int d = p.head_dim, dp = padded_dim(p);
  const int64_t j0 = nb * kBlockN;
  const int rows_out = static_cast<int>(min64(kBlockN, key_capacity(p, b) - j0));
  const int n = static_cast<int>(clamp_i64(s.sk - j0, 0, rows_out));
  const int64_t off = s.sk - s.sq;
  const size_t es = dtype_size(p.dtype);
  const KeyAddr addr = key_addr(p, s, b);
  for (int64_t x = 0; x < int64_t(kBlockN) * dp; ++x) w.dk[x] = w.dv[x] = 0.f;

  if (n > 0) {
    auto no_prep = [](int, float*) {};
    pack_transposed(
        kn, p.k, p.dtype, d, dp, n, kBlockN, o.q_scale,
        [&](int r) { return addr.row_offset(j0 + r, p.k_batch_stride, p.k_row_stride) + hk * p.k_head_stride; },
        no_prep, w.row, w.kt, kBlockN);
    pack_transposed(
        kn, p.v, p.dtype, d, dp, n, kBlockN, 1.f,
        [&](int r) { return addr.row_offset(j0 + r, p.v_batch_stride, p.v_row_stride) + hk * p.v_head_stride; },
        no_prep, w.row, w.vt, kBlockN);
    Range rows = visible_queries(o, j0, j0 + n - 1, off, s.sq);
    rows.lo = max64(rows.lo, 0);
    for (int h = hk * ratio; h < (hk + 1) * ratio; ++h) {
      const float slope2 = o.alibi ? p.alibi_slopes[b * p.alibi_batch_stride + h] * kLog2e : 0.f;
      const int64_t bh = int64_t(b) * p.nheads + h;
      for (int64_t i0 = rows.empty() ? rows.hi : rows.lo / kBlockM * kBlockM; i0 < rows.hi; i0 += kBlockM) {
        const int m = static_cast<int>(min64(kBlockM, s.sq - i0));
        pack_rows(kn, p.q, p.dtype, d, dp, m,
                  [&](int r) { return q_row_offset(p, s, b, i0 + r, p.q_batch_stride, p.q_row_stride) + h * p.q_head_stride; },
                  w.q);
        pack_rows(kn, p.dout, p.dtype, d, dp, m,
                  [&](int r) { return q_row_offset(p, s, b, i0 + r, p.do_batch_stride, p.do_row_stride) + h * p.do_head_stride; },
                  w.dout);
        load_row_stats(p, s, sh, b, h, i0, m, w.lse2, w.dvec);
        kn.gemm(m, kBlockN, d, w.q, dp, 1, w.kt, kBlockN, w.s, kBlockN, nullptr, kGemmStore);
        if (o.softcap) kn.softcap(w.s, kBlockN, m, kBlockN, o.cap2, w.t);
        if (o.alibi) kn.alibi(w.s, kBlockN, m, kBlockN, float(i0 + off - j0), 1.f, -1.f, slope2);
        if (n < kBlockN || !block_unmasked(o, i0, i0 + m - 1, j0, j0 + n - 1, off, s.sk))
          mask_queries_by_row(o, w.s, kBlockN, i0, m, j0, kBlockN, off, s.sk);
        kn.exp2_sub(w.s, kBlockN, m, kBlockN, w.lse2, 0, w.p);
        kn.gemm(m, kBlockN, d, w.dout, dp, 1, w.vt, kBlockN, w.dp, kBlockN, nullptr, kGemmStore);
        const float* pv = w.p;
        if (o.dropout) {
          dropout_mask_tile(o, bh, i0, m, j0, n, false, w.mask, kBlockN, m, kBlockN);
          for (int64_t x = 0; x < int64_t(m) * kBlockN; ++x) w.pd[x] = w.p[x] * w.mask[x];
          apply_mask(w.dp, w.mask, kBlockN, m, kBlockN);
          pv = w.pd;
        }
        kn.grad_scores(w.p, w.dp, o.softcap ? w.t : nullptr, kBlockN, m, kBlockN, w.dvec, 0, o.grad_scale, w.dp);
        kn.gemm(n, dp, m, pv, 1, kBlockN, w.dout, dp, w.dv, dp, nullptr, kGemmAccumulate);
        kn.gemm(n, dp, m, w.dp, 1, kBlockN, w.q, dp, w.dk, dp, nullptr, kGemmAccumulate);
      }
    }
  }
  // Rows of this block past the used keys (seqused_k) keep the zeros.
  for (int r = 0; r < rows_out; ++r) {
    const int64_t row = s.k_start + j0 + r;
    const int64_t ak = s.k_batch * p.dk_batch_stride + row * p.dk_row_stride + hk * p.dk_head_stride;
    const int64_t av = s.k_batch * p.dv_batch_stride + row * p.dv_row_stride + hk * p.dv_head_stride;
    kn.store_row(w.dk + int64_t(r) * dp, 1.f, d, static_cast<char*>(p.dk) + ak * es, p.dtype);
    kn.store_row(w.dv + int64_t(r) * dp, 1.f, d, static_cast<char*>(p.dv) + av * es, p.dtype);
  }
}

}  // namespace

Plan plan_bwd(const BwdParams& p) {
  Plan plan;
  plan.path = FLASHATTN_PATH_CPU;
  plan.block_m = kBlockM;
  plan.block_n = kBlockN;
  plan.num_warps = 0;
  plan.head_dim_rounded = padded_dim(p);
  plan.num_splits = 1;
  plan.workspace_bytes = bwd_workspace_bytes(p, resolved_threads());
  plan.kernel = std::string("cpu_bwd_fp32acc_") + kernels().isa;
  return plan;
}

void bwd(const BwdParams& p, const Plan& plan, void* workspace, size_t workspace_bytes) {
  (void)plan;
  if (p.block_table || p.cache_seqlens) fail_arg("cpu bwd: paged or KV-cache attention has no backward");
  if (!p.lse) fail_arg("cpu bwd: the forward LSE is required");
  const int threads = resolved_threads();
  const size_t need = bwd_workspace_bytes(p, threads);
  if (workspace_bytes < need || !workspace)
    fail(FLASHATTN_STATUS_WORKSPACE_TOO_SMALL, "cpu bwd: workspace of ", workspace_bytes, " bytes, need ", need,
         " (plan again after changing the thread count)");
  const ScoreOpts o = make_score_opts(p);
  const Kernels& kn = kernels();
  Arena shared_arena(workspace, workspace_bytes);
  const BwdShared sh = carve_shared(shared_arena, p);
  sh.prefix_q[0] = sh.prefix_k[0] = 0;
  const int hkv = p.nheads / head_ratio(p);
  for (int b = 0; b < p.batch; ++b) {
    sh.prefix_q[b + 1] = sh.prefix_q[b] + p.nheads * ((seq_info(p, b).sq + kBlockM - 1) / kBlockM);
    sh.prefix_k[b + 1] = sh.prefix_k[b] + hkv * ((key_capacity(p, b) + kBlockN - 1) / kBlockN);
  }
  const int64_t q_items = sh.prefix_q[p.batch], k_items = sh.prefix_k[p.batch];
  const int64_t bh_items = int64_t(p.batch) * p.nheads;
  char* thread_base = static_cast<char*>(workspace) + bwd_header_bytes(p);
  const size_t thread_bytes = bwd_thread_bytes(p);
  const int dp = padded_dim(p);

#pragma omp parallel num_threads(threads)
  {
    char* mine = thread_base + thread_bytes * omp_get_thread_num();
    Arena a0(mine, thread_bytes), a1(mine, thread_bytes), a2(mine, thread_bytes);
    const DqScratch wq = carve_dq(a1, dp);
    const DkvScratch wk = carve_dkv(a2, dp);
    float* ra = a0.take<float>(dp);
    float* rb = a0.take<float>(dp);
#pragma omp for schedule(dynamic, 1)
    for (int64_t x = 0; x < bh_items; ++x)
      row_dots(p, o, kn, sh, ra, rb, static_cast<int>(x / p.nheads), static_cast<int>(x % p.nheads));
    // Passes 1 and 2 are independent (both read only pass 0's D), so no barrier between them.
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t item = 0; item < q_items; ++item) {
      const int b = find_batch(sh.prefix_q, p.batch, item);
      const int64_t blocks = (sh.prefix_q[b + 1] - sh.prefix_q[b]) / p.nheads;
      const int64_t rem = item - sh.prefix_q[b];
      dq_item(p, o, kn, sh, wq, b, static_cast<int>(rem / blocks), rem % blocks);
    }
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t item = 0; item < k_items; ++item) {
      const int b = find_batch(sh.prefix_k, p.batch, item);
      const int64_t blocks = (sh.prefix_k[b + 1] - sh.prefix_k[b]) / hkv;
      const int64_t rem = item - sh.prefix_k[b];
      dkv_item(p, o, kn, sh, wk, b, static_cast<int>(rem / blocks), rem % blocks);
    }
  }
  if (p.dsinks && o.sinks) {
    for (int h = 0; h < p.nheads; ++h) {
      float acc = 0.f;  // fixed batch order: bitwise repeatable
      for (int b = 0; b < p.batch; ++b) acc += sh.dsink_part[int64_t(b) * p.nheads + h];
      p.dsinks[h] = acc;
    }
  }
}

}  // namespace cpu
}  // namespace flashattn
