// GPU side of flashattn-bench, implemented in reference_gpu.cu. This header names no CUDA type so the CLI
// itself stays plain C++; every function throws std::runtime_error with the CUDA/cuBLAS message on failure.
#pragma once

#include <cstddef>
#include <string>

#include "problem.h"

namespace fab {

// True when a CUDA device can be used; otherwise *why says what is missing (no device, old driver, ...).
bool gpu_probe(int device, std::string* name, std::string* why);
void gpu_set_device(int device);
void* gpu_alloc(size_t bytes);
void gpu_free(void* ptr);
void gpu_upload(void* dst, const void* src, size_t bytes);
void gpu_download(void* dst, const void* src, size_t bytes);
void gpu_memset(void* ptr, int value, size_t bytes);
void gpu_sync();

// A pair of CUDA events on the default stream.
class GpuTimer {
 public:
  GpuTimer();
  ~GpuTimer();
  GpuTimer(const GpuTimer&) = delete;
  GpuTimer& operator=(const GpuTimer&) = delete;
  void start();
  float stop_ms();  // waits for the stop event
 private:
  void* start_ = nullptr;
  void* stop_ = nullptr;
};

// Standard attention with S = QK^T and P = softmax(S) materialised in global memory: cuBLAS strided-batched
// GEMMs plus row kernels for the softmax and for dS. GEMM operands are in `ab_dtype` (the input dtype for the
// "math" timing, kFP32 for the accuracy reference), accumulation and S/dP are fp32, O/dQ/dK/dV are fp32.
class GpuStandardAttention {
 public:
  // q, k, v, dout: device BSHD tensors of dtype p.dtype (dout may be null when !with_bwd); alibi/sinks: host
  // arrays of nheads floats, or null.
  GpuStandardAttention(const Problem& p, int ab_dtype, bool with_bwd, const void* q, const void* k,
                       const void* v, const void* dout, const float* alibi, const float* sinks);
  ~GpuStandardAttention();
  GpuStandardAttention(const GpuStandardAttention&) = delete;
  GpuStandardAttention& operator=(const GpuStandardAttention&) = delete;

  void forward();
  void backward();  // needs forward() first
  // The S/P (and, with backward, dP) matrices: what standard attention costs beyond its inputs and outputs.
  size_t matrix_bytes() const { return matrix_bytes_; }
  const float* out() const { return o_; }  // device, (b, sq, h, d)
  const float* dq() const { return dq_; }
  const float* dk() const { return dk_; }
  const float* dv() const { return dv_; }

 private:
  void gemm_qk(const void* a_rows_q, const void* b_rows_k, float* c);
  Problem p_;
  int ab_;
  bool bwd_;
  void* handle_ = nullptr;
  const void *q_, *k_, *v_, *do_;             // operands in ab dtype (converted copies when needed)
  void *q_conv_ = nullptr, *k_conv_ = nullptr, *v_conv_ = nullptr, *do_conv_ = nullptr;
  float *s_ = nullptr, *dp_ = nullptr;         // fp32 (b, h, sq, sk)
  void* p_mat_ = nullptr;                      // ab dtype (b, h, sq, sk); holds dS after backward's dV
  float *o_ = nullptr, *dq_ = nullptr, *dk_ = nullptr, *dv_ = nullptr;
  float *alibi_ = nullptr, *sinks_ = nullptr;  // device copies, or null
  size_t matrix_bytes_ = 0;
};

}  // namespace fab
