// GPU helpers of flashattn-bench: memory, events, and standard attention (cuBLAS GEMMs + row kernels) used
// both as the fp32 accuracy reference and, in the input dtype, as the "math" timing baseline.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <stdexcept>
#include <string>

#include "gpu_reference.h"

namespace fab {
namespace {

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string(what) + ": cuBLAS status " + std::to_string(static_cast<int>(s)));
}

size_t elem_size(int dt) { return dt == kFP32 ? 4 : 2; }

cudaDataType_t cuda_type(int dt) {
  return dt == kFP32 ? CUDA_R_32F : (dt == kFP16 ? CUDA_R_16F : CUDA_R_16BF);
}

__device__ __forceinline__ float load(const void* base, int dt, size_t i) {
  if (dt == kFP32) return static_cast<const float*>(base)[i];
  if (dt == kFP16) return __half2float(static_cast<const __half*>(base)[i]);
  return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
}

__device__ __forceinline__ void store(void* base, int dt, size_t i, float x) {
  if (dt == kFP32) static_cast<float*>(base)[i] = x;
  else if (dt == kFP16) static_cast<__half*>(base)[i] = __float2half_rn(x);
  else static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(x);
}

constexpr int kThreads = 256;

// Block-wide reduction (max or sum) through warp shuffles; every thread gets the result.
template <bool kMax>
__device__ float block_reduce(float x) {
  __shared__ float partial[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) {
    const float y = __shfl_xor_sync(0xffffffffu, x, o);
    x = kMax ? fmaxf(x, y) : x + y;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // partial[] may still be read by a previous call
  if (lane == 0) partial[warp] = x;
  __syncthreads();
  x = partial[0];
  for (int w = 1; w < kThreads / 32; ++w) x = kMax ? fmaxf(x, partial[w]) : x + partial[w];
  return x;
}

__global__ void convert_to_float_kernel(const void* in, int dt, float* out, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = load(in, dt, i);
}

// One block per query row: P = softmax(logit(S)) over the visible keys (plus the sink in the denominator).
// S holds the raw q.k; the logit is recomputed in each pass instead of stored, to keep S reusable by dS.
__global__ void softmax_kernel(Problem p, const float* s, void* pm, int pdt, const float* alibi,
                               const float* sinks) {
  const int64_t row = blockIdx.x;
  const int64_t i = row % p.seqlen_q;
  const int64_t head = (row / p.seqlen_q) % p.nheads;
  const float* srow = s + row * p.seqlen_k;
  const size_t prow = static_cast<size_t>(row) * p.seqlen_k;
  const float slope = alibi ? alibi[head] : 0.f;
  const KeyRange r = key_range(p, i);
  float m = -INFINITY;
  for (int64_t j = r.lo + threadIdx.x; j <= r.hi; j += blockDim.x) m = fmaxf(m, logit<float>(p, srow[j], slope, i, j));
  m = block_reduce<true>(m);
  const float sink = sinks ? sinks[head] : -INFINITY;
  m = fmaxf(m, sink);
  float sum = 0.f;
  if (m != -INFINITY)
    for (int64_t j = r.lo + threadIdx.x; j <= r.hi; j += blockDim.x) sum += expf(logit<float>(p, srow[j], slope, i, j) - m);
  sum = block_reduce<false>(sum);
  if (sinks && m != -INFINITY) sum += expf(sink - m);
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  for (int64_t j = threadIdx.x; j < p.seqlen_k; j += blockDim.x) {
    const float x = (j >= r.lo && j <= r.hi) ? expf(logit<float>(p, srow[j], slope, i, j) - m) * inv : 0.f;
    store(pm, pdt, prow + j, x);
  }
}

// One block per query row: dS = P * (dP - rowsum(dO * O)) * dlogit/dqk, written over P (same element is read
// first by the same thread), so the dQ/dK GEMMs take it in the operand dtype.
__global__ void dsoftmax_kernel(Problem p, const float* s, const float* dp, void* pm, int pdt, const float* o,
                                const void* dout, int dodt) {
  const int64_t row = blockIdx.x;
  const int64_t i = row % p.seqlen_q;
  const int64_t bh = row / p.seqlen_q;
  const int64_t head = bh % p.nheads, b = bh / p.nheads;
  const size_t orow = ((static_cast<size_t>(b) * p.seqlen_q + i) * p.nheads + head) * p.headdim;
  float d = 0.f;
  for (int64_t c = threadIdx.x; c < p.headdim; c += blockDim.x) d += o[orow + c] * load(dout, dodt, orow + c);
  d = block_reduce<false>(d);
  const size_t base = static_cast<size_t>(row) * p.seqlen_k;
  for (int64_t j = threadIdx.x; j < p.seqlen_k; j += blockDim.x) {
    const float pij = load(pm, pdt, base + j);
    store(pm, pdt, base + j, pij * (dp[base + j] - d) * dlogit_dqk<float>(p, s[base + j]));
  }
}

}  // namespace

bool gpu_probe(int device, std::string* name, std::string* why) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    *why = std::string("CUDA runtime: ") + cudaGetErrorString(e);
    return false;
  }
  if (device >= count) {
    *why = count == 0 ? "no CUDA device" : "device " + std::to_string(device) + " of " + std::to_string(count);
    return false;
  }
  cudaDeviceProp prop;
  check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  *name = prop.name;
  return true;
}

void gpu_set_device(int device) { check_cuda(cudaSetDevice(device), "cudaSetDevice"); }

void* gpu_alloc(size_t bytes) {
  void* ptr = nullptr;
  if (bytes == 0) return nullptr;
  check_cuda(cudaMalloc(&ptr, bytes), ("cudaMalloc of " + std::to_string(bytes) + " bytes").c_str());
  return ptr;
}

void gpu_free(void* ptr) {
  if (ptr) cudaFree(ptr);
}

void gpu_upload(void* dst, const void* src, size_t bytes) {
  check_cuda(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}

void gpu_download(void* dst, const void* src, size_t bytes) {
  check_cuda(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}

void gpu_memset(void* ptr, int value, size_t bytes) { check_cuda(cudaMemset(ptr, value, bytes), "cudaMemset"); }

void gpu_sync() { check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

GpuTimer::GpuTimer() {
  cudaEvent_t a, b;
  check_cuda(cudaEventCreate(&a), "cudaEventCreate");
  check_cuda(cudaEventCreate(&b), "cudaEventCreate");
  start_ = a;
  stop_ = b;
}

GpuTimer::~GpuTimer() {
  cudaEventDestroy(static_cast<cudaEvent_t>(start_));
  cudaEventDestroy(static_cast<cudaEvent_t>(stop_));
}

void GpuTimer::start() { check_cuda(cudaEventRecord(static_cast<cudaEvent_t>(start_), 0), "cudaEventRecord"); }

float GpuTimer::stop_ms() {
  check_cuda(cudaEventRecord(static_cast<cudaEvent_t>(stop_), 0), "cudaEventRecord");
  check_cuda(cudaEventSynchronize(static_cast<cudaEvent_t>(stop_)), "cudaEventSynchronize (a kernel failed?)");
  float ms = 0.f;
  check_cuda(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), static_cast<cudaEvent_t>(stop_)),
             "cudaEventElapsedTime");
  return ms;
}

GpuStandardAttention::GpuStandardAttention(const Problem& p, int ab_dtype, bool with_bwd, const void* q,
                                           const void* k, const void* v, const void* dout, const float* alibi,
                                           const float* sinks)
    : p_(p), ab_(ab_dtype), bwd_(with_bwd), q_(q), k_(k), v_(v), do_(dout) {
  cublasHandle_t h;
  check_cublas(cublasCreate(&h), "cublasCreate");
  handle_ = h;
  const size_t nq = p.batch * p.seqlen_q * p.nheads * p.headdim;
  const size_t nk = p.batch * p.seqlen_k * p.nheads_k * p.headdim;
  auto convert = [&](const void* src, size_t n, void** keep) -> const void* {
    if (ab_ == p.dtype || src == nullptr) return src;
    *keep = gpu_alloc(n * sizeof(float));
    convert_to_float_kernel<<<1024, 256>>>(src, p.dtype, static_cast<float*>(*keep), n);
    check_cuda(cudaGetLastError(), "convert_to_float_kernel");
    return *keep;
  };
  q_ = convert(q, nq, &q_conv_);
  k_ = convert(k, nk, &k_conv_);
  v_ = convert(v, nk, &v_conv_);
  do_ = convert(dout, nq, &do_conv_);
  const size_t nmat = p.batch * p.nheads * p.seqlen_q * p.seqlen_k;
  s_ = static_cast<float*>(gpu_alloc(nmat * sizeof(float)));
  p_mat_ = gpu_alloc(nmat * elem_size(ab_));
  matrix_bytes_ = nmat * (sizeof(float) + elem_size(ab_));
  o_ = static_cast<float*>(gpu_alloc(nq * sizeof(float)));
  if (bwd_) {
    dp_ = static_cast<float*>(gpu_alloc(nmat * sizeof(float)));
    matrix_bytes_ += nmat * sizeof(float);
    dq_ = static_cast<float*>(gpu_alloc(nq * sizeof(float)));
    dk_ = static_cast<float*>(gpu_alloc(nk * sizeof(float)));
    dv_ = static_cast<float*>(gpu_alloc(nk * sizeof(float)));
  }
  if (alibi) {
    alibi_ = static_cast<float*>(gpu_alloc(p.nheads * sizeof(float)));
    gpu_upload(alibi_, alibi, p.nheads * sizeof(float));
  }
  if (sinks) {
    sinks_ = static_cast<float*>(gpu_alloc(p.nheads * sizeof(float)));
    gpu_upload(sinks_, sinks, p.nheads * sizeof(float));
  }
}

GpuStandardAttention::~GpuStandardAttention() {
  for (void* ptr : {q_conv_, k_conv_, v_conv_, do_conv_, static_cast<void*>(s_), static_cast<void*>(dp_), p_mat_,
                    static_cast<void*>(o_), static_cast<void*>(dq_), static_cast<void*>(dk_),
                    static_cast<void*>(dv_), static_cast<void*>(alibi_), static_cast<void*>(sinks_)})
    gpu_free(ptr);
  cublasDestroy(static_cast<cublasHandle_t>(handle_));
}

namespace {

// Row-major X (r x c, leading dim ld) is column-major X^T, so each product below is written for cuBLAS as
// its transpose. Heads of one GQA group are batched with a stride of `ratio` heads; the loop over the
// group's members (r) and the batch issues one strided-batched call each, with the KV-side outputs (dK, dV)
// accumulated across r via beta = 1.
struct Gemm {
  cublasHandle_t h;
  cudaDataType_t ab;
  size_t esz;
  void run(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, const void* a, int64_t lda,
           int64_t sa, const void* b, int64_t ldb, int64_t sb, float beta, float* c, int64_t ldc, int64_t sc,
           int64_t count) const {
    const float alpha = 1.f;
    check_cublas(cublasGemmStridedBatchedEx(h, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
                                            &alpha, a, ab, static_cast<int>(lda), sa, b, ab, static_cast<int>(ldb), sb,
                                            &beta, c, CUDA_R_32F, static_cast<int>(ldc), sc, static_cast<int>(count),
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmStridedBatchedEx");
  }
};

const char* off(const void* base, int64_t elems, size_t esz) {
  return static_cast<const char*>(base) + elems * static_cast<int64_t>(esz);
}

}  // namespace

void GpuStandardAttention::forward() {
  const Problem& p = p_;
  const Gemm g{static_cast<cublasHandle_t>(handle_), cuda_type(ab_), elem_size(ab_)};
  const int64_t ratio = p.nheads / p.nheads_k, d = p.headdim, sq = p.seqlen_q, sk = p.seqlen_k;
  const int64_t mat = sq * sk;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t r = 0; r < ratio; ++r) {
      const int64_t qo = b * sq * p.nheads * d + r * d, ko = b * sk * p.nheads_k * d, so = (b * p.nheads + r) * mat;
      // S^T (sk x sq) = K (sk x d) . Q^T (d x sq)
      g.run(CUBLAS_OP_T, CUBLAS_OP_N, sk, sq, d, off(k_, ko, g.esz), p.nheads_k * d, d, off(q_, qo, g.esz),
            p.nheads * d, ratio * d, 0.f, s_ + so, sk, ratio * mat, p.nheads_k);
    }
  softmax_kernel<<<static_cast<unsigned>(p.batch * p.nheads * sq), kThreads>>>(p, s_, p_mat_, ab_, alibi_, sinks_);
  check_cuda(cudaGetLastError(), "softmax_kernel");
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t r = 0; r < ratio; ++r) {
      const int64_t qo = b * sq * p.nheads * d + r * d, ko = b * sk * p.nheads_k * d, so = (b * p.nheads + r) * mat;
      // O^T (d x sq) = V^T (d x sk) . P^T (sk x sq)
      g.run(CUBLAS_OP_N, CUBLAS_OP_N, d, sq, sk, off(v_, ko, g.esz), p.nheads_k * d, d, off(p_mat_, so, g.esz), sk,
            ratio * mat, 0.f, o_ + qo, p.nheads * d, ratio * d, p.nheads_k);
    }
}

void GpuStandardAttention::backward() {
  if (!bwd_) throw std::runtime_error("GpuStandardAttention: constructed without backward");
  const Problem& p = p_;
  const Gemm g{static_cast<cublasHandle_t>(handle_), cuda_type(ab_), elem_size(ab_)};
  const int64_t ratio = p.nheads / p.nheads_k, d = p.headdim, sq = p.seqlen_q, sk = p.seqlen_k;
  const int64_t mat = sq * sk;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t r = 0; r < ratio; ++r) {
      const int64_t qo = b * sq * p.nheads * d + r * d, ko = b * sk * p.nheads_k * d, so = (b * p.nheads + r) * mat;
      const float acc = r > 0 ? 1.f : 0.f;
      // dV^T (d x sk) += dO^T (d x sq) . P (sq x sk)
      g.run(CUBLAS_OP_N, CUBLAS_OP_T, d, sk, sq, off(do_, qo, g.esz), p.nheads * d, ratio * d, off(p_mat_, so, g.esz),
            sk, ratio * mat, acc, dv_ + ko, p.nheads_k * d, d, p.nheads_k);
      // dP^T (sk x sq) = V (sk x d) . dO^T (d x sq)
      g.run(CUBLAS_OP_T, CUBLAS_OP_N, sk, sq, d, off(v_, ko, g.esz), p.nheads_k * d, d, off(do_, qo, g.esz),
            p.nheads * d, ratio * d, 0.f, dp_ + so, sk, ratio * mat, p.nheads_k);
    }
  dsoftmax_kernel<<<static_cast<unsigned>(p.batch * p.nheads * sq), kThreads>>>(p, s_, dp_, p_mat_, ab_, o_, do_, ab_);
  check_cuda(cudaGetLastError(), "dsoftmax_kernel");
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t r = 0; r < ratio; ++r) {
      const int64_t qo = b * sq * p.nheads * d + r * d, ko = b * sk * p.nheads_k * d, so = (b * p.nheads + r) * mat;
      const float acc = r > 0 ? 1.f : 0.f;
      // dQ^T (d x sq) = K^T (d x sk) . dS^T (sk x sq)
      g.run(CUBLAS_OP_N, CUBLAS_OP_N, d, sq, sk, off(k_, ko, g.esz), p.nheads_k * d, d, off(p_mat_, so, g.esz), sk,
            ratio * mat, 0.f, dq_ + qo, p.nheads * d, ratio * d, p.nheads_k);
      // dK^T (d x sk) += Q^T (d x sq) . dS (sq x sk)
      g.run(CUBLAS_OP_N, CUBLAS_OP_T, d, sk, sq, off(q_, qo, g.esz), p.nheads * d, ratio * d, off(p_mat_, so, g.esz),
            sk, ratio * mat, acc, dk_ + ko, p.nheads_k * d, d, p.nheads_k);
    }
}

}  // namespace fab
