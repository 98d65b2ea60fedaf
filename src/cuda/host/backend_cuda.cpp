// flashattn::cuda: planning, dispatch and launching of the GPU kernels. Plain C++ over the CUDA runtime
// API; the kernels themselves live in the generated TUs and are reached through the kernel registry.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/backend.h"
#include "core/error.h"
#include "core/registry.h"
#include "cuda/common/combine.h"
#include "cuda/common/fwd_infer.h"
#include "cuda/common/kvcache_prepare.h"
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

// Variant bits of the "fwd" family in manifest order: bit 0 = causal. The causal instantiation serves the
// window (-1, 0) with at most one of softcap and ALiBi (fwd_uses_causal_tu_sm80); every other problem
// runs the non-causal one's masks.
uint32_t fwd_variant_bits(const FwdParams& p) { return fwd_uses_causal_tu_sm80(p) ? 1u : 0u; }

// The same bit for the "bwd" family, whose causal instantiation serves exactly the window (-1, 0).
uint32_t bwd_variant_bits(const FwdParams& p) { return p.window_left < 0 && p.window_right == 0 ? 1u : 0u; }

// The forward's unbuilt features: the KV cache, paged K/V and split-KV run on the fwd_infer kernels.
void reject_unbuilt_fwd(const FwdParams& p) {
  if (p.dropout_p > 0.f) fail(FLASHATTN_STATUS_NOT_BUILT, "dropout on the GPU is not built yet");
}

// KV cache, paged K/V and forced split-KV run on the inference kernels (fwd_infer); a plain dense call
// keeps the validated plain kernels (it is batch-invariant already, and num_splits = 0 means no split for
// it: the heuristic serves the KV-cache and paged calls, the decode shapes it was made for).
bool is_infer_call(const FwdParams& p) {
  return p.block_table != nullptr || p.cache_seqlens != nullptr || p.k_new != nullptr || p.rotary_dim > 0 ||
         p.num_splits > 1;
}

int device_attr(cudaDeviceAttr attr, int device, const char* what) {
  int v = 0;
  check_cuda(cudaDeviceGetAttribute(&v, attr, device), what);
  return v;
}

// FLASHATTN_DECODE_TILE=0 keeps decode-sized problems on the 64-row inference kernel, for comparing the
// two kernels (bench.py --compare-64row). Read at every plan: set it before planning a call, not between
// its plan and its run (the workspace size can differ).
bool decode_tile_allowed() {
  const char* v = std::getenv("FLASHATTN_DECODE_TILE");
  return !(v && std::strcmp(v, "0") == 0);
}

// Everything the inference path decides from host-visible sizes: kernel, splits, PackGQA, workspace.
struct InferPlan {
  bool decode = false;
  TileSm80 tile;
  SplitDecision split;
  bool pack = false;
  InferWorkspace ws;
};

InferPlan plan_infer(const FwdParams& p, int device) {
  InferPlan ip;
  const int sms = device_attr(cudaDevAttrMultiProcessorCount, device, "cudaDeviceGetAttribute(MultiProcessorCount)");
  const int smem_sm = device_attr(cudaDevAttrMaxSharedMemoryPerMultiprocessor, device,
                                  "cudaDeviceGetAttribute(MaxSharedMemoryPerMultiprocessor)");
  const int rounded = round_head_dim_sm80(p.head_dim);
  ip.decode = decode_tile_allowed() && use_decode_tile(p, smem_optin(device));
  ip.tile = fwd_infer_tile_sm80(rounded);
  if (ip.decode) ip.tile = TileSm80{kDecodeRows, ip.tile.block_n, kDecodeWarps};
  const size_t smem = ip.decode ? fwd_decode_smem_bytes_sm80(rounded) : fwd_smem_bytes_sm80(rounded, ip.tile);
  // 128-thread CTAs of <= 255 registers: at most 2 per SM by registers; shared memory may allow fewer.
  const int per_sm = static_cast<int>(std::max<size_t>(1, std::min<size_t>(2, static_cast<size_t>(smem_sm) / smem)));
  ip.split = decide_splits(p, sms, per_sm);
  ip.pack = use_pack_gqa(p, ip.split.write_partial);
  ip.ws = infer_workspace(p, ip.split);
  return ip;
}

// KV cache append/rotary -> attention (PackGQA view, split partials) -> combine, all on `stream`, with no
// host sync and no allocation: a graph captured once replays with new cache_seqlens / block_table.
void run_infer(const FwdParams& p, const KernelEntry* entry, int num_splits_planned, void* workspace,
               size_t workspace_bytes, int device, void* stream) {
  const InferPlan plan = plan_infer(p, device);
  if (plan.split.num_splits != num_splits_planned || plan.ws.bytes > workspace_bytes ||
      (plan.ws.bytes > 0 && workspace == nullptr)) {
    fail(FLASHATTN_STATUS_WORKSPACE_TOO_SMALL, "workspace: the inference forward needs ", plan.ws.bytes,
         " bytes for this call, got ", workspace_bytes);
  }
  char* ws = static_cast<char*>(workspace);
  FwdInferParams ip;
  std::memset(&ip, 0, sizeof(ip));
  FwdParams& v = ip.p;
  v = p;
  // 1. Append k_new/v_new into the cache and rotate q into the workspace (one kernel).
  void* q_rot = (p.rotary_dim > 0 && p.cache_seqlens != nullptr) ? ws + plan.ws.q_rot : nullptr;
  if (p.k_new != nullptr || q_rot != nullptr) {
    check_cuda(static_cast<cudaError_t>(kern::launch_kvcache_prepare(p, q_rot, stream)), "kvcache prepare launch");
  }
  if (q_rot != nullptr) {
    v.q = q_rot;
    v.q_head_stride = p.head_dim;
    v.q_row_stride = static_cast<int64_t>(p.nheads) * p.head_dim;
    v.q_batch_stride = p.cu_seqlens_q ? 0 : p.seqlen_q * v.q_row_stride;
  }
  // 2. Attention, on the PackGQA view when it applies; partials in the workspace when splitting.
  const int64_t h = p.nheads, d = p.head_dim, rows = p.total_q * h;
  const bool varlen_q = p.cu_seqlens_q != nullptr;
  ip.num_splits = plan.split.num_splits;
  ip.split_blocks = plan.split.split_blocks;
  ip.write_partial = plan.split.write_partial ? 1 : 0;
  if (ip.write_partial) {
    v.out_accum = reinterpret_cast<float*>(ws + plan.ws.o_accum);
    v.lse_accum = reinterpret_cast<float*>(ws + plan.ws.lse_accum);
    // Real coordinates: O partial (split, token, head, d), LSE partial (split, token, head).
    ip.oa_split_stride = rows * d;
    ip.oa_batch_stride = varlen_q ? 0 : p.seqlen_q * h * d;
    ip.oa_row_stride = h * d;
    ip.oa_head_stride = d;
    ip.la_split_stride = rows;
    ip.la_batch_stride = varlen_q ? 0 : p.seqlen_q * h;
    ip.la_row_stride = h;
    ip.la_head_stride = 1;
  }
  ip.decode = plan.decode ? 1 : 0;
  ip.pack = 1;
  if (plan.pack) {
    // Packed row r of kv head hk is token r / g, query head hk * g + r % g: the pack strides are the
    // caller's head strides, the view's head strides step over a group of g heads.
    const int64_t g = p.head_ratio;
    ip.pack = static_cast<int32_t>(g);
    ip.q_pack_stride = v.q_head_stride;
    ip.o_pack_stride = v.o_head_stride;
    ip.lse_pack_stride = v.lse_head_stride;
    ip.oa_pack_stride = ip.oa_head_stride;
    ip.la_pack_stride = ip.la_head_stride;
    ip.oa_head_stride *= g;
    ip.la_head_stride *= g;
    v = pack_gqa_view(v);
  }
  entry->fn(&ip, stream);
  check_cuda(cudaGetLastError(), "inference forward kernel launch");
  if (!ip.write_partial) return;
  // 3. Merge the partials (sinks join here, once) into out/LSE in the caller's layout.
  CombineParams c;
  std::memset(&c, 0, sizeof(c));
  c.out_dtype = p.dtype;
  c.num_splits = ip.num_splits;
  c.batch = varlen_q ? 1 : p.batch;
  c.seqlen_q = varlen_q ? p.total_q : p.seqlen_q;
  c.nheads = p.nheads;
  c.head_dim = p.head_dim;
  c.out_partial = reinterpret_cast<const float*>(ws + plan.ws.o_accum);
  c.op_split_stride = rows * d;
  c.op_batch_stride = varlen_q ? 0 : p.seqlen_q * h * d;
  c.op_row_stride = h * d;
  c.op_head_stride = d;
  c.lse_partial = reinterpret_cast<const float*>(ws + plan.ws.lse_accum);
  c.lp_split_stride = rows;
  c.lp_batch_stride = varlen_q ? 0 : p.seqlen_q * h;
  c.lp_head_stride = 1;
  c.lp_row_stride = h;
  c.out = p.out;
  c.o_batch_stride = varlen_q ? 0 : p.o_batch_stride;
  c.o_row_stride = p.o_row_stride;
  c.o_head_stride = p.o_head_stride;
  c.lse = p.lse;
  c.lse_batch_stride = varlen_q ? 0 : p.lse_batch_stride;
  c.lse_head_stride = p.lse_head_stride;
  c.lse_row_stride = 1;
  c.sinks = p.sinks;
  check_cuda(static_cast<cudaError_t>(kern::launch_combine(c, stream)), "split-KV combine launch");
}

const KernelEntry* lookup_fwd(const FwdParams& p, int rounded) {
  if (is_infer_call(p)) return find_kernel("fwd_infer", "sm80", p.dtype, rounded, p.block_table ? 1u : 0u);
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
  if (!FLASHATTN_SM80_CODE && arch >= 80 && arch != 90) {
    fail(FLASHATTN_STATUS_NOT_BUILT, "device sm_", arch, ": this build holds GPU code for sm_90 only; configure with "
         "FLASHATTN_ARCHS including 80 (sm_80 SASS and compute_80 PTX) to run on it");
  }
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
  reject_unbuilt_fwd(p);
  const KernelEntry* entry = lookup_fwd(p, rounded);
  if (entry == nullptr && is_infer_call(p)) {
    fail(FLASHATTN_STATUS_NOT_BUILT, "kernel fwd_infer_sm80_", dtype_name(p.dtype), "_hdim", rounded,
         p.block_table ? "_paged" : "", " (KV cache / paged / split-KV forward) is not in this build: configure with "
         "FLASHATTN_FAMILIES including fwd_infer, FLASHATTN_HEADDIMS including ", rounded,
         " and FLASHATTN_DTYPES including ", dtype_name(p.dtype));
  }
  if (entry == nullptr) {
    const bool causal = fwd_variant_bits(p) & 1u;
    fail(FLASHATTN_STATUS_NOT_BUILT, "kernel fwd_sm80_", dtype_name(p.dtype), "_hdim", rounded, causal ? "_causal" : "",
         " is not in this build: configure with FLASHATTN_HEADDIMS including ", rounded,
         " and FLASHATTN_DTYPES including ", dtype_name(p.dtype));
  }
  Plan plan;
  if (is_infer_call(p)) {
    const InferPlan ip = plan_infer(p, device);
    plan.path = FLASHATTN_PATH_SM80;
    plan.block_m = ip.tile.block_m;
    plan.block_n = ip.tile.block_n;
    plan.num_warps = ip.tile.warps;
    plan.head_dim_rounded = rounded;
    plan.num_splits = ip.split.num_splits;
    plan.workspace_bytes = ip.ws.bytes;
    plan.kernel = std::string(entry->name) + (ip.decode ? "+decode" : "") + (ip.pack ? "+packgqa" : "") +
                  (ip.split.write_partial ? "+combine" : "");
    return plan;
  }
  const TileSm80 tile = fwd_tile_for_problem_sm80(rounded, smem_optin(device), p);
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

void fwd(const FwdParams& p, const Plan& plan, void* workspace, size_t workspace_bytes, void* stream) {
  if (p.batch <= 0 || p.nheads <= 0 || p.total_q <= 0 || p.seqlen_q <= 0) return;  // nothing to compute
  reject_unbuilt_fwd(p);
  const KernelEntry* entry = lookup_fwd(p, plan.head_dim_rounded);
  if (entry == nullptr) fail(FLASHATTN_STATUS_NOT_BUILT, "kernel ", plan.kernel, " is not in this build");
  DeviceGuard guard(device_of(p.q));
  cudaGetLastError();  // an earlier, unrelated error must not be reported as ours
  if (is_infer_call(p)) {
    int device = 0;
    check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    run_infer(p, entry, plan.num_splits, workspace, workspace_bytes, device, stream);
    return;
  }
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
  const KernelEntry* entry = find_kernel("bwd", "sm80", p.dtype, rounded, bwd_variant_bits(p));
  if (entry == nullptr) {
    fail(FLASHATTN_STATUS_NOT_BUILT, "kernel bwd_sm80_", dtype_name(p.dtype), "_hdim", rounded,
         (bwd_variant_bits(p) & 1u) ? "_causal" : "", " is not in this build: configure with FLASHATTN_HEADDIMS including ",
         rounded, ", FLASHATTN_DTYPES including ", dtype_name(p.dtype), " and FLASHATTN_FAMILIES including bwd");
  }
  *rounded_out = rounded;
  return entry;
}

// The tile the backward's launch template picks for p on `device` (bwd_launch_sm80.cuh: the class the
// device's shared memory fits, then the short-causal rule); block_m 0 where none fits.
TileBwdSm80 bwd_tile_for_problem(const BwdParams& p, int device, int rounded) {
  return bwd_tile_for_device_sm80(rounded, smem_optin(device),
                                  bwd_short_causal_sm80((bwd_variant_bits(p) & 1u) != 0, p.seqlen_q));
}

}  // namespace

// Workspace (tile_bwd_sm80.h): fp32 dQ accumulator slices, D = rowsum(dO * O), dsinks partials. dK/dV need
// none: a CTA owns its key block for every query head of the GQA group and reduces it in registers.
Plan plan_bwd(const BwdParams& p, int device) {
  const int arch = device_arch(device);
  int rounded = 0;
  const KernelEntry* entry = check_bwd(p, arch, &rounded);
  const size_t optin = smem_optin(device);
  const TileBwdSm80 tile = bwd_tile_for_problem(p, device, rounded);
  if (tile.block_m == 0) {
    fail(FLASHATTN_STATUS_NOT_SUPPORTED, "head_dim ", p.head_dim, ": the GPU backward needs ",
         bwd_smem_bytes_sm80(rounded, bwd_tile_sm80(rounded, SmemClassSm80::k163KB)) / 1024, " KB of shared memory per block at head dim ",
         rounded, "; this GPU (sm_", arch, ") offers ", optin / 1024,
         " KB (head dims up to 160 run on 99 KB GPUs such as sm86/sm89; larger ones need sm80 or sm90)");
  }
  const int slices = bwd_dq_slices_sm80(p.deterministic != 0, num_sms(device), p.batch, p.nheads_k, p.seqlen_k,
                                        tile.block_n);
  const BwdWorkspaceSm80 ws =
      bwd_workspace_sm80(slices, p.nheads, p.total_q, rounded, tile.block_m, p.batch, p.seqlen_q,
                         p.cu_seqlens_q != nullptr, p.sinks != nullptr);
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
  // The layout the launcher carves for this p (its tile may differ from the plan's if p does).
  const BwdWorkspaceSm80 ws =
      bwd_workspace_sm80(plan.num_splits, p.nheads, p.total_q, rounded, bwd_tile_for_problem(p, device, rounded).block_m,
                         p.batch, p.seqlen_q, p.cu_seqlens_q != nullptr, p.sinks != nullptr);
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
