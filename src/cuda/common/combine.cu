// Split-KV combine: out = sum_s exp(lse_s - lse) * out_s, lse = log(sum_s exp(lse_s) [+ exp(sink)]).
// One warp per (batch, row, head); lanes stride over head_dim. Partials with lse_s = -inf or +inf (a
// split that saw no key) weigh 0; a row with no key in any split gets out 0, LSE +inf (or the sink).
#include <cmath>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/common/combine.h"

namespace flashattn {
namespace kern {
namespace {

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

constexpr int kWarpsPerBlock = 4;

template <typename T>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) combine_kernel(const CombineParams p) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t rows = static_cast<int64_t>(p.batch) * p.seqlen_q * p.nheads;
  if (item >= rows) return;
  const int h = static_cast<int>(item % p.nheads);
  const int64_t r = (item / p.nheads) % p.seqlen_q;
  const int b = static_cast<int>(item / (static_cast<int64_t>(p.nheads) * p.seqlen_q));

  auto lse_of = [&](int s) {
    const float v = p.lse_partial[s * p.lp_split_stride + b * p.lp_batch_stride + h * p.lp_head_stride +
                                  r * p.lp_row_stride];
    return v == INFINITY ? -INFINITY : v;  // a split with no key reports +inf: it contributes nothing
  };
  float top = -INFINITY;
  for (int s = 0; s < p.num_splits; ++s) top = fmaxf(top, lse_of(s));
  const bool has_sink = p.sinks != nullptr;
  const float sink = has_sink ? p.sinks[h] : -INFINITY;
  const float ref = fmaxf(top, sink);
  float denom = 0.f;
  if (ref != -INFINITY) {
    for (int s = 0; s < p.num_splits; ++s) denom += expf(lse_of(s) - ref);
    if (has_sink) denom += expf(sink - ref);
  }
  const bool empty = top == -INFINITY;
  float lse_out = empty ? (has_sink ? sink : INFINITY) : ref + logf(denom);

  T* out = static_cast<T*>(p.out) + b * p.o_batch_stride + r * p.o_row_stride + h * p.o_head_stride;
  for (int d = lane; d < p.head_dim; d += 32) {
    float acc = 0.f;
    if (!empty) {
      for (int s = 0; s < p.num_splits; ++s) {
        const float w = expf(lse_of(s) - lse_out);
        if (w != 0.f) {
          acc += w * p.out_partial[s * p.op_split_stride + b * p.op_batch_stride + r * p.op_row_stride +
                                   h * p.op_head_stride + d];
        }
      }
    }
    out[d] = from_float<T>(acc);
  }
  if (lane == 0 && p.lse != nullptr) {
    p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + r * p.lse_row_stride] = lse_out;
  }
}

}  // namespace

int launch_combine(const CombineParams& p, void* stream) {
  const int64_t rows = static_cast<int64_t>(p.batch) * p.seqlen_q * p.nheads;
  if (rows <= 0 || p.head_dim <= 0) return 0;
  const dim3 grid(static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock));
  const dim3 block(kWarpsPerBlock * 32);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (p.out_dtype) {
    case DType::kFP32:
      combine_kernel<float><<<grid, block, 0, s>>>(p);
      break;
    case DType::kFP16:
      combine_kernel<__half><<<grid, block, 0, s>>>(p);
      break;
    case DType::kBF16:
      combine_kernel<__nv_bfloat16><<<grid, block, 0, s>>>(p);
      break;
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace kern
}  // namespace flashattn
