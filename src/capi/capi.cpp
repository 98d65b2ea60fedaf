// extern "C" entry points: validate, plan, dispatch to a backend; exceptions become a status plus a
// thread-local message.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <set>
#include <string>

#include "core/backend.h"
#include "core/dispatch.h"
#include "core/error.h"
#include "core/registry.h"
#include "core/validate.h"
#include "flashattn/flashattn.h"

#ifndef FLASHATTN_VERSION_STRING
#define FLASHATTN_VERSION_STRING "0.0.0"
#endif
#ifndef FLASHATTN_BUILD_ARCHS
#define FLASHATTN_BUILD_ARCHS ""
#endif

namespace flashattn {

namespace {

thread_local std::string g_last_error;

template <typename F>
flashattn_status guarded(F&& f) {
  try {
    f();
    g_last_error.clear();
    return FLASHATTN_STATUS_OK;
  } catch (const Error& e) {
    g_last_error = e.what();
    return e.status();
  } catch (const std::bad_alloc&) {
    g_last_error = "out of host memory";
    return FLASHATTN_STATUS_INTERNAL;
  } catch (const std::exception& e) {
    g_last_error = std::string("internal error: ") + e.what();
    return FLASHATTN_STATUS_INTERNAL;
  } catch (...) {
    g_last_error = "internal error: unknown exception";
    return FLASHATTN_STATUS_INTERNAL;
  }
}

void copy_string(char* dst, size_t cap, const std::string& s) {
  std::snprintf(dst, cap, "%s", s.c_str());
}

// The path a call on `dev` takes, honouring FLASHATTN_FORCE_PATH where it can.
void check_forced_path(const Device& dev) {
  const flashattn_path forced = forced_path();
  if (forced == FLASHATTN_PATH_AUTO) return;
  if (forced == FLASHATTN_PATH_CPU && dev.is_cuda()) {
    fail(FLASHATTN_STATUS_NOT_SUPPORTED, "FLASHATTN_FORCE_PATH=cpu: the tensors are on a CUDA device");
  }
  if (forced != FLASHATTN_PATH_CPU && !dev.is_cuda()) {
    fail(FLASHATTN_STATUS_NOT_SUPPORTED, "FLASHATTN_FORCE_PATH names a GPU path: the tensors are on the CPU");
  }
  // The sm80 path is the only GPU path so far; the sm75 and sm90 planners will read forced_path() themselves.
  if (forced == FLASHATTN_PATH_SM75 || forced == FLASHATTN_PATH_SM90) {
    fail(FLASHATTN_STATUS_NOT_BUILT, "FLASHATTN_FORCE_PATH=", forced == FLASHATTN_PATH_SM75 ? "sm75" : "sm90",
         ": that code path is not built yet (available: sm80, cpu)");
  }
}

Plan plan_fwd_for(const Validated<FwdParams>& v) {
  check_forced_path(v.device);
  return v.device.is_cuda() ? cuda::plan_fwd(v.params, v.device.id) : cpu::plan_fwd(v.params);
}

Plan plan_bwd_for(const Validated<BwdParams>& v) {
  check_forced_path(v.device);
  return v.device.is_cuda() ? cuda::plan_bwd(v.params, v.device.id) : cpu::plan_bwd(v.params);
}

void check_workspace(const Plan& plan, const void* workspace, size_t bytes) {
  if (bytes < plan.workspace_bytes) {
    fail(FLASHATTN_STATUS_WORKSPACE_TOO_SMALL, "workspace: expected at least ", plan.workspace_bytes,
         " bytes (ask the *_workspace_size call), got ", bytes);
  }
  if (plan.workspace_bytes > 0 && workspace == nullptr) {
    fail(FLASHATTN_STATUS_WORKSPACE_TOO_SMALL, "workspace: expected a buffer of ", plan.workspace_bytes,
         " bytes, got NULL");
  }
}

// Metadata read on the device cannot be checked without a sync: always on the CPU, on request on the GPU.
template <typename P>
void check_metadata_for(const Validated<P>& v, void* stream) {
  if (!v.device.is_cuda()) {
    check_metadata(v.params);
  } else if (v.check_metadata) {
    check_device_metadata(v.params, stream);
  }
}

void run_fwd(const Validated<FwdParams>& v, void* workspace, size_t bytes, void* stream) {
  if (v.params.batch == 0) return;
  const Plan plan = plan_fwd_for(v);
  check_workspace(plan, workspace, bytes);
  check_metadata_for(v, stream);
  if (v.device.is_cuda()) {
    cuda::fwd(v.params, plan, workspace, bytes, stream);
  } else {
    cpu::fwd(v.params, plan, workspace, bytes);
  }
}

void fill_plan_info(const Plan& plan, flashattn_plan_info* info) {
  if (!info) fail_arg("info: expected a flashattn_plan_info pointer, got NULL");
  check_struct_size("flashattn_plan_info", info->struct_size, sizeof(flashattn_plan_info), info);
  info->path = plan.path;
  info->block_m = plan.block_m;
  info->block_n = plan.block_n;
  info->num_warps = plan.num_warps;
  info->head_dim_rounded = plan.head_dim_rounded;
  info->num_splits = plan.num_splits;
  info->workspace_bytes = plan.workspace_bytes;
  copy_string(info->kernel, sizeof(info->kernel), plan.kernel);
}

void set_size(size_t* bytes, size_t value) {
  if (!bytes) fail_arg("bytes: expected a size_t pointer, got NULL");
  *bytes = value;
}

std::string join(const std::set<std::string>& items) {
  std::string s;
  for (const auto& i : items) s += (s.empty() ? "" : ";") + i;
  return s;
}

}  // namespace

flashattn_path forced_path() {
  static const flashattn_path path = [] {
    const char* v = std::getenv("FLASHATTN_FORCE_PATH");
    if (!v || !*v || std::strcmp(v, "auto") == 0) return FLASHATTN_PATH_AUTO;
    if (std::strcmp(v, "cpu") == 0) return FLASHATTN_PATH_CPU;
    if (std::strcmp(v, "sm75") == 0) return FLASHATTN_PATH_SM75;
    if (std::strcmp(v, "sm80") == 0) return FLASHATTN_PATH_SM80;
    if (std::strcmp(v, "sm90") == 0) return FLASHATTN_PATH_SM90;
    return static_cast<flashattn_path>(-1);
  }();
  if (path == static_cast<flashattn_path>(-1)) {
    fail(FLASHATTN_STATUS_INVALID_ARGUMENT, "FLASHATTN_FORCE_PATH: expected auto, cpu, sm75, sm80 or sm90, got '",
         std::getenv("FLASHATTN_FORCE_PATH"), "'");
  }
  return path;
}

}  // namespace flashattn

using namespace flashattn;

extern "C" {

const char* flashattn_version(void) { return FLASHATTN_VERSION_STRING; }
int32_t flashattn_abi_version(void) { return FLASHATTN_ABI_VERSION; }

const char* flashattn_status_string(flashattn_status status) {
  switch (status) {
    case FLASHATTN_STATUS_OK: return "ok";
    case FLASHATTN_STATUS_INVALID_ARGUMENT: return "invalid argument";
    case FLASHATTN_STATUS_NOT_SUPPORTED: return "not supported";
    case FLASHATTN_STATUS_NOT_BUILT: return "not built";
    case FLASHATTN_STATUS_WORKSPACE_TOO_SMALL: return "workspace too small";
    case FLASHATTN_STATUS_DEVICE_ERROR: return "device error";
    case FLASHATTN_STATUS_BAD_METADATA: return "bad metadata";
    case FLASHATTN_STATUS_INTERNAL: return "internal error";
  }
  return "unknown status";
}

const char* flashattn_last_error(void) { return g_last_error.c_str(); }

flashattn_status flashattn_build_info_get(flashattn_build_info* info) {
  return guarded([&] {
    if (!info) fail_arg("info: expected a flashattn_build_info pointer, got NULL");
    check_struct_size("flashattn_build_info", info->struct_size, sizeof(flashattn_build_info), info);
    copy_string(info->version, sizeof(info->version), FLASHATTN_VERSION_STRING);
    info->abi_version = FLASHATTN_ABI_VERSION;
    info->cuda_enabled = cuda::built() ? 1 : 0;
#ifdef FLASHATTN_CUDA_VERSION
    info->cuda_runtime_version = FLASHATTN_CUDA_VERSION;
#else
    info->cuda_runtime_version = 0;
#endif
    std::string archs = cuda::built() ? FLASHATTN_BUILD_ARCHS : "";
    std::replace(archs.begin(), archs.end(), ',', ';');
    copy_string(info->archs, sizeof(info->archs), archs.c_str());
    size_t count = 0;
    const KernelEntry* table = kernel_table(&count);
    std::set<std::string> dtypes, head_dims, ops;
    for (size_t i = 0; i < count; ++i) {
      dtypes.insert(table[i].dtype == DType::kFP16 ? "fp16" : "bf16");
      head_dims.insert(std::to_string(table[i].head_dim));
      ops.insert(std::string(table[i].op) + "_" + table[i].path);
    }
    copy_string(info->dtypes, sizeof(info->dtypes), join(dtypes));
    copy_string(info->head_dims, sizeof(info->head_dims), join(head_dims));
    // The CPU backend implements every operation and option; GPU kernels are listed as op_path.
    std::string features = "cpu:fwd;cpu:bwd;cpu:kvcache;cpu:paged;cpu:rotary;cpu:dropout;cpu:combine";
    if (!ops.empty()) features += ";" + join(ops);
    copy_string(info->features, sizeof(info->features), features);
    info->num_kernels = static_cast<int32_t>(count);
  });
}

flashattn_status flashattn_set_num_threads(int32_t num_threads) {
  return guarded([&] {
    if (num_threads < 0) fail_arg("num_threads: expected >= 0 (0 = all hardware threads), got ", num_threads);
    cpu::set_num_threads(num_threads);
  });
}

int32_t flashattn_get_num_threads(void) { return cpu::get_num_threads(); }

flashattn_tensor flashattn_tensor_none(void) {
  flashattn_tensor t;
  std::memset(&t, 0, sizeof(t));
  return t;
}

void flashattn_options_init(flashattn_options* opt) {
  if (!opt) return;
  std::memset(opt, 0, sizeof(*opt));
  opt->window_left = -1;
  opt->window_right = -1;
}

void flashattn_fwd_args_init(flashattn_fwd_args* args) {
  if (!args) return;
  std::memset(args, 0, sizeof(*args));
  args->struct_size = sizeof(*args);
  flashattn_options_init(&args->opt);
}

void flashattn_bwd_args_init(flashattn_bwd_args* args) {
  if (!args) return;
  std::memset(args, 0, sizeof(*args));
  args->struct_size = sizeof(*args);
  flashattn_options_init(&args->opt);
}

void flashattn_kvcache_args_init(flashattn_kvcache_args* args) {
  if (!args) return;
  std::memset(args, 0, sizeof(*args));
  args->struct_size = sizeof(*args);
  args->rotary_interleaved = 1;
  flashattn_options_init(&args->opt);
}

void flashattn_combine_args_init(flashattn_combine_args* args) {
  if (!args) return;
  std::memset(args, 0, sizeof(*args));
  args->struct_size = sizeof(*args);
}

flashattn_status flashattn_fwd_workspace_size(const flashattn_fwd_args* args, size_t* bytes) {
  return guarded([&] {
    const auto v = validate_fwd(args, false);
    set_size(bytes, v.params.batch == 0 ? 0 : plan_fwd_for(v).workspace_bytes);
  });
}

flashattn_status flashattn_fwd(const flashattn_fwd_args* args, void* workspace, size_t workspace_bytes,
                               void* stream) {
  return guarded([&] { run_fwd(validate_fwd(args, false), workspace, workspace_bytes, stream); });
}

flashattn_status flashattn_varlen_fwd(const flashattn_fwd_args* args, void* workspace, size_t workspace_bytes,
                                      void* stream) {
  return guarded([&] { run_fwd(validate_fwd(args, true), workspace, workspace_bytes, stream); });
}

flashattn_status flashattn_fwd_plan(const flashattn_fwd_args* args, flashattn_plan_info* info) {
  return guarded([&] { fill_plan_info(plan_fwd_for(validate_fwd(args, false)), info); });
}

static flashattn_status run_bwd_call(const flashattn_bwd_args* args, bool varlen, void* workspace, size_t bytes,
                                     void* stream) {
  return guarded([&] {
    const auto v = validate_bwd(args, varlen);
    if (v.params.batch == 0) return;
    const Plan plan = plan_bwd_for(v);
    check_workspace(plan, workspace, bytes);
    check_metadata_for(v, stream);
    if (v.device.is_cuda()) {
      cuda::bwd(v.params, plan, workspace, bytes, stream);
    } else {
      cpu::bwd(v.params, plan, workspace, bytes);
    }
  });
}

flashattn_status flashattn_bwd_workspace_size(const flashattn_bwd_args* args, size_t* bytes) {
  return guarded([&] {
    const auto v = validate_bwd(args, false);
    set_size(bytes, v.params.batch == 0 ? 0 : plan_bwd_for(v).workspace_bytes);
  });
}

flashattn_status flashattn_bwd(const flashattn_bwd_args* args, void* workspace, size_t workspace_bytes,
                               void* stream) {
  return run_bwd_call(args, false, workspace, workspace_bytes, stream);
}

flashattn_status flashattn_varlen_bwd(const flashattn_bwd_args* args, void* workspace, size_t workspace_bytes,
                                      void* stream) {
  return run_bwd_call(args, true, workspace, workspace_bytes, stream);
}

flashattn_status flashattn_bwd_plan(const flashattn_bwd_args* args, flashattn_plan_info* info) {
  return guarded([&] { fill_plan_info(plan_bwd_for(validate_bwd(args, false)), info); });
}

flashattn_status flashattn_kvcache_workspace_size(const flashattn_kvcache_args* args, size_t* bytes) {
  return guarded([&] {
    const auto v = validate_kvcache(args);
    set_size(bytes, v.params.batch == 0 ? 0 : plan_fwd_for(v).workspace_bytes);
  });
}

flashattn_status flashattn_fwd_kvcache(const flashattn_kvcache_args* args, void* workspace, size_t workspace_bytes,
                                       void* stream) {
  return guarded([&] { run_fwd(validate_kvcache(args), workspace, workspace_bytes, stream); });
}

flashattn_status flashattn_kvcache_plan(const flashattn_kvcache_args* args, flashattn_plan_info* info) {
  return guarded([&] { fill_plan_info(plan_fwd_for(validate_kvcache(args)), info); });
}

flashattn_status flashattn_combine(const flashattn_combine_args* args, void* stream) {
  return guarded([&] {
    const auto v = validate_combine(args);
    if (v.params.batch == 0 || v.params.seqlen_q == 0) return;
    if (v.device.is_cuda()) {
      cuda::combine(v.params, stream);
    } else {
      cpu::combine(v.params);
    }
  });
}

}  // extern "C"
