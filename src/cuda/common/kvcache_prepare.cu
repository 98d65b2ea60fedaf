// KV-cache preparation before attention (docs/semantics.md "KV cache append and rotary"):
//   - new token t of sequence b goes to absolute cache position pos = cache_seqlens[b] + t of cache row
//     cache_batch_idx[b] (dense) or of page block_table[b][pos / page_size] (paged); v is copied bit for bit,
//     k is rotated at angle row pos first when rotary is on;
//   - q row i is rotated at cache_seqlens[b] (+ i when causal or local) into a contiguous workspace copy,
//     which the attention kernel then reads instead of q (the caller's q is never written).
// One warp per vector (a head of one token); lanes stride over the rotary pairs and the remaining dims.
// Rotation is computed in fp32 without contraction (x*c - y*s rounded once per product, as the CPU
// backend) and rounded to the dtype once, "as if the tensor were rotated in memory".
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/common/kvcache_prepare.h"

namespace flashattn {
namespace kern {
namespace {

constexpr int kWarps = 4;

template <typename T>
__device__ __forceinline__ float to_f(T x);
template <>
__device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ int64_t clamp64(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : (x > hi ? hi : x); }

// dst[0..d) = src rotated at angle row pos, dims past rotary_dim copied. src and dst never alias
// (cache <- k_new, q_rot <- q), so lanes need no ordering between the reads and the writes.
template <typename T>
__device__ void rotate_copy(const FwdParams& p, const T* src, T* dst, int64_t pos, int lane) {
  const int d = p.head_dim;
  const int rd = p.rotary_cos != nullptr ? p.rotary_dim : 0;
  const int half = rd / 2;
  if (half > 0) {
    const int64_t row = clamp64(pos, 0, p.seqlen_ro > 0 ? p.seqlen_ro - 1 : 0) * half;
    const T* cos_t = static_cast<const T*>(p.rotary_cos) + row;
    const T* sin_t = static_cast<const T*>(p.rotary_sin) + row;
    for (int r = lane; r < half; r += 32) {
      const int i0 = p.rotary_interleaved ? 2 * r : r;
      const int i1 = p.rotary_interleaved ? 2 * r + 1 : r + half;
      const float c = to_f(cos_t[r]), s = to_f(sin_t[r]);
      const float x0 = to_f(src[i0]), x1 = to_f(src[i1]);
      dst[i0] = from_f<T>(__fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s)));
      dst[i1] = from_f<T>(__fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c)));
    }
  }
  for (int i = rd + lane; i < d; i += 32) dst[i] = src[i];
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) kvcache_prepare_kernel(const __grid_constant__ FwdParams p, T* q_rot) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t n_new = p.k_new != nullptr ? static_cast<int64_t>(p.batch) * p.seqlen_new * p.nheads_k : 0;
  const int64_t n_q = q_rot != nullptr ? static_cast<int64_t>(p.batch) * p.seqlen_q * p.nheads : 0;
  if (item < n_new) {
    const int hk = static_cast<int>(item % p.nheads_k);
    const int64_t t = (item / p.nheads_k) % p.seqlen_new;
    const int b = static_cast<int>(item / (static_cast<int64_t>(p.nheads_k) * p.seqlen_new));
    const int64_t pos = static_cast<int64_t>(p.cache_seqlens[b]) + t;
    if (pos < 0 || pos >= p.seqlen_k) return;  // the validator rejects it; never write out of bounds
    int64_t k_row, v_row;
    if (p.block_table != nullptr) {
      const int64_t idx = pos / p.page_size;
      const int64_t page = clamp64(p.block_table[b * p.block_table_batch_stride + idx], 0, p.num_pages - 1);
      const int64_t r = pos - idx * p.page_size;
      k_row = page * p.k_batch_stride + r * p.k_row_stride;
      v_row = page * p.v_batch_stride + r * p.v_row_stride;
    } else {
      const int64_t kb = p.cache_batch_idx != nullptr ? clamp64(p.cache_batch_idx[b], 0, p.batch_k - 1) : b;
      k_row = kb * p.k_batch_stride + pos * p.k_row_stride;
      v_row = kb * p.v_batch_stride + pos * p.v_row_stride;
    }
    // The cache is the caller's tensor, updated in place by design (FwdParams carries it as const).
    T* k_dst = const_cast<T*>(static_cast<const T*>(p.k)) + k_row + hk * p.k_head_stride;
    T* v_dst = const_cast<T*>(static_cast<const T*>(p.v)) + v_row + hk * p.v_head_stride;
    const T* k_src = static_cast<const T*>(p.k_new) + b * p.knew_batch_stride + t * p.knew_row_stride +
                     hk * p.knew_head_stride;
    const T* v_src = static_cast<const T*>(p.v_new) + b * p.vnew_batch_stride + t * p.vnew_row_stride +
                     hk * p.vnew_head_stride;
    rotate_copy(p, k_src, k_dst, pos, lane);
    for (int i = lane; i < p.head_dim; i += 32) v_dst[i] = v_src[i];
    return;
  }
  const int64_t qi = item - n_new;
  if (qi >= n_q) return;
  const int h = static_cast<int>(qi % p.nheads);
  const int64_t i = (qi / p.nheads) % p.seqlen_q;
  const int b = static_cast<int>(qi / (static_cast<int64_t>(p.nheads) * p.seqlen_q));
  const bool window = p.is_causal || p.window_left >= 0 || p.window_right >= 0;
  const int64_t pos = static_cast<int64_t>(p.cache_seqlens[b]) + (window ? i : 0);
  const T* src = static_cast<const T*>(p.q) + b * p.q_batch_stride + i * p.q_row_stride + h * p.q_head_stride;
  T* dst = q_rot + (qi * p.head_dim);
  rotate_copy(p, src, dst, pos, lane);
}

}  // namespace

int launch_kvcache_prepare(const FwdParams& p, void* q_rot, void* stream) {
  const int64_t n_new = p.k_new != nullptr ? static_cast<int64_t>(p.batch) * p.seqlen_new * p.nheads_k : 0;
  const int64_t n_q = q_rot != nullptr ? static_cast<int64_t>(p.batch) * p.seqlen_q * p.nheads : 0;
  const int64_t items = n_new + n_q;
  if (items <= 0 || p.head_dim <= 0) return 0;
  const dim3 grid(static_cast<unsigned>((items + kWarps - 1) / kWarps));
  const dim3 block(kWarps * 32);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::kFP16:
      kvcache_prepare_kernel<__half><<<grid, block, 0, s>>>(p, static_cast<__half*>(q_rot));
      break;
    case DType::kBF16:
      kvcache_prepare_kernel<__nv_bfloat16><<<grid, block, 0, s>>>(p, static_cast<__nv_bfloat16*>(q_rot));
      break;
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace kern
}  // namespace flashattn
