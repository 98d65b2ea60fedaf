// The interface every backend implements. The C API validates, normalises into params, asks the
// backend for a plan (tiles, splits, workspace) and runs it. Backends trust host-visible values (they are
// checked already) but clamp every index they read from device-resident metadata.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/params.h"

namespace flashattn {

// Merge of split-KV partials (also used by the GPU split-KV path internally).
struct CombineParams {
  DType out_dtype;
  int32_t num_splits, batch, nheads, head_dim;
  int64_t seqlen_q;
  const float* out_partial;  // (splits, b, sq, h, d) with the strides below
  int64_t op_split_stride, op_batch_stride, op_row_stride, op_head_stride;
  const float* lse_partial;  // (splits, b, h, sq)
  int64_t lp_split_stride, lp_batch_stride, lp_head_stride, lp_row_stride;
  void* out;  // (b, sq, h, d)
  int64_t o_batch_stride, o_row_stride, o_head_stride;
  float* lse;  // (b, h, sq) or null
  int64_t lse_batch_stride, lse_head_stride, lse_row_stride;
  const float* sinks;  // (h) or null
};

// What a backend decided for one call; reported through flashattn_*_plan().
struct Plan {
  int32_t path = 0;  // flashattn_path
  int32_t block_m = 0, block_n = 0, num_warps = 0;
  int32_t head_dim_rounded = 0;
  int32_t num_splits = 1;
  size_t workspace_bytes = 0;
  std::string kernel;
};

namespace cpu {
// Forward, varlen, paged and KV-cache forward (append + rotary in place) on the CPU.
Plan plan_fwd(const FwdParams& p);
void fwd(const FwdParams& p, const Plan& plan, void* workspace, size_t workspace_bytes);
Plan plan_bwd(const BwdParams& p);
void bwd(const BwdParams& p, const Plan& plan, void* workspace, size_t workspace_bytes);
void combine(const CombineParams& p);
void set_num_threads(int n);  // 0 = all hardware threads
int get_num_threads();
}  // namespace cpu

namespace cuda {
// False when the library was built without CUDA; then every other call throws NOT_BUILT.
bool built();
// Compute capability (major * 10 + minor) of a device; throws DEVICE_ERROR / NOT_SUPPORTED.
int device_arch(int device);
Plan plan_fwd(const FwdParams& p, int device);
void fwd(const FwdParams& p, const Plan& plan, void* workspace, size_t workspace_bytes, void* stream);
Plan plan_bwd(const BwdParams& p, int device);
void bwd(const BwdParams& p, const Plan& plan, void* workspace, size_t workspace_bytes, void* stream);
void combine(const CombineParams& p, void* stream);
// Copies `count` int32 values of device metadata to the host (a synchronising copy; check mode only).
void copy_metadata_to_host(const int32_t* device_ptr, int64_t count, int32_t* host_out, void* stream);
// Kernel names and archs compiled in (for build info).
int num_kernels();
}  // namespace cuda

}  // namespace flashattn
