// Merge of split-KV partial results (CombineParams) on the CPU.
//
// lse = logsumexp_s(lse_s) (+ the sink once), out = sum_s exp(lse_s - lse) * out_s. A split that saw no
// key reports lse_s = -inf (or +inf, the empty-row convention of a complete pass); both are skipped. A
// row with no live split gets out 0 and lse +inf (or lse = sink).
#include <cmath>

#include "core/backend.h"
#include "cpu/cpu_common.h"
#include "cpu/cpu_kernels.h"

namespace flashattn {
namespace cpu {

void combine(const CombineParams& p) {
  const Kernels& kn = kernels();
  const int64_t rows = int64_t(p.batch) * p.seqlen_q * p.nheads;
  const int d = p.head_dim;
  const int threads = resolved_threads();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t x = 0; x < rows; ++x) {
    const int h = static_cast<int>(x % p.nheads);
    const int64_t i = (x / p.nheads) % p.seqlen_q;
    const int b = static_cast<int>(x / (int64_t(p.nheads) * p.seqlen_q));
    const float* lp = p.lse_partial + b * p.lp_batch_stride + h * p.lp_head_stride + i * p.lp_row_stride;
    float mx = -kInf;
    for (int s = 0; s < p.num_splits; ++s) {
      const float v = lp[s * p.lp_split_stride];
      if (v < kInf && v > mx) mx = v;
    }
    const bool sinks = p.sinks != nullptr;
    const float sink = sinks ? p.sinks[h] : 0.f;
    if (sinks && sink > mx) mx = sink;
    float lse = kInf;
    double sum = 0.0;
    if (mx > -kInf) {
      for (int s = 0; s < p.num_splits; ++s) {
        const float v = lp[s * p.lp_split_stride];
        if (v < kInf) sum += std::exp(double(v) - mx);
      }
      if (sinks) sum += std::exp(double(sink) - mx);
      lse = static_cast<float>(mx + std::log(sum));
    }
    // fp32 accumulation of the weighted partial outputs, split order fixed (deterministic).
    float acc[512];
    char* out = static_cast<char*>(p.out) +
                (b * p.o_batch_stride + i * p.o_row_stride + h * p.o_head_stride) * int64_t(dtype_size(p.out_dtype));
    for (int k0 = 0; k0 < d; k0 += 512) {
      const int dc = d - k0 < 512 ? d - k0 : 512;
      for (int k = 0; k < dc; ++k) acc[k] = 0.f;
      if (lse < kInf) {
        for (int s = 0; s < p.num_splits; ++s) {
          const float v = lp[s * p.lp_split_stride];
          if (!(v < kInf) || v == -kInf) continue;
          const float wgt = static_cast<float>(std::exp(double(v) - lse));
          const float* op = p.out_partial + s * p.op_split_stride + b * p.op_batch_stride + i * p.op_row_stride +
                            h * p.op_head_stride + k0;
          for (int k = 0; k < dc; ++k) acc[k] += wgt * op[k];
        }
      }
      kn.store_row(acc, 1.f, dc, out + k0 * int64_t(dtype_size(p.out_dtype)), p.out_dtype);
    }
    if (p.lse) p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + i * p.lse_row_stride] = lse;
  }
}

}  // namespace cpu
}  // namespace flashattn
