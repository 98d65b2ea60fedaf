// Library-level numerics beyond the case grids: the dropout mask read back bit for bit, keep fractions,
// device-style rng state, gradients vs finite differences of the library's own forward, repeatability,
// and the split-KV combine entry point.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "util.h"

namespace {

using fatest::HostTensor;

struct Ws {
  std::vector<uint8_t> mem;
  explicit Ws(size_t n) : mem(n + 64) {}
  void* ptr() { return mem.data(); }
};

flashattn_status run_fwd(const flashattn_fwd_args& a) {
  size_t ws = 0;
  flashattn_status st = flashattn_fwd_workspace_size(&a, &ws);
  if (st != FLASHATTN_STATUS_OK) return st;
  Ws w(ws);
  return a.cu_seqlens_q.data ? flashattn_varlen_fwd(&a, w.ptr(), ws, nullptr) : flashattn_fwd(&a, w.ptr(), ws, nullptr);
}

// ---- Dropout mask, read back exactly ----
// With v_j = e_j (one-hot, head_dim >= seqlen_k) the output row is out_i[j] = P_ij * D_ij: zero exactly
// where the library dropped (i, j). That exposes the library's mask to compare with our own Philox.
struct MaskCase {
  const char* name;
  flashattn_dtype dtype;
  double p;
  uint64_t seed, offset;
  bool varlen;
};

class DropoutMask : public ::testing::TestWithParam<MaskCase> {};

TEST_P(DropoutMask, EqualsIndependentPhiloxMask) {
  const MaskCase mc = GetParam();
  const int H = 3, D = 200;
  const std::vector<int> lq = mc.varlen ? std::vector<int>{37, 0, 90} : std::vector<int>{64, 64};
  const std::vector<int> lk = mc.varlen ? std::vector<int>{200, 10, 131} : std::vector<int>{200, 200};
  const int B = static_cast<int>(lq.size());
  std::vector<int32_t> cq(B + 1, 0), ck(B + 1, 0);
  for (int b = 0; b < B; ++b) {
    cq[b + 1] = cq[b] + lq[b];
    ck[b + 1] = ck[b] + lk[b];
  }
  std::mt19937_64 rng(mc.seed ^ 77);
  HostTensor Q, K, V, O;
  if (mc.varlen) {
    Q = HostTensor(mc.dtype, {cq[B], H, D});
    K = HostTensor(mc.dtype, {ck[B], 1, D});
    V = HostTensor(mc.dtype, {ck[B], 1, D});
    O = HostTensor(mc.dtype, {cq[B], H, D});
  } else {
    Q = HostTensor(mc.dtype, {B, lq[0], H, D});
    K = HostTensor(mc.dtype, {B, lk[0], 1, D});
    V = HostTensor(mc.dtype, {B, lk[0], 1, D});
    O = HostTensor(mc.dtype, {B, lq[0], H, D});
  }
  // Small scores keep every P_ij well above the dtype's underflow, so "0" can only mean "dropped".
  Q.fill_uniform(rng, -0.5, 0.5);
  K.fill_uniform(rng, -0.5, 0.5);
  for (int64_t i = 0; i < V.numel(); ++i) V.set_flat(i, 0.0);
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < lk[b]; ++j) {
      if (mc.varlen) V.set({ck[b] + j, 0, j}, 1.0);
      else V.set({b, j, 0, j}, 1.0);
    }
  O.poison();
  HostTensor CQ = fatest::make_int32(cq), CK = fatest::make_int32(ck);
  flashattn_fwd_args a;
  flashattn_fwd_args_init(&a);
  a.q = Q.desc();
  a.k = K.desc();
  a.v = V.desc();
  a.out = O.desc();
  if (mc.varlen) {
    a.cu_seqlens_q = CQ.desc();
    a.cu_seqlens_k = CK.desc();
    a.max_seqlen_q = 90;
    a.max_seqlen_k = 200;
  }
  a.opt.dropout_p = static_cast<float>(mc.p);
  a.opt.dropout_seed = mc.seed;
  a.opt.dropout_offset = mc.offset;
  ASSERT_EQ(run_fwd(a), FLASHATTN_STATUS_OK) << flashattn_last_error();
  const double p = static_cast<float>(mc.p);
  int64_t kept = 0, total = 0, mismatches = 0;
  std::string first;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < lq[b]; ++i)
        for (int j = 0; j < lk[b]; ++j) {
          const double o = mc.varlen ? O.get({cq[b] + i, h, j}) : O.get({b, i, h, j});
          ASSERT_FALSE(std::isnan(o)) << "NaN at b" << b << " h" << h << " i" << i << " j" << j;
          const bool lib_keep = o != 0.0;
          const bool ref_keep = ref::dropout_keep(mc.seed, mc.offset, static_cast<int64_t>(b) * H + h, i, j, p);
          kept += lib_keep;
          ++total;
          if (lib_keep != ref_keep) {
            if (!mismatches)
              first = "b" + std::to_string(b) + " h" + std::to_string(h) + " i" + std::to_string(i) + " j" +
                      std::to_string(j);
            ++mismatches;
          }
        }
  EXPECT_EQ(mismatches, 0) << "library mask differs from the spec's Philox mask in " << mismatches << " of " << total
                           << " elements; first at " << first;
  EXPECT_NEAR(static_cast<double>(kept) / total, 1 - p, 0.01) << "keep fraction";
}

INSTANTIATE_TEST_SUITE_P(
    Cpu, DropoutMask,
    ::testing::Values(MaskCase{"fp32_p017", FLASHATTN_DTYPE_FP32, 0.17, 1234, 0, false},
                      MaskCase{"fp16_p05", FLASHATTN_DTYPE_FP16, 0.5, 99, 5, false},
                      MaskCase{"bf16_p09", FLASHATTN_DTYPE_BF16, 0.9, 7, 123456, false},
                      MaskCase{"fp32_seed_hi_offset_hi", FLASHATTN_DTYPE_FP32, 0.3, 0x123456789abcull,
                               0x500000007ull, false},
                      MaskCase{"fp32_varlen_rows_within_sequence", FLASHATTN_DTYPE_FP32, 0.25, 42, 8, true}),
    [](const ::testing::TestParamInfo<MaskCase>& i) { return std::string(i.param.name); });

// The {seed, offset} pair read from an int64 tensor (the graph-capture path) equals the scalar fields.
TEST(Dropout, RngStateTensorEqualsScalars) {
  std::mt19937_64 rng(1);
  HostTensor Q(FLASHATTN_DTYPE_FP16, {1, 40, 2, 32}), K(FLASHATTN_DTYPE_FP16, {1, 50, 2, 32}),
      V(FLASHATTN_DTYPE_FP16, {1, 50, 2, 32}), O1(FLASHATTN_DTYPE_FP16, {1, 40, 2, 32}),
      O2(FLASHATTN_DTYPE_FP16, {1, 40, 2, 32}), RS(FLASHATTN_DTYPE_INT64, {2});
  Q.fill_normal(rng);
  K.fill_normal(rng);
  V.fill_normal(rng);
  RS.set_flat(0, 555);
  RS.set_flat(1, 64);
  flashattn_fwd_args a;
  flashattn_fwd_args_init(&a);
  a.q = Q.desc();
  a.k = K.desc();
  a.v = V.desc();
  a.opt.dropout_p = 0.2f;
  a.opt.dropout_seed = 555;
  a.opt.dropout_offset = 64;
  O1.poison();
  a.out = O1.desc();
  ASSERT_EQ(run_fwd(a), FLASHATTN_STATUS_OK) << flashattn_last_error();
  a.opt.dropout_seed = 1;  // must be ignored in favour of the tensor
  a.opt.dropout_offset = 2;
  a.opt.dropout_rng_state = RS.desc();
  O2.poison();
  a.out = O2.desc();
  ASSERT_EQ(run_fwd(a), FLASHATTN_STATUS_OK) << flashattn_last_error();
  EXPECT_TRUE(O1.bytes() == O2.bytes());
  // A different seed changes the output (the mask is really seeded).
  a.opt.dropout_rng_state = flashattn_tensor_none();
  O2.poison();
  ASSERT_EQ(run_fwd(a), FLASHATTN_STATUS_OK) << flashattn_last_error();
  EXPECT_FALSE(O1.bytes() == O2.bytes());
}

// ---- Library gradients vs finite differences of the library's forward (fp32, tiny shapes) ----
struct FdCase {
  const char* name;
  bool causal;
  double softcap;
  bool alibi, sinks;
  double dropout;
};

class LibraryBwdFd : public ::testing::TestWithParam<FdCase> {};

TEST_P(LibraryBwdFd, MatchesFiniteDifferences) {
  const FdCase fc = GetParam();
  const int B = 1, SQ = 6, SK = 9, H = 2, HK = 1, D = 8;
  std::mt19937_64 rng(21);
  const auto F = FLASHATTN_DTYPE_FP32;
  HostTensor Q(F, {B, SQ, H, D}), K(F, {B, SK, HK, D}), V(F, {B, SK, HK, D}), O(F, {B, SQ, H, D}), L(F, {B, H, SQ}),
      DO(F, {B, SQ, H, D}), DQ(F, {B, SQ, H, D}), DK(F, {B, SK, HK, D}), DV(F, {B, SK, HK, D}), DS(F, {H});
  for (HostTensor* t : {&Q, &K, &V, &DO}) t->fill_normal(rng);
  HostTensor AL = fatest::make_fp32({0.4, 0.15}, {H}), SI = fatest::make_fp32({0.3, -0.5}, {H});
  flashattn_options opt;
  flashattn_options_init(&opt);
  opt.causal = fc.causal;
  opt.softcap = static_cast<float>(fc.softcap);
  if (fc.alibi) opt.alibi_slopes = AL.desc();
  if (fc.sinks) opt.sinks = SI.desc();
  opt.dropout_p = static_cast<float>(fc.dropout);
  opt.dropout_seed = 3;
  flashattn_fwd_args a;
  flashattn_fwd_args_init(&a);
  a.q = Q.desc();
  a.k = K.desc();
  a.v = V.desc();
  a.out = O.desc();
  a.lse = L.desc();
  a.opt = opt;
  // L(x) = sum(out * dout), evaluated by the library's forward.
  auto loss = [&]() {
    O.poison();
    EXPECT_EQ(run_fwd(a), FLASHATTN_STATUS_OK) << flashattn_last_error();
    double l = 0;
    for (int64_t i = 0; i < O.numel(); ++i) l += O.get_flat(i) * DO.get_flat(i);
    return l;
  };
  loss();
  flashattn_bwd_args g;
  flashattn_bwd_args_init(&g);
  g.q = Q.desc();
  g.k = K.desc();
  g.v = V.desc();
  g.out = O.desc();
  g.lse = L.desc();
  g.dout = DO.desc();
  g.dq = DQ.desc();
  g.dk = DK.desc();
  g.dv = DV.desc();
  if (fc.sinks) g.dsinks = DS.desc();
  g.opt = opt;
  size_t ws = 0;
  ASSERT_EQ(flashattn_bwd_workspace_size(&g, &ws), FLASHATTN_STATUS_OK) << flashattn_last_error();
  Ws w(ws);
  for (HostTensor* t : {&DQ, &DK, &DV, &DS}) t->poison();
  ASSERT_EQ(flashattn_bwd(&g, w.ptr(), ws, nullptr), FLASHATTN_STATUS_OK) << flashattn_last_error();
  // fp32 forward noise ~1e-7 * |L| / eps with eps = 2e-3, truncation ~eps^2: both far below the bound.
  const double eps = 2e-3;
  double worst = 0, gmax = 0;
  auto probe = [&](HostTensor& x, const HostTensor& grad) {
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double x0 = x.get_flat(i);
      x.set_flat(i, x0 + eps);
      const double lp = loss();
      x.set_flat(i, x0 - eps);
      const double lm = loss();
      x.set_flat(i, x0);
      const double fd = (lp - lm) / (2 * eps);
      worst = std::max(worst, std::fabs(fd - grad.get_flat(i)));
      gmax = std::max(gmax, std::fabs(grad.get_flat(i)));
    }
  };
  probe(Q, DQ);
  probe(K, DK);
  probe(V, DV);
  if (fc.sinks) {
    // Sinks are read from their own fp32 tensor: perturb it in place.
    probe(SI, DS);
  }
  EXPECT_GT(gmax, 0.05);
  EXPECT_LT(worst, 2e-3 * std::max(1.0, gmax)) << "max |analytic - finite difference| (max |grad| " << gmax << ")";
}

INSTANTIATE_TEST_SUITE_P(Cpu, LibraryBwdFd,
                         ::testing::Values(FdCase{"plain", false, 0, false, false, 0},
                                           FdCase{"causal_sinks", true, 0, false, true, 0},
                                           FdCase{"softcap_alibi", false, 2.0, true, false, 0},
                                           FdCase{"dropout_causal", true, 0, false, false, 0.25},
                                           FdCase{"alibi_sinks_dropout", false, 0, true, true, 0.1}),
                         [](const ::testing::TestParamInfo<FdCase>& i) { return std::string(i.param.name); });

// ---- Repeatability ----
TEST(Repeatability, ForwardIsBitwiseRepeatable) {
  std::mt19937_64 rng(4);
  HostTensor Q(FLASHATTN_DTYPE_BF16, {2, 100, 4, 64}), K(FLASHATTN_DTYPE_BF16, {2, 150, 2, 64}),
      V(FLASHATTN_DTYPE_BF16, {2, 150, 2, 64}), O(FLASHATTN_DTYPE_BF16, {2, 100, 4, 64}),
      L(FLASHATTN_DTYPE_FP32, {2, 4, 100});
  Q.fill_normal(rng);
  K.fill_normal(rng);
  V.fill_normal(rng);
  flashattn_fwd_args a;
  flashattn_fwd_args_init(&a);
  a.q = Q.desc();
  a.k = K.desc();
  a.v = V.desc();
  a.out = O.desc();
  a.lse = L.desc();
  a.opt.causal = 1;
  a.opt.dropout_p = 0.1f;
  std::vector<uint8_t> o0, l0;
  for (int rep = 0; rep < 4; ++rep) {
    O.poison();
    L.poison();
    ASSERT_EQ(run_fwd(a), FLASHATTN_STATUS_OK) << flashattn_last_error();
    if (rep == 0) {
      o0 = O.bytes();
      l0 = L.bytes();
    } else {
      EXPECT_TRUE(O.bytes() == o0) << "out differs on repeat " << rep;
      EXPECT_TRUE(L.bytes() == l0) << "lse differs on repeat " << rep;
    }
  }
}

// ---- Split-KV combine entry point ----
// Partials are the reference's own attention over key chunks; the combine must give full attention.
struct CombineCase {
  const char* name;
  flashattn_dtype out_dtype;
  bool sinks, lse;
};

class Combine : public ::testing::TestWithParam<CombineCase> {};

TEST_P(Combine, MatchesFullAttention) {
  const CombineCase cc = GetParam();
  const int B = 2, SQ = 5, H = 3, D = 24, SK = 70, S = 4;
  const int bounds[S + 1] = {0, 20, 21, 50, 70};
  std::mt19937_64 rng(12);
  std::normal_distribution<double> nd;
  ref::Problem pb;
  pb.dtype = ref::DType::kFP32;
  pb.nheads = H;
  pb.nheads_k = H;
  pb.head_dim = D;
  pb.seqs.resize(B);
  for (auto& s : pb.seqs) {
    s.sq = SQ;
    s.sk = SK;
    for (int i = 0; i < SQ * H * D; ++i) s.q.push_back(nd(rng));
    for (int i = 0; i < SK * H * D; ++i) s.k.push_back(nd(rng));
    for (int i = 0; i < SK * H * D; ++i) s.v.push_back(nd(rng));
  }
  if (cc.sinks) pb.opt.sinks = {0.5, -1.0, 2.0};
  const ref::FwdResult full = ref::reference_fwd(pb, ref::Precision::kExact);
  HostTensor OP(FLASHATTN_DTYPE_FP32, {S, B, SQ, H, D}), LP(FLASHATTN_DTYPE_FP32, {S, B, H, SQ});
  for (int s = 0; s < S; ++s) {
    ref::Problem c = pb;
    c.opt.sinks.clear();  // the sink is added once, by the combine
    for (int b = 0; b < B; ++b) {
      auto& q = c.seqs[b];
      q.sk = bounds[s + 1] - bounds[s];
      q.k.assign(pb.seqs[b].k.begin() + bounds[s] * H * D, pb.seqs[b].k.begin() + bounds[s + 1] * H * D);
      q.v.assign(pb.seqs[b].v.begin() + bounds[s] * H * D, pb.seqs[b].v.begin() + bounds[s + 1] * H * D);
    }
    const ref::FwdResult r = ref::reference_fwd(c, ref::Precision::kExact);
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < SQ; ++i)
        for (int h = 0; h < H; ++h) {
          LP.set({s, b, h, i}, r.lse[b][h * SQ + i]);
          for (int x = 0; x < D; ++x) OP.set({s, b, i, h, x}, r.out[b][(i * H + h) * D + x]);
        }
  }
  HostTensor O(cc.out_dtype, {B, SQ, H, D}), L(FLASHATTN_DTYPE_FP32, {B, H, SQ});
  HostTensor SI = fatest::make_fp32({0.5, -1.0, 2.0}, {H});
  O.poison();
  L.poison();
  flashattn_combine_args a;
  flashattn_combine_args_init(&a);
  a.out_partial = OP.desc();
  a.lse_partial = LP.desc();
  a.out = O.desc();
  if (cc.lse) a.lse = L.desc();
  if (cc.sinks) a.sinks = SI.desc();
  ASSERT_EQ(flashattn_combine(&a, nullptr), FLASHATTN_STATUS_OK) << flashattn_last_error();
  // Partials are fp32-rounded inputs; the combine itself adds fp32 rounding: relative 1e-5 (fp32 out),
  // and one rounding of the output dtype otherwise.
  const double tol = cc.out_dtype == FLASHATTN_DTYPE_FP32 ? 1e-5 : cc.out_dtype == FLASHATTN_DTYPE_FP16 ? 2e-3 : 1.6e-2;
  const auto ref_out = fatest::concat(full.out);
  double maxref = 0, err = 0;
  for (double x : ref_out) maxref = std::max(maxref, std::fabs(x));
  const auto got = O.to_vector();
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::fabs(got[i] - ref_out[i]));
  EXPECT_LE(err, tol * maxref) << "combine out error";
  if (cc.lse) {
    const auto ref_lse = fatest::concat(full.lse);
    const auto gl = L.to_vector();
    double le = 0;
    for (size_t i = 0; i < gl.size(); ++i) le = std::max(le, std::fabs(gl[i] - ref_lse[i]));
    EXPECT_LE(le, 1e-5 * 10) << "combine lse error";
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, Combine,
                         ::testing::Values(CombineCase{"fp32", FLASHATTN_DTYPE_FP32, false, true},
                                           CombineCase{"fp32_sinks", FLASHATTN_DTYPE_FP32, true, true},
                                           CombineCase{"fp16_sinks", FLASHATTN_DTYPE_FP16, true, true},
                                           CombineCase{"bf16_nolse", FLASHATTN_DTYPE_BF16, false, false}),
                         [](const ::testing::TestParamInfo<CombineCase>& i) { return std::string(i.param.name); });

// Thread count: results must stay correct with any number of CPU threads.
TEST(Threads, OneThreadMatchesDefault) {
  std::mt19937_64 rng(9);
  HostTensor Q(FLASHATTN_DTYPE_FP16, {3, 70, 4, 32}), K(FLASHATTN_DTYPE_FP16, {3, 90, 4, 32}),
      V(FLASHATTN_DTYPE_FP16, {3, 90, 4, 32}), O1(FLASHATTN_DTYPE_FP16, {3, 70, 4, 32}),
      O2(FLASHATTN_DTYPE_FP16, {3, 70, 4, 32});
  Q.fill_normal(rng);
  K.fill_normal(rng);
  V.fill_normal(rng);
  flashattn_fwd_args a;
  flashattn_fwd_args_init(&a);
  a.q = Q.desc();
  a.k = K.desc();
  a.v = V.desc();
  a.opt.causal = 1;
  const int32_t before = flashattn_get_num_threads();
  EXPECT_GE(before, 1);
  ASSERT_EQ(flashattn_set_num_threads(1), FLASHATTN_STATUS_OK);
  EXPECT_EQ(flashattn_get_num_threads(), 1);
  O1.poison();
  a.out = O1.desc();
  ASSERT_EQ(run_fwd(a), FLASHATTN_STATUS_OK) << flashattn_last_error();
  ASSERT_EQ(flashattn_set_num_threads(0), FLASHATTN_STATUS_OK);
  O2.poison();
  a.out = O2.desc();
  ASSERT_EQ(run_fwd(a), FLASHATTN_STATUS_OK) << flashattn_last_error();
  // Each (batch, head, row block) is computed by one thread in a fixed order: thread count cannot change bits.
  EXPECT_TRUE(O1.bytes() == O2.bytes());
  EXPECT_EQ(flashattn_set_num_threads(-1), FLASHATTN_STATUS_INVALID_ARGUMENT);
}

}  // namespace
