// Split-KV combine: out = sum_s exp(lse_s - lse) * out_s, lse = log(sum_s exp(lse_s) [+ exp(sink)]).
// One CTA of 4 warps per (batch, row, head): the warps share the splits, lanes stride over head_dim.
// Partials with lse_s = -inf or +inf (a split that saw no key) weigh 0; a row with no key in any split
// gets out 0, LSE +inf (or the sink).
#include <atomic>
#include <cmath>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/common/combine.h"
#include "cuda/common/pdl.cuh"

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

constexpr int kWarps = 4;
constexpr int kMaxCombineSplits = 256;  // the validator's bound on num_splits (core/validate.cpp)
constexpr int kColumnChunk = 256;  // columns merged per pass through shared memory

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <int V>
struct FloatVec;
template <>
struct FloatVec<1> {
  using type = float;
};
template <>
struct FloatVec<4> {
  using type = float4;
};

// The merge is latency-bound (decode: a handful of rows, tens of splits), so the work of one row is
// spread wide: warp 0 reduces the splits' LSEs (one per lane, shuffles) into weights in shared memory,
// then each warp sums every 4th split's partial with V-float loads (V = 4: 16 bytes when the layout
// allows), and the four warp sums are added in shared memory. Fixed order: deterministic for a fixed
// num_splits.
template <typename T, int V>
__global__ void __launch_bounds__(kWarps * 32) combine_kernel(const CombineParams p) {
  using Vec = typename FloatVec<V>::type;
  __shared__ float weights[kMaxCombineSplits];
  __shared__ float sums[kWarps][kColumnChunk];
  __shared__ float row_stats[2];  // output LSE, 1 / denominator
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t item = blockIdx.x;
  const int h = static_cast<int>(item % p.nheads);
  const int64_t r = (item / p.nheads) % p.seqlen_q;
  const int b = static_cast<int>(item / (static_cast<int64_t>(p.nheads) * p.seqlen_q));
  const int splits = p.num_splits;
  const bool has_sink = p.sinks != nullptr;
  wait_for_prerequisite_grid();  // launched early (programmatic launch): the partials are written by now

  // Each warp asks for the first column chunk of its splits' O partials (into L1) before warp 0 reads the
  // LSEs, so the weighted sum after the barrier does not wait for a second L2 round trip.
  const float* part = p.out_partial + b * p.op_batch_stride + r * p.op_row_stride + h * p.op_head_stride;
  for (int s = warp; s < splits; s += kWarps) {
    for (int d = lane * 32; d < min(p.head_dim, kColumnChunk); d += 32 * 32) {  // one 128-byte line per lane
      asm volatile("prefetch.global.L1 [%0];" ::"l"(part + s * p.op_split_stride + d));
    }
  }

  if (warp == 0) {
    const float* lse_row = p.lse_partial + b * p.lp_batch_stride + h * p.lp_head_stride + r * p.lp_row_stride;
    float top = -INFINITY;
    for (int s = lane; s < splits; s += 32) {
      const float v = lse_row[s * p.lp_split_stride];
      weights[s] = v == INFINITY ? -INFINITY : v;  // a split with no key reports +inf: it contributes nothing
      top = fmaxf(top, weights[s]);
    }
    top = warp_max(top);
    const float sink = has_sink ? p.sinks[h] : -INFINITY;
    const float ref = fmaxf(top, sink);
    float denom = 0.f;
    for (int s = lane; s < splits; s += 32) {
      weights[s] = ref == -INFINITY ? 0.f : expf(weights[s] - ref);
      denom += weights[s];
    }
    denom = warp_sum(denom);
    if (has_sink && ref != -INFINITY) denom += expf(sink - ref);
    const bool empty = top == -INFINITY;
    if (lane == 0) {
      row_stats[0] = empty ? (has_sink ? sink : INFINITY) : ref + logf(denom);
      row_stats[1] = empty ? 0.f : 1.f / denom;
    }
  }
  __syncthreads();

  T* out = static_cast<T*>(p.out) + b * p.o_batch_stride + r * p.o_row_stride + h * p.o_head_stride;
  const float inv = row_stats[1];
  for (int c0 = 0; c0 < p.head_dim; c0 += kColumnChunk) {
    const int cols = min(kColumnChunk, p.head_dim - c0);
    for (int d = lane * V; d < cols; d += 32 * V) {
      float acc[V] = {};
#pragma unroll 8
      for (int s = warp; s < splits; s += kWarps) {
        const float ws = weights[s];
        const Vec x = *reinterpret_cast<const Vec*>(part + s * p.op_split_stride + c0 + d);
        const float* xs = reinterpret_cast<const float*>(&x);
        if (ws != 0.f) {  // a split with no key may hold anything
#pragma unroll
          for (int i = 0; i < V; ++i) acc[i] += ws * xs[i];
        }
      }
#pragma unroll
      for (int i = 0; i < V; ++i) sums[warp][d + i] = acc[i];
    }
    __syncthreads();
    for (int d = threadIdx.x; d < cols; d += kWarps * 32) {
      float total = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) total += sums[w][d];
      out[c0 + d] = from_float<T>(total * inv);
    }
    __syncthreads();  // sums is refilled by the next chunk
  }
  if (threadIdx.x == 0 && p.lse != nullptr) {
    p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + r * p.lse_row_stride] = row_stats[0];
  }
}

// Programmatic launch needs the combine's wait: only where the kernel that runs was compiled from sm90+
// PTX (a newer GPU JIT-compiling the compute_80 PTX gets the wait-free code and a plain launch). Every
// combine instantiation comes from this TU, so one answer per device serves them all.
bool programmatic_launch_ok(const void* fn) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> known[kMaxDevices];  // 0 unknown, 1 yes, 2 no
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) {
    (void)cudaGetLastError();
    return false;
  }
  int k = known[dev].load(std::memory_order_relaxed);
  if (k == 0) {
    cudaFuncAttributes a{};
    const bool ok = cudaFuncGetAttributes(&a, fn) == cudaSuccess && a.ptxVersion >= 90;
    (void)cudaGetLastError();
    k = ok ? 1 : 2;
    known[dev].store(k, std::memory_order_relaxed);
  }
  return k == 1;
}

template <typename T>
cudaError_t launch_combine_typed(const CombineParams& p, dim3 grid, cudaStream_t s, bool vec4) {
  void (*fn)(const CombineParams) = vec4 ? combine_kernel<T, 4> : combine_kernel<T, 1>;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(kWarps * 32);
  cfg.stream = s;
  cfg.attrs = &attr;
  cfg.numAttrs = programmatic_launch_ok(reinterpret_cast<const void*>(fn)) ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, fn, p);
}

}  // namespace

int launch_combine(const CombineParams& p, void* stream) {
  const int64_t rows = static_cast<int64_t>(p.batch) * p.seqlen_q * p.nheads;
  if (rows <= 0 || p.head_dim <= 0) return 0;
  if (p.num_splits > kMaxCombineSplits) return static_cast<int>(cudaErrorInvalidValue);
  const dim3 grid(static_cast<unsigned>(rows));
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  // 16-byte partial loads when every row start of the partials is 16-byte aligned.
  const auto a4 = [](int64_t x) { return x % 4 == 0; };
  const bool vec4 = p.head_dim % 4 == 0 && a4(p.op_split_stride) && a4(p.op_batch_stride) && a4(p.op_row_stride) &&
                    a4(p.op_head_stride) && reinterpret_cast<uintptr_t>(p.out_partial) % 16 == 0;
  cudaError_t e = cudaErrorInvalidValue;
  switch (p.out_dtype) {
    case DType::kFP32:
      e = launch_combine_typed<float>(p, grid, s, vec4);
      break;
    case DType::kFP16:
      e = launch_combine_typed<__half>(p, grid, s, vec4);
      break;
    case DType::kBF16:
      e = launch_combine_typed<__nv_bfloat16>(p, grid, s, vec4);
      break;
    default:
      break;
  }
  if (e != cudaSuccess) return static_cast<int>(e);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace kern
}  // namespace flashattn
