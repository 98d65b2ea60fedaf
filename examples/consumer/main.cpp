// Causal attention on the CPU backend through the C++ API, checked against a direct computation.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "flashattn/flashattn.hpp"

int main() {
  const int b = 2, s = 77, h = 4, d = 64;
  std::vector<float> q(b * s * h * d), k(q.size()), v(q.size()), out(q.size(), NAN);
  std::mt19937 gen(7);
  std::normal_distribution<float> normal;
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = normal(gen);

  flashattn::FwdArgs args;
  args.q = flashattn::tensor(q.data(), FLASHATTN_DTYPE_FP32, {b, s, h, d});
  args.k = flashattn::tensor(k.data(), FLASHATTN_DTYPE_FP32, {b, s, h, d});
  args.v = flashattn::tensor(v.data(), FLASHATTN_DTYPE_FP32, {b, s, h, d});
  args.out = flashattn::tensor(out.data(), FLASHATTN_DTYPE_FP32, {b, s, h, d});
  args.opt.causal = 1;
  flashattn::Workspace ws;
  try {
    flashattn::fwd(args, ws);
  } catch (const flashattn::Exception& e) {
    std::fprintf(stderr, "flashattn error: %s\n", e.what());
    return 1;
  }

  // Direct softmax(q k^T / sqrt(d)) v for every row, causal.
  double max_err = 0;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  auto at = [&](const std::vector<float>& t, int bi, int si, int hi, int di) {
    return static_cast<double>(t[((static_cast<size_t>(bi) * s + si) * h + hi) * d + di]);
  };
  for (int bi = 0; bi < b; ++bi)
    for (int hi = 0; hi < h; ++hi)
      for (int i = 0; i < s; ++i) {
        std::vector<double> p(i + 1);
        double m = -INFINITY, z = 0;
        for (int j = 0; j <= i; ++j) {
          double dot = 0;
          for (int di = 0; di < d; ++di) dot += at(q, bi, i, hi, di) * at(k, bi, j, hi, di);
          p[j] = dot * scale;
          m = std::max(m, p[j]);
        }
        for (int j = 0; j <= i; ++j) z += (p[j] = std::exp(p[j] - m));
        for (int di = 0; di < d; ++di) {
          double o = 0;
          for (int j = 0; j <= i; ++j) o += p[j] / z * at(v, bi, j, hi, di);
          max_err = std::max(max_err, std::fabs(o - at(out, bi, i, hi, di)));
        }
      }
  std::printf("flashattn %s: causal fwd b=%d s=%d h=%d d=%d on the CPU, max abs error %.2e\n", flashattn_version(), b,
              s, h, d, max_err);
  return max_err < 1e-4 ? 0 : 1;
}
