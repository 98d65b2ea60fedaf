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
constexpr int kMaxCombineSplits = 256;  // the validator's bound on num_splits (core/validate.cpp)

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// The merge is latency-bound (decode: a handful of rows, tens of splits), so every step is laid out for
// independent loads: the splits' LSEs are read one per lane and reduced with shuffles, the weights go to
// shared memory, and the output loop reads the splits' partials with 16-byte loads when the layout allows,
// unrolled so that many are in flight. The reduction order is fixed: deterministic for a fixed num_splits.
template <typename T>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) combine_kernel(const CombineParams p, bool vec4) {
  __shared__ float weights[kWarpsPerBlock][kMaxCombineSplits];
  const int warp = threadIdx.x / 32;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;
  const int lane = threadIdx.x % 32;
  const int64_t rows = static_cast<int64_t>(p.batch) * p.seqlen_q * p.nheads;
  if (item >= rows) return;
  const int h = static_cast<int>(item % p.nheads);
  const int64_t r = (item / p.nheads) % p.seqlen_q;
  const int b = static_cast<int>(item / (static_cast<int64_t>(p.nheads) * p.seqlen_q));
  const int splits = p.num_splits;

  auto lse_of = [&](int s) {
    const float v = p.lse_partial[s * p.lp_split_stride + b * p.lp_batch_stride + h * p.lp_head_stride +
                                  r * p.lp_row_stride];
    return v == INFINITY ? -INFINITY : v;  // a split with no key reports +inf: it contributes nothing
  };
  float* w = weights[warp];
  float top = -INFINITY;
  for (int s = lane; s < splits; s += 32) {
    w[s] = lse_of(s);
    top = fmaxf(top, w[s]);
  }
  top = warp_max(top);
  const bool has_sink = p.sinks != nullptr;
  const float sink = has_sink ? p.sinks[h] : -INFINITY;
  const float ref = fmaxf(top, sink);
  float denom = 0.f;
  for (int s = lane; s < splits; s += 32) {
    w[s] = ref == -INFINITY ? 0.f : expf(w[s] - ref);
    denom += w[s];
  }
  denom = warp_sum(denom);
  if (has_sink && ref != -INFINITY) denom += expf(sink - ref);
  const bool empty = top == -INFINITY;
  const float lse_out = empty ? (has_sink ? sink : INFINITY) : ref + logf(denom);
  const float inv = empty ? 0.f : 1.f / denom;
  __syncwarp();

  const float* part = p.out_partial + b * p.op_batch_stride + r * p.op_row_stride + h * p.op_head_stride;
  T* out = static_cast<T*>(p.out) + b * p.o_batch_stride + r * p.o_row_stride + h * p.o_head_stride;
  if (vec4) {
    for (int d = lane * 4; d < p.head_dim; d += 128) {
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
      for (int s = 0; s < splits; ++s) {
        const float ws = w[s];
        const float4 x = *reinterpret_cast<const float4*>(part + s * p.op_split_stride + d);
        if (ws != 0.f) {  // a split with no key may hold anything
          acc.x += ws * x.x;
          acc.y += ws * x.y;
          acc.z += ws * x.z;
          acc.w += ws * x.w;
        }
      }
      out[d] = from_float<T>(acc.x * inv);
      out[d + 1] = from_float<T>(acc.y * inv);
      out[d + 2] = from_float<T>(acc.z * inv);
      out[d + 3] = from_float<T>(acc.w * inv);
    }
  } else {
    for (int d = lane; d < p.head_dim; d += 32) {
      float acc = 0.f;
#pragma unroll 8
      for (int s = 0; s < splits; ++s) {
        const float ws = w[s];
        const float x = part[s * p.op_split_stride + d];
        if (ws != 0.f) acc += ws * x;
      }
      out[d] = from_float<T>(acc * inv);
    }
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
  // 16-byte partial loads when every row start of the partials is 16-byte aligned.
  const auto a4 = [](int64_t x) { return x % 4 == 0; };
  const bool vec4 = p.head_dim % 4 == 0 && a4(p.op_split_stride) && a4(p.op_batch_stride) && a4(p.op_row_stride) &&
                    a4(p.op_head_stride) && reinterpret_cast<uintptr_t>(p.out_partial) % 16 == 0;
  switch (p.out_dtype) {
    case DType::kFP32:
      combine_kernel<float><<<grid, block, 0, s>>>(p, vec4);
      break;
    case DType::kFP16:
      combine_kernel<__half><<<grid, block, 0, s>>>(p, vec4);
      break;
    case DType::kBF16:
      combine_kernel<__nv_bfloat16><<<grid, block, 0, s>>>(p, vec4);
      break;
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace kern
}  // namespace flashattn
