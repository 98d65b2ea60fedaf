// Self-tests of the reference (no library involved): Philox known-answer vectors, dtype rounding,
// hand-checked masks, and the backward formulas against finite differences of the forward in double.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "reference.h"
#include "util.h"

namespace {

// Known-answer vectors of Philox4x32-10 published with Random123 (Salmon et al.).
TEST(Philox, KnownAnswerVectors) {
  struct Kat {
    uint32_t ctr[4], key[2], out[4];
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
       {0xffffffffu, 0xffffffffu},
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
       {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const Kat& k : kats) {
    const ref::Philox4 r = ref::philox4x32_10({{k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]}}, k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(r.w[i], k.out[i]) << "word " << i;
  }
}

TEST(Dropout, ThresholdRule) {
  EXPECT_EQ(ref::dropout_threshold(0.0), 65536u);  // p = 0 keeps everything
  EXPECT_EQ(ref::dropout_threshold(0.5), 32768u);
  EXPECT_EQ(ref::dropout_threshold(0.17), static_cast<uint32_t>(std::floor(0.83 * 65536 + 0.5)));
  EXPECT_EQ(ref::dropout_threshold(0.99999999), 1u);  // clamped: never below 1
}

TEST(Dropout, ReferenceKeepFractionAndIndependence) {
  // The rule must keep ~(1-p) of the elements, and different (b,h), rows, seeds, offsets must decorrelate.
  for (double p : {0.1, 0.17, 0.5, 0.9}) {
    int64_t kept = 0, n = 0, same_other_seed = 0;
    for (int64_t bh = 0; bh < 4; ++bh)
      for (int64_t i = 0; i < 100; ++i)
        for (int64_t j = 0; j < 250; ++j) {
          const bool k1 = ref::dropout_keep(42, 7, bh, i, j, p);
          kept += k1;
          same_other_seed += k1 == ref::dropout_keep(43, 7, bh, i, j, p);
          ++n;
        }
    const double frac = static_cast<double>(kept) / n;
    EXPECT_NEAR(frac, 1 - p, 0.01) << "p = " << p;
    const double agree = static_cast<double>(same_other_seed) / n;  // independent masks: (1-p)^2 + p^2
    EXPECT_NEAR(agree, (1 - p) * (1 - p) + p * p, 0.02) << "p = " << p;
  }
}

TEST(Rounding, Fp16AndBf16TiesToEven) {
  using ref::DType;
  EXPECT_EQ(ref::round_to(DType::kFP16, 1 + std::ldexp(1.0, -11)), 1.0);  // tie -> even (1.0)
  EXPECT_EQ(ref::round_to(DType::kFP16, 1 + 3 * std::ldexp(1.0, -11)), 1 + std::ldexp(1.0, -9));
  EXPECT_TRUE(std::isinf(ref::round_to(DType::kFP16, 65520.0)));
  EXPECT_EQ(ref::round_to(DType::kFP16, 65519.0), 65504.0);
  EXPECT_EQ(ref::round_to(DType::kFP16, std::ldexp(1.0, -25)), 0.0);  // half the smallest subnormal
  EXPECT_EQ(ref::round_to(DType::kFP16, 3 * std::ldexp(1.0, -25)), std::ldexp(1.0, -23));
  EXPECT_EQ(ref::round_to(DType::kBF16, 1 + std::ldexp(1.0, -8)), 1.0);
  EXPECT_EQ(ref::round_to(DType::kBF16, -(1 + 3 * std::ldexp(1.0, -8))), -(1 + std::ldexp(1.0, -6)));
  EXPECT_EQ(ref::round_to(DType::kFP32, 1 + std::ldexp(1.0, -30)), 1.0);
}

TEST(Rounding, HalfBitsRoundTrip) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    const double x = fatest::half_bits_to_double(h);
    if (std::isnan(x)) continue;
    ASSERT_EQ(fatest::float_to_half_bits(x), h) << "bits " << b;
    const double y = fatest::bf16_bits_to_double(h);
    if (std::isnan(y)) continue;
    ASSERT_EQ(fatest::float_to_bf16_bits(y), h) << "bf16 bits " << b;
  }
}

TEST(Masks, WindowFormulaHandChecked) {
  ref::Options o;
  o.causal = true;
  // sq = 3, sk = 5: bottom-right causal, row i sees j <= i + 2.
  EXPECT_TRUE(ref::visible(o, 3, 5, 0, 2));
  EXPECT_FALSE(ref::visible(o, 3, 5, 0, 3));
  EXPECT_TRUE(ref::visible(o, 3, 5, 2, 4));
  // sq = 5, sk = 3: rows 0 and 1 see nothing (j <= i - 2).
  EXPECT_FALSE(ref::visible(o, 5, 3, 1, 0));
  EXPECT_TRUE(ref::visible(o, 5, 3, 2, 0));
  // Window (1, 0) with causal: row i sees [i + sk - sq - 1, i + sk - sq].
  o.window_left = 1;
  EXPECT_FALSE(ref::visible(o, 4, 4, 3, 1));
  EXPECT_TRUE(ref::visible(o, 4, 4, 3, 2));
  // Right window applied as written even when larger than sk (no FA2 rewrite).
  ref::Options w;
  w.window_right = 1;
  EXPECT_FALSE(ref::visible(w, 6, 4, 0, 0));  // row 0: diag = -2, right edge -1: sees nothing
  EXPECT_TRUE(ref::visible(w, 6, 4, 1, 0));   // row 1: right edge 0
  EXPECT_FALSE(ref::visible(w, 6, 4, 1, 1));
}

ref::Problem small_problem(std::mt19937_64& rng, int sq, int sk, int h, int hk, int d) {
  ref::Problem pb;
  pb.dtype = ref::DType::kFP32;
  pb.nheads = h;
  pb.nheads_k = hk;
  pb.head_dim = d;
  std::normal_distribution<double> nd;
  for (int b = 0; b < 2; ++b) {
    ref::Seq s;
    s.sq = sq - b;  // different lengths per sequence
    s.sk = sk + b;
    for (int64_t i = 0; i < s.sq * h * d; ++i) s.q.push_back(nd(rng));
    for (int64_t i = 0; i < s.sk * hk * d; ++i) s.k.push_back(nd(rng));
    for (int64_t i = 0; i < s.sk * hk * d; ++i) s.v.push_back(nd(rng));
    pb.seqs.push_back(s);
  }
  return pb;
}

TEST(ReferenceFwd, EmptyRowsAndSinks) {
  std::mt19937_64 rng(5);
  ref::Problem pb = small_problem(rng, 6, 3, 2, 1, 4);
  pb.opt.causal = true;
  ref::FwdResult r = ref::reference_fwd(pb, ref::Precision::kExact);
  // Sequence 0: sq = 6, sk = 3 -> rows 0..2 see nothing: out 0, LSE +inf.
  for (int h = 0; h < 2; ++h) {
    EXPECT_TRUE(std::isinf(r.lse[0][h * 6 + 0]));
    EXPECT_FALSE(std::isinf(r.lse[0][h * 6 + 3]));
  }
  for (int x = 0; x < 2 * 4; ++x) EXPECT_EQ(r.out[0][x], 0.0);
  pb.opt.sinks = {0.5, -1.0};
  r = ref::reference_fwd(pb, ref::Precision::kExact);
  EXPECT_EQ(r.lse[0][0], 0.5);
  EXPECT_EQ(r.lse[0][6], -1.0);
  // Row 3 of head 0 sees key 0 only: P = e^s / (e^s + e^sink), out = P * v_0.
  const auto& s0 = pb.seqs[0];
  double dot = 0;
  for (int x = 0; x < 4; ++x) dot += s0.q[(3 * 2 + 0) * 4 + x] * s0.k[x];
  const double s = dot / 2.0, p = std::exp(s) / (std::exp(s) + std::exp(0.5));
  for (int x = 0; x < 4; ++x) EXPECT_NEAR(r.out[0][(3 * 2 + 0) * 4 + x], p * s0.v[x], 1e-14);
  EXPECT_NEAR(r.lse[0][3], std::log(std::exp(s) + std::exp(0.5)), 1e-14);
}

TEST(ReferenceFwd, LowPrecisionIsCloseButNotExact) {
  std::mt19937_64 rng(6);
  ref::Problem pb = small_problem(rng, 20, 30, 2, 2, 16);
  for (auto& s : pb.seqs)
    for (auto* t : {&s.q, &s.k, &s.v})
      for (double& x : *t) x = ref::round_to(ref::DType::kFP16, x);
  pb.dtype = ref::DType::kFP16;
  const auto a = fatest::concat(ref::reference_fwd(pb, ref::Precision::kExact).out);
  const auto b = fatest::concat(ref::reference_fwd(pb, ref::Precision::kLow).out);
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) e = std::max(e, std::fabs(a[i] - b[i]));
  EXPECT_GT(e, 0.0);   // rounding happened
  EXPECT_LT(e, 5e-3);  // ... at the fp16 level
}

TEST(ReferenceCombine, ChunksReproduceFullAttention) {
  std::mt19937_64 rng(8);
  ref::Problem pb = small_problem(rng, 4, 12, 1, 1, 8);
  pb.seqs.resize(1);
  pb.opt.sinks = {0.7};
  const ref::FwdResult full = ref::reference_fwd(pb, ref::Precision::kExact);
  // Split the 12 keys into chunks of 5, 5, 2 and run each without the sink.
  const int bounds[] = {0, 5, 10, 12};
  std::vector<double> op, lp;
  for (int s = 0; s < 3; ++s) {
    ref::Problem c = pb;
    c.opt.sinks.clear();
    ref::Seq& q = c.seqs[0];
    q.sk = bounds[s + 1] - bounds[s];
    q.k.assign(pb.seqs[0].k.begin() + bounds[s] * 8, pb.seqs[0].k.begin() + bounds[s + 1] * 8);
    q.v.assign(pb.seqs[0].v.begin() + bounds[s] * 8, pb.seqs[0].v.begin() + bounds[s + 1] * 8);
    const ref::FwdResult r = ref::reference_fwd(c, ref::Precision::kExact);
    op.insert(op.end(), r.out[0].begin(), r.out[0].end());
    lp.insert(lp.end(), r.lse[0].begin(), r.lse[0].end());
  }
  std::vector<double> out, lse;
  ref::reference_combine(3, 4, 8, op, lp, std::vector<double>(4, 0.7), &out, &lse);
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(out[i], full.out[0][i], 1e-13);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(lse[i], full.lse[0][i], 1e-13);
}

// Backward formulas vs central differences of the forward, all in double.
struct FdConfig {
  const char* name;
  bool causal;
  int window_left;
  double softcap;
  bool alibi, sinks;
  double dropout;
};

class ReferenceBwdFd : public ::testing::TestWithParam<FdConfig> {};

TEST_P(ReferenceBwdFd, MatchesFiniteDifferences) {
  const FdConfig cfg = GetParam();
  std::mt19937_64 rng(11);
  ref::Problem pb = small_problem(rng, 5, 7, 4, 2, 6);
  pb.opt.causal = cfg.causal;
  pb.opt.window_left = cfg.window_left;
  pb.opt.softcap = cfg.softcap;
  if (cfg.alibi) pb.opt.alibi = {0.3, 0.1, 0.25, 0.05};
  if (cfg.sinks) pb.opt.sinks = {0.2, -0.4, 1.1, 0.0};
  pb.opt.dropout_p = cfg.dropout;
  pb.opt.seed = 99;
  std::normal_distribution<double> nd;
  std::vector<std::vector<double>> dout(2);
  for (int b = 0; b < 2; ++b)
    for (int64_t i = 0; i < pb.seqs[b].sq * 4 * 6; ++i) dout[b].push_back(nd(rng));
  const ref::BwdResult g = ref::reference_bwd(pb, dout, ref::Precision::kExact);
  auto loss = [&](const ref::Problem& p) {
    const ref::FwdResult r = ref::reference_fwd(p, ref::Precision::kExact);
    double l = 0;
    for (int b = 0; b < 2; ++b)
      for (size_t i = 0; i < r.out[b].size(); ++i) l += r.out[b][i] * dout[b][i];
    return l;
  };
  const double eps = 1e-5;
  double worst = 0, gmax = 0;
  for (int b = 0; b < 2; ++b) {
    for (int which = 0; which < 3; ++which) {
      const size_t n = (which == 0 ? pb.seqs[b].q : which == 1 ? pb.seqs[b].k : pb.seqs[b].v).size();
      for (size_t i = 0; i < n; ++i) {
        ref::Problem p = pb, m = pb;
        auto pick = [&](ref::Problem& x) -> double& {
          return which == 0 ? x.seqs[b].q[i] : which == 1 ? x.seqs[b].k[i] : x.seqs[b].v[i];
        };
        pick(p) += eps;
        pick(m) -= eps;
        const double fd = (loss(p) - loss(m)) / (2 * eps);
        const double an = (which == 0 ? g.dq : which == 1 ? g.dk : g.dv)[b][i];
        worst = std::max(worst, std::fabs(fd - an));
        gmax = std::max(gmax, std::fabs(an));
      }
    }
  }
  if (cfg.sinks) {
    for (int h = 0; h < 4; ++h) {
      ref::Problem p = pb, m = pb;
      p.opt.sinks[h] += eps;
      m.opt.sinks[h] -= eps;
      const double fd = (loss(p) - loss(m)) / (2 * eps);
      worst = std::max(worst, std::fabs(fd - g.dsinks[h]));
    }
  }
  EXPECT_GT(gmax, 0.1);  // the gradients are not trivially zero
  EXPECT_LT(worst, 1e-7) << "max |analytic - finite difference|";
}

INSTANTIATE_TEST_SUITE_P(
    Configs, ReferenceBwdFd,
    ::testing::Values(FdConfig{"plain", false, -1, 0, false, false, 0}, FdConfig{"causal", true, -1, 0, false, false, 0},
                      FdConfig{"local", true, 2, 0, false, false, 0}, FdConfig{"softcap", false, -1, 1.3, false, false, 0},
                      FdConfig{"alibi", false, -1, 0, true, false, 0}, FdConfig{"sinks", true, -1, 0, false, true, 0},
                      FdConfig{"dropout", false, -1, 0, false, false, 0.3},
                      FdConfig{"all", true, 3, 2.0, true, true, 0.2}),
    [](const ::testing::TestParamInfo<FdConfig>& i) { return std::string(i.param.name); });

}  // namespace
