// flashattn::cuda: planning, dispatch and launching of the GPU kernels. Plain C++ over the CUDA runtime
// API; the kernels themselves live in the generated TUs and are reached through the kernel registry.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "core/backend.h"
#include "core/error.h"
#include "core/registry.h"
#include "cuda/common/combine.h"
#include "cuda/common/tile_bwd_sm80.h"
#include "cuda/common/tile_sm80.h"

namespace flashattn {
namespace cuda {
namespace {

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    fail(FLASHATTN_STATUS_DEVICE_ERROR, what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  }
}

// Makes `device` current for the scope and restores the caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&prev_), "cudaGetDevice");
    if (device >= 0 && device != prev_) {
      check_cuda(cudaSetDevice(device), "cudaSetDevice");
      switched_ = true;
    }
  }
  ~DeviceGuard() {
    if (switched_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
  bool switched_ = false;
};

// The device that owns a pointer (the tensors' device). Host or unregistered memory gives -1.
int device_of(const void* ptr) {
  if (ptr == nullptr) return -1;
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error of a failed query
    return -1;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged ? attr.device : -1;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFP16:
      return "fp16";
    case DType::kBF16:
      return "bf16";
    case DType::kFP32:
      return "fp32";
    default:
      return "invalid";
  }
}

size_t smem_optin(int device) {
  int v = 0;
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
             "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
  return static_cast<size_t>(v);
}

// Features whose GPU kernels come in later issues: a clear error, never a silent fallback.
void reject_unbuilt_features(const FwdParams& p) {
  const auto not_built = [](const char* what) {
    fail(FLASHATTN_STATUS_NOT_BUILT, what, " on the GPU is not built yet");
  };
  if (p.block_table != nullptr) not_built("paged K/V (block_table)");
  if (p.cache_seqlens != nullptr || p.k_new != nullptr || p.rotary_dim > 0) not_built("the KV cache forward");
  if (p.dropout_p > 0.f) not_built("dropout");
  if (p.num_splits > 1) not_built("split-KV (num_splits > 1)");
}

// Variant bits of the "fwd" family in manifest order: bit 0 = causal. The causal instantiation serves
// exactly the window (-1, 0); every other window runs the local mask of the non-causal one.
uint32_t fwd_variant_bits(const FwdParams& p) {
  const bool causal = p.window_left < 0 && p.window_right == 0;
  return causal ? 1u : 0u;
}

const KernelEntry* lookup_fwd(const FwdParams& p, int rounded) {
  return find_kernel("fwd", "sm80", p.dtype, rounded, fwd_variant_bits(p));
}

}  // namespace

bool built() { return true; }

int device_arch(int device) {
  int major = 0, minor = 0;
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
             "cudaDeviceGetAttribute(ComputeCapabilityMajor)");
  check_cuda(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device),
             "cudaDeviceGetAttribute(ComputeCapabilityMinor)");
  const int arch = major * 10 + minor;
  if (arch < 75) fail(FLASHATTN_STATUS_NOT_SUPPORTED, "unsupported GPU: sm_", arch, " (flashattn needs sm_75 or newer)");
  return arch;
}

Plan plan_fwd(const FwdParams& p, int device) {
  const int arch = device_arch(device);
  if (arch < 80) fail(FLASHATTN_STATUS_NOT_BUILT, "the sm75 (Turing) GPU path is not built yet (device sm_", arch, ")");
  if (p.dtype != DType::kFP16 && p.dtype != DType::kBF16) {
    fail(FLASHATTN_STATUS_NOT_SUPPORTED, "dtype: the GPU kernels take fp16 or bf16, got ", dtype_name(p.dtype));
  }
  if (p.head_dim % 8 != 0) {
    fail(FLASHATTN_STATUS_NOT_SUPPORTED, "head_dim: the GPU kernels need a multiple of 8 (16-byte loads), got ",
         p.head_dim, "; pad q, k and v to ", (p.head_dim + 7) / 8 * 8, " with zeros and slice the output");
  }
  const int rounded = round_head_dim_sm80(p.head_dim);
  if (rounded == 0 || p.head_dim <= 0) {
    fail(FLASHATTN_STATUS_NOT_SUPPORTED, "head_dim: the GPU kernels take 8..256, got ", p.head_dim);
  }
  reject_unbuilt_features(p);
  const KernelEntry* entry = lookup_fwd(p, rounded);
  if (entry == nullptr) {
    const bool causal = fwd_variant_bits(p) & 1u;
    fail(FLASHATTN_STATUS_NOT_BUILT, "kernel fwd_sm80_", dtype_name(p.dtype), "_hdim", rounded, causal ? "_causal" : "",
         " is not in this build: configure with FLASHATTN_HEADDIMS including ", rounded,
         " and FLASHATTN_DTYPES including ", dtype_name(p.dtype));
  }
  const TileSm80 tile = fwd_tile_for_device_sm80(rounded, smem_optin(device));
  Plan plan;
  plan.path = FLASHATTN_PATH_SM80;
  plan.block_m = tile.block_m;
  plan.block_n = tile.block_n;
  plan.num_warps = tile.warps;
  plan.head_dim_rounded = rounded;
  plan.num_splits = 1;
  plan.workspace_bytes = 0;
  plan.kernel = entry->name;
  return plan;
}

void fwd(const FwdParams& p, const Plan& plan, void* /*workspace*/, size_t /*workspace_bytes*/, void* stream) {
  if (p.batch <= 0 || p.nheads <= 0 || p.total_q <= 0 || p.seqlen_q <= 0) return;  // nothing to compute
  reject_unbuilt_features(p);
  const KernelEntry* entry = lookup_fwd(p, plan.head_dim_rounded);
  if (entry == nullptr) fail(FLASHATTN_STATUS_NOT_BUILT, "kernel ", plan.kernel, " is not in this build");
  DeviceGuard guard(device_of(p.q));
  cudaGetLastError();  // an earlier, unrelated error must not be reported as ours
  entry->fn(&p, stream);
  check_cuda(cudaGetLastError(), "forward kernel launch");
}

namespace {

int num_sms(int device) {
  int v = 0;
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute(MultiProcessorCount)");
  return v;
}

// Checks shared by plan_bwd and bwd; returns the kernel entry of the "bwd" family (variant bit 0 = causal,
// as the forward).
const KernelEntry* check_bwd(const BwdParams& p, int arch, int* rounded_out) {
  if (arch < 80) fail(FLASHATTN_STATUS_NOT_BUILT, "the sm75 (Turing) GPU backward is not built yet (device sm_", arch, ")");
  if (p.dtype != DType::kFP16 && p.dtype != DType::kBF16) {
    fail(FLASHATTN_STATUS_NOT_SUPPORTED, "dtype: the GPU kernels take fp16 or bf16, got ", dtype_name(p.dtype));
  }
  if (p.head_dim % 8 != 0) {
    fail(FLASHATTN_STATUS_NOT_SUPPORTED, "head_dim: the GPU kernels need a multiple of 8 (16-byte loads), got ",
         p.head_dim, "; pad q, k, v, out and dout to ", (p.head_dim + 7) / 8 * 8, " with zeros and slice the gradients");
  }
  const int rounded = round_head_dim_sm80(p.head_dim);
  if (rounded == 0 || p.head_dim <= 0) fail(FLASHATTN_STATUS_NOT_SUPPORTED, "head_dim: the GPU kernels take 8..256, got ", p.head_dim);
  if (p.dropout_p > 0.f) fail(FLASHATTN_STATUS_NOT_BUILT, "dropout in the GPU backward is not built yet");
  reject_unbuilt_features(p);
  const KernelEntry* entry = find_kernel("bwd", "sm80", p.dtype, rounded, fwd_variant_bits(p));
  if (entry == nullptr) {
    fail(FLASHATTN_STATUS_NOT_BUILT, "kernel bwd_sm80_", dtype_name(p.dtype), "_hdim", rounded,
         (fwd_variant_bits(p) & 1u) ? "_causal" : "", " is not in this build: configure with FLASHATTN_HEADDIMS including ",
         rounded, ", FLASHATTN_DTYPES including ", dtype_name(p.dtype), " and FLASHATTN_FAMILIES including bwd");
  }
  *rounded_out = rounded;
  return entry;
}

}  // namespace

// Workspace (tile_bwd_sm80.h): fp32 dQ accumulator slices, D = rowsum(dO * O), dsinks partials. dK/dV need
// none: a CTA owns its key block for every query head of the GQA group and reduces it in registers.
Plan plan_bwd(const BwdParams& p, int device) {
  const int arch = device_arch(device);
  int rounded = 0;
  const KernelEntry* entry = check_bwd(p, arch, &rounded);
  const size_t optin = smem_optin(device);
  const TileBwdSm80 tile = bwd_tile_for_device_sm80(rounded, optin);
  if (tile.block_m == 0) {
    fail(FLASHATTN_STATUS_NOT_SUPPORTED, "head_dim ", p.head_dim, ": the GPU backward needs ",
         bwd_smem_bytes_sm80(rounded, bwd_tile_sm80(rounded, false)) / 1024, " KB of shared memory per block at head dim ",
         rounded, "; this GPU (sm_", arch, ") offers ", optin / 1024,
         " KB (head dims up to 160 run on 99 KB GPUs such as sm86/sm89; larger ones need sm80 or sm90)");
  }
  const int slices = bwd_dq_slices_sm80(p.deterministic != 0, num_sms(device), p.batch, p.nheads_k, p.seqlen_k,
                                        tile.block_n);
  const BwdWorkspaceSm80 ws =
      bwd_workspace_sm80(slices, p.nheads, p.total_q, rounded, p.batch, p.seqlen_q, p.sinks != nullptr);
  Plan plan;
  plan.path = FLASHATTN_PATH_SM80;
  plan.block_m = tile.block_m;
  plan.block_n = tile.block_n;
  plan.num_warps = tile.warps;
  plan.head_dim_rounded = rounded;
  plan.num_splits = slices;  // backward: dQ accumulator slices (> 1 only in deterministic mode)
  plan.workspace_bytes = ws.total;
  plan.kernel = entry->name;
  return plan;
}

void bwd(const BwdParams& p, const Plan& plan, void* workspace, size_t workspace_bytes, void* stream) {
  if (p.batch <= 0 || p.nheads <= 0) return;
  DeviceGuard guard(device_of(p.q));
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  int rounded = 0;
  const KernelEntry* entry = check_bwd(p, device_arch(device), &rounded);
  if (rounded != plan.head_dim_rounded) fail(FLASHATTN_STATUS_INVALID_ARGUMENT, "plan: made for another head dim");
  const BwdWorkspaceSm80 ws = bwd_workspace_sm80(plan.num_splits, p.nheads, p.total_q, rounded, p.batch, p.seqlen_q,
                                                 p.sinks != nullptr);
  if (ws.total > workspace_bytes || (ws.total > 0 && workspace == nullptr)) {
    fail(FLASHATTN_STATUS_INVALID_ARGUMENT, "workspace: the GPU backward needs ", ws.total, " bytes, got ",
         workspace_bytes);
  }
  BwdParams q = p;
  q.workspace = workspace;
  q.workspace_bytes = workspace_bytes;
  q.num_splits = plan.num_splits;  // the launcher carves the same layout from these
  cudaGetLastError();  // an earlier, unrelated error must not be reported as ours
  entry->fn(&q, stream);
  check_cuda(cudaGetLastError(), "backward kernel launch");
}

void combine(const CombineParams& p, void* stream) {
  DeviceGuard guard(device_of(p.out));
  cudaGetLastError();
  const int err = kern::launch_combine(p, stream);
  check_cuda(static_cast<cudaError_t>(err), "combine kernel launch");
}

void copy_metadata_to_host(const int32_t* device_ptr, int64_t count, int32_t* host_out, void* stream) {
  if (count <= 0) return;
  DeviceGuard guard(device_of(device_ptr));
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  check_cuda(cudaMemcpyAsync(host_out, device_ptr, static_cast<size_t>(count) * sizeof(int32_t),
                             cudaMemcpyDeviceToHost, s),
             "cudaMemcpyAsync (metadata check)");
  check_cuda(cudaStreamSynchronize(s), "cudaStreamSynchronize (metadata check)");
}

int num_kernels() {
  size_t n = 0;
  kernel_table(&n);
  return static_cast<int>(n);
}

}  // namespace cuda
}  // namespace flashattn
