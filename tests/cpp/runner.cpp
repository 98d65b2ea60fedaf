// Runs one AttnCase through the C ABI and checks it against the fp64 reference (FA tolerance rule).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>

#include "cases.h"
#include "util.h"

namespace fatest {
namespace {

uint64_t name_seed(const AttnCase& c) {
  if (c.seed) return c.seed;
  uint64_t h = 1469598103934665603ull;  // FNV-1a: a fixed, reproducible seed per case name
  for (char ch : c.name) h = (h ^ static_cast<uint8_t>(ch)) * 1099511628211ull;
  return h;
}

struct Workspace {
  std::shared_ptr<uint8_t> mem;
  size_t bytes = 0;
  explicit Workspace(size_t n) : bytes(n) {
    if (n) mem.reset(static_cast<uint8_t*>(std::aligned_alloc(64, (n + 63) / 64 * 64)), [](uint8_t* p) { std::free(p); });
  }
  void* ptr() const { return mem.get(); }
};

// Everything a forward/backward case needs, in library layout, plus index helpers to read it back.
struct Setup {
  const AttnCase& c;
  flashattn_dtype dt;
  ref::DType rdt;
  Layout layout;
  bool varlen = false, paged = false;
  int B = 0, H = 0, HK = 0, D = 0;
  std::vector<int64_t> sq, sk_store, sk_used, cu_q, cu_k;
  int64_t max_sq = 0, max_sk = 0, total_q = 0, total_k = 0;
  int64_t pages_per_seq = 0, num_pages = 0;
  bool pass_seqused = false;
  std::vector<int32_t> table;
  HostTensor Q, K, V, OUT, LSE, CUQ, CUK, SEQUSED, BT, ALIBI, SINKS, RNG;
  // Dense twin of a paged problem (same keys, dense layout) for the paged == dense check.
  HostTensor KD, VD, CUKD;

  explicit Setup(const AttnCase& cs) : c(cs) {}

  std::vector<int64_t> q_idx(int b, int64_t i, int h, int x) const {
    return varlen ? std::vector<int64_t>{cu_q[b] + i, h, x} : std::vector<int64_t>{b, i, h, x};
  }
  std::vector<int64_t> k_idx(int b, int64_t j, int g, int x) const {
    if (paged) {
      const int64_t page = table[b * pages_per_seq + j / c.page_size];
      return {page, j % c.page_size, g, x};
    }
    return varlen ? std::vector<int64_t>{cu_k[b] + j, g, x} : std::vector<int64_t>{b, j, g, x};
  }
  std::vector<int64_t> kd_idx(int b, int64_t j, int g, int x) const {  // dense twin
    return varlen ? std::vector<int64_t>{cu_k[b] + j, g, x} : std::vector<int64_t>{b, j, g, x};
  }
  std::vector<int64_t> lse_idx(int b, int h, int64_t i) const {
    return varlen ? std::vector<int64_t>{h, cu_q[b] + i} : std::vector<int64_t>{b, h, i};
  }
};

void build_setup(Setup& s, std::mt19937_64& rng) {
  const AttnCase& c = s.c;
  s.dt = from_name(c.dtype);
  s.rdt = to_ref(s.dt);
  s.layout = layout_from_name(c.layout);
  s.varlen = c.op == "varlen" || c.op == "varlen_bwd";
  s.paged = c.page_size > 0;
  s.H = c.nheads;
  s.HK = c.nheads_k;
  s.D = c.head_dim;
  s.B = s.varlen ? static_cast<int>(c.seqlens_q.size()) : c.batch;
  s.sq.resize(s.B);
  s.sk_store.resize(s.B);
  s.sk_used.resize(s.B);
  for (int b = 0; b < s.B; ++b) {
    s.sq[b] = s.varlen ? c.seqlens_q[b] : c.seqlen_q;
    s.sk_store[b] = s.varlen ? c.seqlens_k[b] : c.seqlen_k;
    s.sk_used[b] = c.seqused_k.empty() ? s.sk_store[b] : c.seqused_k[b];
  }
  s.cu_q.assign(s.B + 1, 0);
  s.cu_k.assign(s.B + 1, 0);
  for (int b = 0; b < s.B; ++b) {
    s.cu_q[b + 1] = s.cu_q[b] + s.sq[b];
    s.cu_k[b + 1] = s.cu_k[b] + s.sk_store[b];
    s.max_sq = std::max(s.max_sq, s.sq[b]);
    s.max_sk = std::max(s.max_sk, s.sk_store[b]);
  }
  s.total_q = s.cu_q[s.B];
  s.total_k = s.cu_k[s.B];
  if (!s.varlen) {
    s.max_sq = c.seqlen_q;
    s.max_sk = c.seqlen_k;
  }

  if (s.varlen) {
    s.Q = HostTensor(s.dt, {s.total_q, s.H, s.D}, s.layout);
    s.OUT = HostTensor(s.dt, {s.total_q, s.H, s.D}, s.layout);
    s.LSE = HostTensor(FLASHATTN_DTYPE_FP32, {s.H, s.total_q});
    s.CUQ = make_int32(std::vector<int32_t>(s.cu_q.begin(), s.cu_q.end()));
    s.CUK = make_int32(std::vector<int32_t>(s.cu_k.begin(), s.cu_k.end()));
  } else {
    s.Q = HostTensor(s.dt, {s.B, c.seqlen_q, s.H, s.D}, s.layout);
    s.OUT = HostTensor(s.dt, {s.B, c.seqlen_q, s.H, s.D}, s.layout);
    s.LSE = HostTensor(FLASHATTN_DTYPE_FP32, {s.B, s.H, c.seqlen_q});
  }
  s.Q.fill_normal(rng);

  auto dense_kv = [&](HostTensor* k, HostTensor* v) {
    if (s.varlen) {
      *k = HostTensor(s.dt, {s.total_k, s.HK, s.D}, s.layout);
      *v = HostTensor(s.dt, {s.total_k, s.HK, s.D}, s.layout);
    } else {
      *k = HostTensor(s.dt, {s.B, c.seqlen_k, s.HK, s.D}, s.layout);
      *v = HostTensor(s.dt, {s.B, c.seqlen_k, s.HK, s.D}, s.layout);
    }
  };
  if (s.paged) {
    // Pool of pages three times larger than needed, handed out in random order, so a gather that
    // ignores the block table (or reads the wrong page) cannot pass by accident.
    s.pages_per_seq = std::max<int64_t>(1, (s.max_sk + c.page_size - 1) / c.page_size);
    s.num_pages = 3 * s.B * s.pages_per_seq;
    std::vector<int32_t> perm(s.num_pages);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    s.table.assign(perm.begin(), perm.begin() + s.B * s.pages_per_seq);
    s.BT = make_int32_2d(s.B, s.pages_per_seq, s.table);
    s.K = HostTensor(s.dt, {s.num_pages, c.page_size, s.HK, s.D}, s.layout);
    s.V = HostTensor(s.dt, {s.num_pages, c.page_size, s.HK, s.D}, s.layout);
    s.K.fill_normal(rng);
    s.V.fill_normal(rng);
    // Paged keys per sequence: capacity pages_per_seq * page_size; seqused_k tells the used count.
    s.pass_seqused = s.varlen || !c.seqused_k.empty() || s.pages_per_seq * c.page_size != c.seqlen_k;
    dense_kv(&s.KD, &s.VD);
    for (int b = 0; b < s.B; ++b)
      for (int64_t j = 0; j < s.sk_store[b]; ++j)
        for (int g = 0; g < s.HK; ++g)
          for (int x = 0; x < s.D; ++x) {
            s.KD.set(s.kd_idx(b, j, g, x), s.K.get(s.k_idx(b, j, g, x)));
            s.VD.set(s.kd_idx(b, j, g, x), s.V.get(s.k_idx(b, j, g, x)));
          }
  } else {
    dense_kv(&s.K, &s.V);
    s.K.fill_normal(rng);
    s.V.fill_normal(rng);
    s.pass_seqused = !c.seqused_k.empty();
  }
  if (s.pass_seqused) s.SEQUSED = make_int32(std::vector<int32_t>(s.sk_used.begin(), s.sk_used.end()));

  std::uniform_real_distribution<double> slope(0.0, 0.3), sink(-2.0, 3.0);
  if (c.alibi == "h" || c.alibi == "bh") {
    const int64_t n = c.alibi == "h" ? s.H : static_cast<int64_t>(s.B) * s.H;
    std::vector<double> a(n);
    for (double& x : a) x = slope(rng);
    s.ALIBI = c.alibi == "h" ? make_fp32(a, {s.H}) : make_fp32(a, {s.B, s.H});
  }
  if (c.sinks) {
    std::vector<double> a(s.H);
    for (double& x : a) x = sink(rng);
    s.SINKS = make_fp32(a, {s.H});
  }
}

void fill_options(const AttnCase& c, const Setup& s, flashattn_options* o) {
  o->softmax_scale = static_cast<float>(c.scale);
  o->causal = c.causal;
  o->window_left = c.window_left;
  o->window_right = c.window_right;
  o->softcap = static_cast<float>(c.softcap);
  if (!s.ALIBI.empty()) o->alibi_slopes = s.ALIBI.desc();
  if (!s.SINKS.empty()) o->sinks = s.SINKS.desc();
  o->dropout_p = static_cast<float>(c.dropout_p);
  o->dropout_seed = c.dropout_seed;
  o->dropout_offset = c.dropout_offset;
  o->deterministic = c.deterministic;
  o->num_splits = c.num_splits;
}

ref::Options ref_options(const AttnCase& c, const Setup& s) {
  ref::Options o;
  // The library takes the scale as fp32; the reference uses the same value so only the math differs.
  o.scale = c.scale > 0 ? static_cast<double>(static_cast<float>(c.scale)) : 0;
  o.causal = c.causal;
  o.window_left = c.window_left;
  o.window_right = c.window_right;
  o.softcap = static_cast<double>(static_cast<float>(c.softcap));
  if (!s.ALIBI.empty()) {
    o.alibi = s.ALIBI.to_vector();
    o.alibi_per_batch = c.alibi == "bh";
  }
  if (!s.SINKS.empty()) o.sinks = s.SINKS.to_vector();
  o.dropout_p = static_cast<double>(static_cast<float>(c.dropout_p));
  o.seed = c.dropout_seed;
  o.offset = c.dropout_offset;
  return o;
}

ref::Problem ref_problem(const Setup& s) {
  ref::Problem pb;
  pb.dtype = s.rdt;
  pb.nheads = s.H;
  pb.nheads_k = s.HK;
  pb.head_dim = s.D;
  pb.opt = ref_options(s.c, s);
  pb.seqs.resize(s.B);
  for (int b = 0; b < s.B; ++b) {
    ref::Seq& q = pb.seqs[b];
    q.sq = s.sq[b];
    q.sk = s.sk_used[b];
    q.q.resize(q.sq * s.H * s.D);
    q.k.resize(q.sk * s.HK * s.D);
    q.v.resize(q.sk * s.HK * s.D);
    for (int64_t i = 0; i < q.sq; ++i)
      for (int h = 0; h < s.H; ++h)
        for (int x = 0; x < s.D; ++x) q.q[(i * s.H + h) * s.D + x] = s.Q.get(s.q_idx(b, i, h, x));
    for (int64_t j = 0; j < q.sk; ++j)
      for (int g = 0; g < s.HK; ++g)
        for (int x = 0; x < s.D; ++x) {
          q.k[(j * s.HK + g) * s.D + x] = s.K.get(s.k_idx(b, j, g, x));
          q.v[(j * s.HK + g) * s.D + x] = s.V.get(s.k_idx(b, j, g, x));
        }
  }
  return pb;
}

// Reads a (seq, row, head, dim)-indexed library tensor (out, dout, dq) into per-sequence vectors.
std::vector<std::vector<double>> read_q_like(const Setup& s, const HostTensor& t) {
  std::vector<std::vector<double>> r(s.B);
  for (int b = 0; b < s.B; ++b) {
    r[b].resize(s.sq[b] * s.H * s.D);
    for (int64_t i = 0; i < s.sq[b]; ++i)
      for (int h = 0; h < s.H; ++h)
        for (int x = 0; x < s.D; ++x) r[b][(i * s.H + h) * s.D + x] = t.get(s.q_idx(b, i, h, x));
  }
  return r;
}

std::vector<std::vector<double>> read_k_like(const Setup& s, const HostTensor& t) {
  std::vector<std::vector<double>> r(s.B);
  for (int b = 0; b < s.B; ++b) {
    r[b].resize(s.sk_used[b] * s.HK * s.D);
    for (int64_t j = 0; j < s.sk_used[b]; ++j)
      for (int g = 0; g < s.HK; ++g)
        for (int x = 0; x < s.D; ++x) r[b][(j * s.HK + g) * s.D + x] = t.get(s.k_idx(b, j, g, x));
  }
  return r;
}

std::vector<std::vector<double>> read_lse(const Setup& s, const HostTensor& t) {
  std::vector<std::vector<double>> r(s.B);
  for (int b = 0; b < s.B; ++b) {
    r[b].resize(s.H * s.sq[b]);
    for (int h = 0; h < s.H; ++h)
      for (int64_t i = 0; i < s.sq[b]; ++i) r[b][h * s.sq[b] + i] = t.get(s.lse_idx(b, h, i));
  }
  return r;
}

flashattn_fwd_args fwd_args(const Setup& s, bool use_dense_twin) {
  flashattn_fwd_args a;
  flashattn_fwd_args_init(&a);
  a.q = s.Q.desc();
  a.out = s.OUT.desc();
  if (s.c.lse) a.lse = s.LSE.desc();
  if (use_dense_twin) {
    a.k = s.KD.desc();
    a.v = s.VD.desc();
  } else {
    a.k = s.K.desc();
    a.v = s.V.desc();
    if (s.paged) a.block_table = s.BT.desc();
  }
  if (s.varlen) {
    a.cu_seqlens_q = s.CUQ.desc();
    if (!s.paged || use_dense_twin) a.cu_seqlens_k = s.CUK.desc();
    a.max_seqlen_q = s.max_sq;
    a.max_seqlen_k = s.paged && !use_dense_twin ? s.pages_per_seq * s.c.page_size : s.max_sk;
  }
  if (s.pass_seqused) a.seqused_k = s.SEQUSED.desc();
  fill_options(s.c, s, &a.opt);
  return a;
}

flashattn_status call_fwd(const Setup& s, const flashattn_fwd_args& a) {
  size_t ws = 0;
  flashattn_status st = flashattn_fwd_workspace_size(&a, &ws);
  if (st != FLASHATTN_STATUS_OK) return st;
  Workspace w(ws);
  return s.varlen ? flashattn_varlen_fwd(&a, w.ptr(), w.bytes, nullptr) : flashattn_fwd(&a, w.ptr(), w.bytes, nullptr);
}

void run_fwd(const AttnCase& c) {
  std::mt19937_64 rng(name_seed(c));
  Setup s(c);
  build_setup(s, rng);
  s.OUT.poison();
  s.LSE.poison();
  const flashattn_fwd_args a = fwd_args(s, false);
  ASSERT_EQ(call_fwd(s, a), FLASHATTN_STATUS_OK) << flashattn_last_error();

  const ref::Problem pb = ref_problem(s);
  const ref::FwdResult rx = ref::reference_fwd(pb, ref::Precision::kExact);
  ref::FwdResult rl;
  if (s.rdt != ref::DType::kFP32) rl = ref::reference_fwd(pb, ref::Precision::kLow);
  const std::vector<double> out = concat(read_q_like(s, s.OUT));
  const Comparison co = compare("out", s.rdt, out, concat(rx.out), concat(rl.out), kFwdTol);
  EXPECT_TRUE(co.ok) << co.message;
  if (c.lse) {
    const Comparison cl = compare("lse", s.rdt, concat(read_lse(s, s.LSE)), concat(rx.lse), concat(rl.lse), kFwdTol);
    EXPECT_TRUE(cl.ok) << cl.message;
  }
  if (s.paged) {
    // The same keys in a dense layout must give the same answer (within the rule; the CPU backend may
    // block paged keys differently, so bitwise equality is not required).
    s.OUT = HostTensor(s.dt, s.OUT.shape(), s.layout);
    s.OUT.poison();
    s.LSE.poison();
    ASSERT_EQ(call_fwd(s, fwd_args(s, true)), FLASHATTN_STATUS_OK) << flashattn_last_error();
    const std::vector<double> dense = concat(read_q_like(s, s.OUT));
    double diff = 0;
    for (size_t i = 0; i < out.size(); ++i) diff = std::max(diff, std::fabs(out[i] - dense[i]));
    EXPECT_LE(diff, co.bound) << "paged vs dense K/V differ by " << diff;
    const Comparison cd = compare("out(dense twin)", s.rdt, dense, concat(rx.out), concat(rl.out), kFwdTol);
    EXPECT_TRUE(cd.ok) << cd.message;
  }
}

void run_bwd(const AttnCase& c) {
  std::mt19937_64 rng(name_seed(c));
  Setup s(c);
  build_setup(s, rng);
  s.OUT.poison();
  s.LSE.poison();
  flashattn_fwd_args fa = fwd_args(s, false);
  fa.lse = s.LSE.desc();  // backward needs the forward's LSE
  ASSERT_EQ(call_fwd(s, fa), FLASHATTN_STATUS_OK) << flashattn_last_error();

  HostTensor DOUT(s.dt, s.Q.shape(), s.layout), DQ(s.dt, s.Q.shape(), s.layout), DK(s.dt, s.K.shape(), s.layout),
      DV(s.dt, s.V.shape(), s.layout), DSINKS;
  DOUT.fill_normal(rng);
  if (c.sinks) DSINKS = HostTensor(FLASHATTN_DTYPE_FP32, {s.H});
  flashattn_bwd_args a;
  flashattn_bwd_args_init(&a);
  a.q = s.Q.desc();
  a.k = s.K.desc();
  a.v = s.V.desc();
  a.out = s.OUT.desc();
  a.dout = DOUT.desc();
  a.lse = s.LSE.desc();
  a.dq = DQ.desc();
  a.dk = DK.desc();
  a.dv = DV.desc();
  if (c.sinks) a.dsinks = DSINKS.desc();
  if (s.varlen) {
    a.cu_seqlens_q = s.CUQ.desc();
    a.cu_seqlens_k = s.CUK.desc();
    a.max_seqlen_q = s.max_sq;
    a.max_seqlen_k = s.max_sk;
  }
  fill_options(c, s, &a.opt);
  size_t ws = 0;
  ASSERT_EQ(flashattn_bwd_workspace_size(&a, &ws), FLASHATTN_STATUS_OK) << flashattn_last_error();
  auto run_once = [&]() {
    for (HostTensor* t : {&DQ, &DK, &DV}) t->poison();
    if (c.sinks) DSINKS.poison();
    Workspace w(ws);
    return s.varlen ? flashattn_varlen_bwd(&a, w.ptr(), w.bytes, nullptr) : flashattn_bwd(&a, w.ptr(), w.bytes, nullptr);
  };
  ASSERT_EQ(run_once(), FLASHATTN_STATUS_OK) << flashattn_last_error();

  const ref::Problem pb = ref_problem(s);
  const auto dout = read_q_like(s, DOUT);
  const ref::BwdResult gx = ref::reference_bwd(pb, dout, ref::Precision::kExact);
  ref::BwdResult gl;
  if (s.rdt != ref::DType::kFP32) gl = ref::reference_bwd(pb, dout, ref::Precision::kLow);
  const Comparison cq = compare("dq", s.rdt, concat(read_q_like(s, DQ)), concat(gx.dq), concat(gl.dq), kGradTol);
  EXPECT_TRUE(cq.ok) << cq.message;
  const Comparison ck = compare("dk", s.rdt, concat(read_k_like(s, DK)), concat(gx.dk), concat(gl.dk), kGradTol);
  EXPECT_TRUE(ck.ok) << ck.message;
  const Comparison cv = compare("dv", s.rdt, concat(read_k_like(s, DV)), concat(gx.dv), concat(gl.dv), kGradTol);
  EXPECT_TRUE(cv.ok) << cv.message;
  if (c.sinks) {
    Comparison cs = compare("dsinks", s.rdt, DSINKS.to_vector(), gx.dsinks, gl.dsinks, kGradTol);
    if (!cs.ok && s.rdt != ref::DType::kFP32) {
      // dsinks[h] = -sum_i P_sink(i) * Delta_i is a reduction over every row of every sequence, and a
      // backward can only form Delta_i = dO_i . O_i from the output stored in the input dtype. Its error is
      // then a sum of independent rounding terms whose size the low-precision twin (one other draw of the
      // same noise) estimates poorly when only nheads values are compared. Bound it directly instead:
      // |error_h| <= sum_i P_sink(i) * sum_x |dO_ix * O_ix| * u, u the dtype's unit roundoff, times 2.
      const ref::FwdResult fx = ref::reference_fwd(pb, ref::Precision::kExact);
      const double u = s.rdt == ref::DType::kFP16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
      std::vector<double> noise(s.H, 0);
      for (int b = 0; b < s.B; ++b)
        for (int h = 0; h < s.H; ++h)
          for (int64_t i = 0; i < s.sq[b]; ++i) {
            const double psink = std::exp(pb.opt.sinks[h] - fx.lse[b][h * s.sq[b] + i]);
            double dot = 0;
            for (int x = 0; x < s.D; ++x)
              dot += std::fabs(dout[b][(i * s.H + h) * s.D + x] * fx.out[b][(i * s.H + h) * s.D + x]);
            noise[h] += psink * dot * u;
          }
      const std::vector<double> got = DSINKS.to_vector();
      bool ok = true;
      for (int h = 0; h < s.H; ++h) ok = ok && std::fabs(got[h] - gx.dsinks[h]) <= 2 * noise[h] + kGradTol.atol;
      cs.ok = ok;
      cs.message += " (also above the rounding bound 2 * sum P_sink |dO.O| u)";
    }
    EXPECT_TRUE(cs.ok) << cs.message;
  }
  if (c.deterministic) {
    // Deterministic mode promises bitwise-identical gradients over repeated runs.
    const auto q1 = DQ.bytes(), k1 = DK.bytes(), v1 = DV.bytes();
    for (int rep = 0; rep < 3; ++rep) {
      ASSERT_EQ(run_once(), FLASHATTN_STATUS_OK) << flashattn_last_error();
      EXPECT_TRUE(DQ.bytes() == q1) << "dq differs on repeat " << rep;
      EXPECT_TRUE(DK.bytes() == k1) << "dk differs on repeat " << rep;
      EXPECT_TRUE(DV.bytes() == v1) << "dv differs on repeat " << rep;
    }
  }
}

// ---- KV cache ----
void run_kvcache(const AttnCase& c) {
  std::mt19937_64 rng(name_seed(c));
  const flashattn_dtype dt = from_name(c.dtype);
  const ref::DType rdt = to_ref(dt);
  const Layout layout = layout_from_name(c.layout);
  const int B = c.batch, H = c.nheads, HK = c.nheads_k, D = c.head_dim;
  const int64_t sq = c.seqlen_q, snew = c.seqlen_new;
  const int64_t cap = c.cache_len > 0 ? c.cache_len : c.seqlen_k + snew;
  const bool paged = c.page_size > 0;

  ref::KvCache kc;
  kc.dtype = rdt;
  kc.batch = B;
  kc.nheads = H;
  kc.nheads_k = HK;
  kc.head_dim = D;
  kc.seqlen_q = sq;
  kc.seqlen_new = snew;
  // Tokens already in the cache: as given, else random in [0, cap - snew] with one full sequence.
  std::vector<int32_t> cs(B);
  for (int b = 0; b < B; ++b) {
    if (!c.cache_seqlens.empty()) {
      cs[b] = c.cache_seqlens[b];
    } else {
      std::uniform_int_distribution<int64_t> u(0, cap - snew);
      cs[b] = static_cast<int32_t>(b == 0 ? cap - snew : u(rng));
    }
  }
  kc.cache_seqlens = cs;
  if (!c.leftpad.empty()) kc.cache_leftpad.assign(c.leftpad.begin(), c.leftpad.end());

  HostTensor Q(dt, {B, sq, H, D}, layout), OUT(dt, {B, sq, H, D}, layout), LSE(FLASHATTN_DTYPE_FP32, {B, H, sq});
  Q.fill_normal(rng);
  HostTensor KC, VC, BT, KN, VN, CS = make_int32(cs), BIDX, LP, COS, SIN, ALIBI, SINKS;
  int64_t cache_rows = B;
  if (paged) {
    kc.page_size = c.page_size;
    kc.pages_per_seq = (cap + c.page_size - 1) / c.page_size;
    const int64_t num_pages = 2 * B * kc.pages_per_seq + 1;
    std::vector<int32_t> perm(num_pages);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    kc.block_table.assign(perm.begin(), perm.begin() + B * kc.pages_per_seq);
    BT = make_int32_2d(B, kc.pages_per_seq, kc.block_table);
    KC = HostTensor(dt, {num_pages, c.page_size, HK, D}, layout);
    VC = HostTensor(dt, {num_pages, c.page_size, HK, D}, layout);
  } else {
    if (c.batch_idx) {
      // A cache with more rows than the batch, visited in a random order.
      cache_rows = B + 2;
      std::vector<int32_t> rows(cache_rows);
      std::iota(rows.begin(), rows.end(), 0);
      std::shuffle(rows.begin(), rows.end(), rng);
      kc.cache_batch_idx.assign(rows.begin(), rows.begin() + B);
      BIDX = make_int32(kc.cache_batch_idx);
    }
    KC = HostTensor(dt, {cache_rows, cap, HK, D}, layout);
    VC = HostTensor(dt, {cache_rows, cap, HK, D}, layout);
  }
  KC.fill_normal(rng);
  VC.fill_normal(rng);
  kc.cache_rows = cache_rows;
  kc.cache_len = cap;
  kc.k_cache = KC.to_vector();
  kc.v_cache = VC.to_vector();
  kc.q = Q.to_vector();
  if (snew > 0) {
    KN = HostTensor(dt, {B, snew, HK, D}, layout);
    VN = HostTensor(dt, {B, snew, HK, D}, layout);
    KN.fill_normal(rng);
    VN.fill_normal(rng);
    kc.k_new = KN.to_vector();
    kc.v_new = VN.to_vector();
  }
  if (!c.leftpad.empty()) LP = make_int32(kc.cache_leftpad);
  if (c.rotary_dim > 0) {
    // Angles of the usual base-10000 schedule at every cache position, rounded to the input dtype.
    const int64_t half = c.rotary_dim / 2;
    // Rows up to cap + sq: un-appended query rows of a local/causal call may sit past the cache end.
    // The library asks for at least the cache capacity (paged: pages * page_size).
    const int64_t seqlen_ro = std::max<int64_t>(cap, paged ? kc.pages_per_seq * c.page_size : cap) + sq;
    COS = HostTensor(dt, {seqlen_ro, half});
    SIN = HostTensor(dt, {seqlen_ro, half});
    for (int64_t p = 0; p < seqlen_ro; ++p)
      for (int64_t r = 0; r < half; ++r) {
        const double ang = p * std::pow(10000.0, -static_cast<double>(r) / half);
        COS.set({p, r}, std::cos(ang));
        SIN.set({p, r}, std::sin(ang));
      }
    kc.rotary_dim = c.rotary_dim;
    kc.rotary_interleaved = c.rotary_interleaved;
    kc.rotary_cos = COS.to_vector();
    kc.rotary_sin = SIN.to_vector();
  }
  std::uniform_real_distribution<double> slope(0.0, 0.3), sink(-2.0, 3.0);
  if (c.alibi != "none") {
    const int64_t n = c.alibi == "h" ? H : static_cast<int64_t>(B) * H;
    std::vector<double> a(n);
    for (double& x : a) x = slope(rng);
    ALIBI = c.alibi == "h" ? make_fp32(a, {H}) : make_fp32(a, {B, H});
    kc.opt.alibi = ALIBI.to_vector();
    kc.opt.alibi_per_batch = c.alibi == "bh";
  }
  if (c.sinks) {
    std::vector<double> a(H);
    for (double& x : a) x = sink(rng);
    SINKS = make_fp32(a, {H});
    kc.opt.sinks = SINKS.to_vector();
  }
  kc.opt.scale = c.scale > 0 ? static_cast<double>(static_cast<float>(c.scale)) : 0;
  kc.opt.causal = c.causal;
  kc.opt.window_left = c.window_left;
  kc.opt.window_right = c.window_right;
  kc.opt.softcap = static_cast<double>(static_cast<float>(c.softcap));

  flashattn_kvcache_args a;
  flashattn_kvcache_args_init(&a);
  a.q = Q.desc();
  a.k_cache = KC.desc();
  a.v_cache = VC.desc();
  if (snew > 0) {
    a.k_new = KN.desc();
    a.v_new = VN.desc();
  }
  a.out = OUT.desc();
  if (c.lse) a.lse = LSE.desc();
  a.cache_seqlens = CS.desc();
  if (!BIDX.empty()) a.cache_batch_idx = BIDX.desc();
  if (!LP.empty()) a.cache_leftpad = LP.desc();
  if (!BT.empty()) a.block_table = BT.desc();
  if (!COS.empty()) {
    a.rotary_cos = COS.desc();
    a.rotary_sin = SIN.desc();
    a.rotary_interleaved = c.rotary_interleaved;
  }
  a.opt.softmax_scale = static_cast<float>(c.scale);
  a.opt.causal = c.causal;
  a.opt.window_left = c.window_left;
  a.opt.window_right = c.window_right;
  a.opt.softcap = static_cast<float>(c.softcap);
  if (!ALIBI.empty()) a.opt.alibi_slopes = ALIBI.desc();
  if (!SINKS.empty()) a.opt.sinks = SINKS.desc();
  a.opt.num_splits = c.num_splits;

  OUT.poison();
  LSE.poison();
  size_t ws = 0;
  ASSERT_EQ(flashattn_kvcache_workspace_size(&a, &ws), FLASHATTN_STATUS_OK) << flashattn_last_error();
  Workspace w(ws);
  ASSERT_EQ(flashattn_fwd_kvcache(&a, w.ptr(), w.bytes, nullptr), FLASHATTN_STATUS_OK) << flashattn_last_error();

  const ref::KvCacheResult rx = ref::reference_fwd_kvcache(kc, ref::Precision::kExact);
  ref::KvCacheResult rl;
  if (rdt != ref::DType::kFP32) rl = ref::reference_fwd_kvcache(kc, ref::Precision::kLow);

  // In-place update: v is a copy (exact); k is exact without rotary and within rounding with it.
  // Every position not appended to must be untouched.
  const std::vector<double> kc_after = KC.to_vector(), vc_after = VC.to_vector();
  double v_diff = 0, k_excess = 0;
  for (size_t i = 0; i < vc_after.size(); ++i) {
    v_diff = std::max(v_diff, std::fabs(vc_after[i] - rx.v_cache[i]));
    // Rotated k is rounded once to the dtype by the library; allow two ulps of the exact value.
    const double ulp = rdt == ref::DType::kFP16 ? std::ldexp(1.0, -10) : rdt == ref::DType::kBF16 ? std::ldexp(1.0, -7)
                                                                                                  : 1e-6;
    const double allow = c.rotary_dim > 0 ? 2 * ulp * std::fabs(rx.k_cache[i]) + 1e-6 : 0.0;
    k_excess = std::max(k_excess, std::fabs(kc_after[i] - rx.k_cache[i]) - allow);
  }
  EXPECT_EQ(v_diff, 0.0) << "v_cache after append differs from the copy of v_new";
  EXPECT_LE(k_excess, 0.0) << "k_cache after append is not the (rotated) k_new within rounding";

  std::vector<double> out_v = OUT.to_vector();
  const Comparison co = compare("out", rdt, out_v, concat(rx.fwd.out), concat(rl.fwd.out), kFwdTol);
  EXPECT_TRUE(co.ok) << co.message;
  if (c.lse) {
    const Comparison cl = compare("lse", rdt, LSE.to_vector(), concat(rx.fwd.lse), concat(rl.fwd.lse), kFwdTol);
    EXPECT_TRUE(cl.ok) << cl.message;
  }
}

}  // namespace

void run_case(const AttnCase& c) {
  if (c.op == "fwd" || c.op == "varlen") return run_fwd(c);
  if (c.op == "bwd" || c.op == "varlen_bwd") return run_bwd(c);
  if (c.op == "kvcache") return run_kvcache(c);
  FAIL() << "unknown op " << c.op;
}

}  // namespace fatest
