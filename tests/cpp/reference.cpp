// fp64 reference: see reference.h. Written from docs/semantics.md and docs/dropout.md only.
#include "reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace ref {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFP32: return "fp32";
    case DType::kFP16: return "fp16";
    case DType::kBF16: return "bf16";
  }
  return "?";
}

// Rounds |x| to a grid whose spacing is the dtype's ulp at |x|: `mant_bits` explicit mantissa bits and
// `min_exp` the smallest normal exponent (below it the spacing stays fixed: subnormals).
static double round_binary(double x, int mant_bits, int min_exp, double max_finite) {
  if (!std::isfinite(x) || x == 0) return x;
  const double a = std::fabs(x);
  int e;
  std::frexp(a, &e);  // a = m * 2^e with m in [0.5, 1): the leading bit has weight 2^(e-1)
  const int lead = std::max(e - 1, min_exp);
  const double ulp = std::ldexp(1.0, lead - mant_bits);
  // a / ulp is exact (power-of-two divisor); nearbyint rounds half to even in the default mode.
  double r = std::nearbyint(a / ulp) * ulp;
  if (r > max_finite) r = std::numeric_limits<double>::infinity();
  return std::copysign(r, x);
}

double round_to(DType t, double x) {
  switch (t) {
    case DType::kFP32: return static_cast<double>(static_cast<float>(x));
    case DType::kFP16: return round_binary(x, 10, -14, 65504.0);
    case DType::kBF16: return round_binary(x, 7, -126, 3.3895313892515355e38);
  }
  return x;
}

// ---- Philox4x32-10 ----
// One round: two 32x32->64 multiplies; the high halves are mixed with the other two words and the key.
Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
  const uint64_t kMulA = 0xD2511F53u, kMulB = 0xCD9E8D57u;  // multipliers of the paper
  const uint32_t kBumpA = 0x9E3779B9u, kBumpB = 0xBB67AE85u;  // Weyl key increments (golden ratio, sqrt 3)
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {  // the key schedule advances between rounds
      k0 += kBumpA;
      k1 += kBumpB;
    }
    const uint64_t pa = kMulA * c.w[0];
    const uint64_t pb = kMulB * c.w[2];
    Philox4 n;
    n.w[0] = static_cast<uint32_t>(pb >> 32) ^ c.w[1] ^ k0;
    n.w[1] = static_cast<uint32_t>(pb);
    n.w[2] = static_cast<uint32_t>(pa >> 32) ^ c.w[3] ^ k1;
    n.w[3] = static_cast<uint32_t>(pa);
    c = n;
  }
  return c;
}

uint32_t dropout_threshold(double p) {
  const double t = std::floor((1.0 - p) * 65536.0 + 0.5);
  if (t < 1) return 1;
  if (t > 65536) return 65536;
  return static_cast<uint32_t>(t);
}

bool dropout_keep(uint64_t seed, uint64_t offset, int64_t bh, int64_t i, int64_t j, double p) {
  // docs/dropout.md: counter = (j / 8, i, b*h_total + h, low word of offset); key = (low word of seed,
  // high word of seed xor high word of offset). Column j takes 16-bit lane j % 8 (low half first).
  Philox4 c{{static_cast<uint32_t>(j >> 3), static_cast<uint32_t>(i), static_cast<uint32_t>(bh),
             static_cast<uint32_t>(offset & 0xFFFFFFFFu)}};
  const Philox4 r = philox4x32_10(c, static_cast<uint32_t>(seed & 0xFFFFFFFFu),
                                  static_cast<uint32_t>(seed >> 32) ^ static_cast<uint32_t>(offset >> 32));
  const int lane = static_cast<int>(j & 7);
  const uint32_t u16 = (r.w[lane / 2] >> (16 * (lane % 2))) & 0xFFFFu;
  return u16 < dropout_threshold(p);
}

// ---- Core attention ----
bool visible(const Options& o, int64_t sq, int64_t sk, int64_t i, int64_t j) {
  const int64_t diag = i + sk - sq;  // bottom-right alignment
  const int64_t right = o.causal ? 0 : o.window_right;
  if (o.window_left >= 0 && j < diag - o.window_left) return false;
  if (right >= 0 && j > diag + right) return false;
  return true;
}

namespace {

double default_scale(const Problem& pb) {
  return pb.opt.scale > 0 ? pb.opt.scale : 1.0 / std::sqrt(static_cast<double>(pb.head_dim));
}

double alibi_slope(const Problem& pb, int64_t b, int h) {
  if (pb.opt.alibi.empty()) return 0;
  return pb.opt.alibi_per_batch ? pb.opt.alibi[b * pb.nheads + h] : pb.opt.alibi[h];
}

// Scores of one (sequence, head, row): s_j for every key, plus tanh terms for the softcap derivative.
struct RowScores {
  std::vector<double> s, t;   // final score and tanh(u / softcap) (0 without softcap)
  std::vector<char> vis;      // visible keys
  bool any = false;
};

RowScores row_scores(const Problem& pb, Precision prec, int64_t b, int h, int64_t i) {
  const Seq& sq = pb.seqs[b];
  const int d = pb.head_dim, hk = pb.nheads_k, hq = pb.nheads;
  const int kvh = h / (hq / hk);
  const double scale = default_scale(pb);
  const double cap = pb.opt.softcap;
  const double slope = alibi_slope(pb, b, h);
  RowScores r;
  r.s.assign(sq.sk, 0);
  r.t.assign(sq.sk, 0);
  r.vis.assign(sq.sk, 0);
  const double* qi = &sq.q[(i * hq + h) * d];
  for (int64_t j = 0; j < sq.sk; ++j) {
    if (!visible(pb.opt, sq.sq, sq.sk, i, j)) continue;
    const double* kj = &sq.k[(j * hk + kvh) * d];
    double dot = 0;
    for (int x = 0; x < d; ++x) dot += qi[x] * kj[x];
    double s = rnd(prec, pb.dtype, dot * scale);
    if (cap > 0) {
      const double t = rnd(prec, pb.dtype, std::tanh(rnd(prec, pb.dtype, s / cap)));
      r.t[j] = t;
      s = rnd(prec, pb.dtype, cap * t);
    }
    if (!pb.opt.alibi.empty()) {
      const double dist = std::fabs(static_cast<double>(i + sq.sk - sq.sq - j));
      s = rnd(prec, pb.dtype, s - slope * dist);
    }
    r.s[j] = s;
    r.vis[j] = 1;
    r.any = true;
  }
  return r;
}

// Softmax of a row: P_j (before dropout, rounded in kLow) and the LSE (with the sink when given).
double row_softmax(const Problem& pb, Precision prec, int h, const RowScores& r, std::vector<double>* p) {
  const bool has_sink = !pb.opt.sinks.empty();
  p->assign(r.s.size(), 0);
  if (!r.any) return has_sink ? pb.opt.sinks[h] : std::numeric_limits<double>::infinity();
  double m = -std::numeric_limits<double>::infinity();
  for (size_t j = 0; j < r.s.size(); ++j)
    if (r.vis[j]) m = std::max(m, r.s[j]);
  if (has_sink) m = std::max(m, pb.opt.sinks[h]);
  double z = 0;
  for (size_t j = 0; j < r.s.size(); ++j)
    if (r.vis[j]) z += std::exp(r.s[j] - m);
  if (has_sink) z += std::exp(pb.opt.sinks[h] - m);
  const double lse = m + std::log(z);
  for (size_t j = 0; j < r.s.size(); ++j)
    if (r.vis[j]) (*p)[j] = rnd(prec, pb.dtype, std::exp(r.s[j] - lse));
  return lse;
}

// Dropout multiplier D(i, j): keep / (1 - p).
double drop_factor(const Problem& pb, int64_t b, int h, int64_t i, int64_t j) {
  if (pb.opt.dropout_p <= 0) return 1.0;
  const int64_t bh = b * pb.nheads + h;
  return dropout_keep(pb.opt.seed, pb.opt.offset, bh, i, j, pb.opt.dropout_p) ? 1.0 / (1.0 - pb.opt.dropout_p)
                                                                                : 0.0;
}

void check_problem(const Problem& pb) {
  if (pb.nheads <= 0 || pb.nheads_k <= 0 || pb.nheads % pb.nheads_k != 0 || pb.head_dim <= 0)
    throw std::invalid_argument("reference: bad head configuration");
  for (const Seq& s : pb.seqs) {
    if (static_cast<int64_t>(s.q.size()) != s.sq * pb.nheads * pb.head_dim ||
        static_cast<int64_t>(s.k.size()) != s.sk * pb.nheads_k * pb.head_dim ||
        s.v.size() != s.k.size())
      throw std::invalid_argument("reference: sequence tensor sizes do not match sq/sk");
  }
}

}  // namespace

FwdResult reference_fwd(const Problem& pb, Precision prec) {
  check_problem(pb);
  const int d = pb.head_dim, hq = pb.nheads, hk = pb.nheads_k;
  FwdResult res;
  res.out.resize(pb.seqs.size());
  res.lse.resize(pb.seqs.size());
  for (size_t b = 0; b < pb.seqs.size(); ++b) {
    const Seq& sq = pb.seqs[b];
    res.out[b].assign(sq.sq * hq * d, 0);
    res.lse[b].assign(hq * sq.sq, 0);
    for (int h = 0; h < hq; ++h) {
      const int kvh = h / (hq / hk);
      for (int64_t i = 0; i < sq.sq; ++i) {
        const RowScores r = row_scores(pb, prec, b, h, i);
        std::vector<double> p;
        res.lse[b][h * sq.sq + i] = row_softmax(pb, prec, h, r, &p);
        double* o = &res.out[b][(i * hq + h) * d];
        for (int64_t j = 0; j < sq.sk; ++j) {
          if (!r.vis[j]) continue;
          const double pd = rnd(prec, pb.dtype, p[j] * drop_factor(pb, b, h, i, j));
          if (pd == 0) continue;
          const double* vj = &sq.v[(j * hk + kvh) * d];
          for (int x = 0; x < d; ++x) o[x] += pd * vj[x];
        }
        for (int x = 0; x < d; ++x) o[x] = rnd(prec, pb.dtype, o[x]);
      }
    }
  }
  return res;
}

BwdResult reference_bwd(const Problem& pb, const std::vector<std::vector<double>>& dout, Precision prec) {
  check_problem(pb);
  if (dout.size() != pb.seqs.size()) throw std::invalid_argument("reference_bwd: dout per sequence");
  const int d = pb.head_dim, hq = pb.nheads, hk = pb.nheads_k;
  const double scale = default_scale(pb);
  const double cap = pb.opt.softcap;
  const bool has_sink = !pb.opt.sinks.empty();
  BwdResult g;
  g.dq.resize(pb.seqs.size());
  g.dk.resize(pb.seqs.size());
  g.dv.resize(pb.seqs.size());
  if (has_sink) g.dsinks.assign(hq, 0);
  if (has_sink) g.dsinks_scale.assign(hq, 0);
  for (size_t b = 0; b < pb.seqs.size(); ++b) {
    const Seq& sq = pb.seqs[b];
    g.dq[b].assign(sq.q.size(), 0);
    g.dk[b].assign(sq.k.size(), 0);
    g.dv[b].assign(sq.v.size(), 0);
    std::vector<double> dq_sens(has_sink ? sq.q.size() : 0, 0), dk_sens(has_sink ? sq.k.size() : 0, 0);
    for (int h = 0; h < hq; ++h) {
      const int kvh = h / (hq / hk);
      for (int64_t i = 0; i < sq.sq; ++i) {
        const RowScores r = row_scores(pb, prec, b, h, i);
        if (!r.any) continue;  // a row that sees nothing has no gradient (and its sink term is 0: out = 0)
        std::vector<double> p;
        const double lse = row_softmax(pb, prec, h, r, &p);
        const double* doi = &dout[b][(i * hq + h) * d];
        const double* qi = &sq.q[(i * hq + h) * d];
        // dP_j = D_j * (dO_i . v_j); Delta_i = sum_j P_j dP_j (= dO_i . O_i).
        std::vector<double> dp(sq.sk, 0), dfac(sq.sk, 0), o(d, 0);
        double delta = 0;
        for (int64_t j = 0; j < sq.sk; ++j) {
          if (!r.vis[j]) continue;
          const double* vj = &sq.v[(j * hk + kvh) * d];
          double dot = 0;
          for (int x = 0; x < d; ++x) dot += doi[x] * vj[x];
          dfac[j] = drop_factor(pb, b, h, i, j);
          dp[j] = rnd(prec, pb.dtype, rnd(prec, pb.dtype, dot) * dfac[j]);
          delta += p[j] * dp[j];
          const double pd = rnd(prec, pb.dtype, p[j] * dfac[j]);
          for (int x = 0; x < d; ++x) o[x] += pd * vj[x];
        }
        if (prec == Precision::kLow) {
          // A backward in the input dtype only has the output stored in that dtype: Delta = dO . round(O).
          // (In exact arithmetic both forms are equal; rounded, they differ by the output's rounding.)
          delta = 0;
          for (int x = 0; x < d; ++x) delta += doi[x] * round_to(pb.dtype, o[x]);
        }
        if (has_sink) {
          double mag2 = 0;
          for (int x = 0; x < d; ++x) mag2 += doi[x] * o[x] * doi[x] * o[x];
          const double ps = std::exp(pb.opt.sinks[h] - lse);
          g.dsinks[h] += -ps * delta;
          g.dsinks_scale[h] += ps * ps * mag2;  // squared here, rooted below
          double dmag = 0;
          for (int x = 0; x < d; ++x) dmag += std::fabs(doi[x] * o[x]);
          for (int64_t j = 0; j < sq.sk; ++j) {
            if (!r.vis[j]) continue;
            const double w = p[j] * scale * dmag;
            const double* kj = &sq.k[(j * hk + kvh) * d];
            for (int x = 0; x < d; ++x) {
              dq_sens[(i * hq + h) * d + x] += w * std::fabs(kj[x]);
              dk_sens[(j * hk + kvh) * d + x] += w * std::fabs(qi[x]);
            }
          }
        }
        double* dqi = &g.dq[b][(i * hq + h) * d];
        for (int64_t j = 0; j < sq.sk; ++j) {
          if (!r.vis[j]) continue;
          double* dvj = &g.dv[b][(j * hk + kvh) * d];
          const double pd = rnd(prec, pb.dtype, p[j] * dfac[j]);
          for (int x = 0; x < d; ++x) dvj[x] += pd * doi[x];
          double ds = rnd(prec, pb.dtype, p[j] * (dp[j] - delta));
          if (cap > 0) ds = rnd(prec, pb.dtype, ds * (1.0 - r.t[j] * r.t[j]));  // d(c tanh(u/c))/du
          const double* kj = &sq.k[(j * hk + kvh) * d];
          double* dkj = &g.dk[b][(j * hk + kvh) * d];
          for (int x = 0; x < d; ++x) {
            dqi[x] += ds * scale * kj[x];
            dkj[x] += ds * scale * qi[x];
          }
        }
      }
    }
    for (auto* t : {&g.dq[b], &g.dk[b], &g.dv[b]})
      for (double& x : *t) x = rnd(prec, pb.dtype, x);
    for (double x : dq_sens) g.dq_delta_scale = std::max(g.dq_delta_scale, x);
    for (double x : dk_sens) g.dk_delta_scale = std::max(g.dk_delta_scale, x);
  }
  for (double& x : g.dsinks_scale) x = std::sqrt(x);
  return g;
}

// ---- Frontends ----
std::vector<double> gather_paged(const std::vector<double>& pool, int64_t page_size, int64_t hk, int64_t d,
                                 const int32_t* table_row, int64_t sk) {
  std::vector<double> k(sk * hk * d);
  for (int64_t t = 0; t < sk; ++t) {
    const int64_t page = table_row[t / page_size];
    const int64_t row = t % page_size;
    for (int64_t x = 0; x < hk * d; ++x) k[t * hk * d + x] = pool[(page * page_size + row) * hk * d + x];
  }
  return k;
}

void apply_rotary(double* x, int64_t rotary_dim, bool interleaved, const std::vector<double>& cos_tab,
                  const std::vector<double>& sin_tab, int64_t pos) {
  const int64_t half = rotary_dim / 2;
  // A position past the table takes its last row (docs/semantics.md, KV cache append and rotary).
  pos = std::min<int64_t>(std::max<int64_t>(pos, 0), static_cast<int64_t>(cos_tab.size()) / half - 1);
  for (int64_t r = 0; r < half; ++r) {
    const int64_t a = interleaved ? 2 * r : r;
    const int64_t b = interleaved ? 2 * r + 1 : r + half;
    const double c = cos_tab[pos * half + r], s = sin_tab[pos * half + r];
    const double xa = x[a], xb = x[b];
    x[a] = xa * c - xb * s;
    x[b] = xa * s + xb * c;
  }
}

KvCacheResult reference_fwd_kvcache(const KvCache& kc, Precision prec) {
  const int64_t hk = kc.nheads_k, d = kc.head_dim, hq = kc.nheads;
  KvCacheResult res;
  res.k_cache = kc.k_cache;
  res.v_cache = kc.v_cache;
  const bool paged = kc.page_size > 0;
  // A dense cache is (cache_rows, cache_len, hk, d): geometry left unset would fold every row onto row 0.
  if (!paged && static_cast<int64_t>(kc.k_cache.size()) != kc.cache_rows * kc.cache_len * hk * d) {
    throw std::invalid_argument("reference_fwd_kvcache: dense k_cache size != cache_rows * cache_len * hk * d");
  }
  // Offset of (cache row or batch element b, position t, head 0, dim 0) in the cache storage.
  auto cache_off = [&](int64_t b, int64_t row, int64_t t) -> int64_t {
    if (paged) {
      const int64_t page = kc.block_table[b * kc.pages_per_seq + t / kc.page_size];
      return (page * kc.page_size + t % kc.page_size) * hk * d;
    }
    return (row * kc.cache_len + t) * hk * d;
  };
  const bool local = kc.opt.causal || kc.opt.window_left >= 0 || kc.opt.window_right >= 0;
  Problem& pb = res.problem;
  pb.dtype = kc.dtype;
  pb.nheads = kc.nheads;
  pb.nheads_k = kc.nheads_k;
  pb.head_dim = kc.head_dim;
  pb.opt = kc.opt;
  pb.seqs.resize(kc.batch);
  for (int64_t b = 0; b < kc.batch; ++b) {
    const int64_t row = kc.cache_batch_idx.empty() ? b : kc.cache_batch_idx[b];
    const int64_t cs = kc.cache_seqlens[b];
    const int64_t lp = kc.cache_leftpad.empty() ? 0 : kc.cache_leftpad[b];
    // Append: new token t goes to cache position cs + t; k is rotated at that position first.
    for (int64_t t = 0; t < kc.seqlen_new; ++t) {
      const int64_t off = cache_off(b, row, cs + t);
      for (int64_t g = 0; g < hk; ++g) {
        std::vector<double> kv(kc.k_new.begin() + ((b * kc.seqlen_new + t) * hk + g) * d,
                               kc.k_new.begin() + ((b * kc.seqlen_new + t) * hk + g + 1) * d);
        if (kc.rotary_dim > 0) {
          apply_rotary(kv.data(), kc.rotary_dim, kc.rotary_interleaved, kc.rotary_cos, kc.rotary_sin, cs + t);
          for (double& x : kv) x = rnd(prec, kc.dtype, x);  // the cache stores the input dtype
        }
        for (int64_t x = 0; x < d; ++x) {
          res.k_cache[off + g * d + x] = kv[x];
          res.v_cache[off + g * d + x] = kc.v_new[((b * kc.seqlen_new + t) * hk + g) * d + x];
        }
      }
    }
    Seq& s = pb.seqs[b];
    s.sq = kc.seqlen_q;
    s.sk = cs + kc.seqlen_new - lp;
    s.k.resize(s.sk * hk * d);
    s.v.resize(s.sk * hk * d);
    for (int64_t j = 0; j < s.sk; ++j) {
      const int64_t off = cache_off(b, row, lp + j);
      for (int64_t x = 0; x < hk * d; ++x) {
        s.k[j * hk * d + x] = res.k_cache[off + x];
        s.v[j * hk * d + x] = res.v_cache[off + x];
      }
    }
    s.q.assign(kc.q.begin() + b * kc.seqlen_q * hq * d, kc.q.begin() + (b + 1) * kc.seqlen_q * hq * d);
    if (kc.rotary_dim > 0) {
      for (int64_t i = 0; i < s.sq; ++i) {
        const int64_t pos = local ? cs + i : cs;
        for (int64_t h = 0; h < hq; ++h) {
          double* x = &s.q[(i * hq + h) * d];
          apply_rotary(x, kc.rotary_dim, kc.rotary_interleaved, kc.rotary_cos, kc.rotary_sin, pos);
          for (int64_t e = 0; e < d; ++e) x[e] = rnd(prec, kc.dtype, x[e]);
        }
      }
    }
  }
  res.fwd = reference_fwd(pb, prec);
  return res;
}

void reference_combine(int64_t splits, int64_t rows, int64_t d, const std::vector<double>& out_partial,
                       const std::vector<double>& lse_partial, const std::vector<double>& sink_per_row,
                       std::vector<double>* out, std::vector<double>* lse) {
  out->assign(rows * d, 0);
  lse->assign(rows, 0);
  for (int64_t r = 0; r < rows; ++r) {
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t s = 0; s < splits; ++s) m = std::max(m, lse_partial[s * rows + r]);
    const bool sink = !sink_per_row.empty() && !std::isnan(sink_per_row[r]);
    if (sink) m = std::max(m, sink_per_row[r]);
    if (std::isinf(m) && m < 0) {  // nothing anywhere: the empty-row convention
      (*lse)[r] = std::numeric_limits<double>::infinity();
      continue;
    }
    double z = 0;
    for (int64_t s = 0; s < splits; ++s) z += std::exp(lse_partial[s * rows + r] - m);
    if (sink) z += std::exp(sink_per_row[r] - m);
    const double l = m + std::log(z);
    (*lse)[r] = l;
    for (int64_t s = 0; s < splits; ++s) {
      const double w = std::exp(lse_partial[s * rows + r] - l);
      for (int64_t x = 0; x < d; ++x) (*out)[r * d + x] += w * out_partial[(s * rows + r) * d + x];
    }
  }
}

}  // namespace ref
