// flashattn C++ API: a header-only layer over the C ABI (flashattn.h).
//
//   flashattn::FwdArgs a;                       // initialised: struct_size, windows -1, ...
//   a.q = flashattn::tensor(q_ptr, FLASHATTN_DTYPE_BF16, {b, s, h, d}, flashattn::Device::cuda(0));
//   ...
//   a.opt.causal = 1;
//   flashattn::Workspace ws(cuda_alloc, cuda_free);  // or Workspace() for host memory (CPU backend)
//   flashattn::fwd(a, ws, stream);                   // throws flashattn::Exception on error
//
// The workspace grows on the size query, before the run call, so a steady-state loop allocates nothing
// (what CUDA-graph capture needs: reserve once for the largest shape, then capture).
#ifndef FLASHATTN_FLASHATTN_HPP_
#define FLASHATTN_FLASHATTN_HPP_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include "flashattn/flashattn.h"

namespace flashattn {

class Exception : public std::runtime_error {
 public:
  Exception(flashattn_status status, const std::string& msg)
      : std::runtime_error(std::string(flashattn_status_string(status)) + ": " + msg), status_(status) {}
  flashattn_status status() const { return status_; }

 private:
  flashattn_status status_;
};

inline void check(flashattn_status status) {
  if (status != FLASHATTN_STATUS_OK) throw Exception(status, flashattn_last_error());
}

struct Device {
  int32_t type = FLASHATTN_DEVICE_CPU;
  int32_t id = 0;
  static Device cpu() { return Device{FLASHATTN_DEVICE_CPU, 0}; }
  static Device cuda(int32_t id) { return Device{FLASHATTN_DEVICE_CUDA, id}; }
};

// A tensor view; strides default to contiguous (row-major), in elements.
inline flashattn_tensor tensor(void* data, flashattn_dtype dtype, std::initializer_list<int64_t> shape,
                               Device device = Device::cpu(), std::initializer_list<int64_t> strides = {}) {
  flashattn_tensor t = flashattn_tensor_none();
  t.data = data;
  t.dtype = dtype;
  t.device_type = device.type;
  t.device_id = device.id;
  t.ndim = static_cast<int32_t>(shape.size());
  if (shape.size() > FLASHATTN_MAX_NDIM || (strides.size() != 0 && strides.size() != shape.size())) {
    throw Exception(FLASHATTN_STATUS_INVALID_ARGUMENT, "tensor(): at most 6 dims, and one stride per dim");
  }
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  if (strides.size() == 0) {
    int64_t st = 1;
    for (int d = t.ndim - 1; d >= 0; --d) {
      t.strides[d] = st;
      st *= t.shape[d];
    }
  } else {
    i = 0;
    for (int64_t s : strides) t.strides[i++] = s;
  }
  return t;
}

// Argument structs, initialised with the library's defaults.
struct FwdArgs : flashattn_fwd_args {
  FwdArgs() { flashattn_fwd_args_init(this); }
};
struct BwdArgs : flashattn_bwd_args {
  BwdArgs() { flashattn_bwd_args_init(this); }
};
struct KvcacheArgs : flashattn_kvcache_args {
  KvcacheArgs() { flashattn_kvcache_args_init(this); }
};
struct CombineArgs : flashattn_combine_args {
  CombineArgs() { flashattn_combine_args_init(this); }
};

// Owns a workspace buffer that only grows. Host memory by default; pass an allocator pair for device
// memory (e.g. wrappers of cudaMalloc/cudaFree, or a framework's caching allocator).
class Workspace {
 public:
  using Alloc = std::function<void*(size_t)>;
  using Free = std::function<void(void*)>;

  Workspace()
      : alloc_([](size_t n) { return ::operator new(n, std::align_val_t(64)); }),
        free_([](void* p) { ::operator delete(p, std::align_val_t(64)); }) {}
  Workspace(Alloc alloc, Free free) : alloc_(std::move(alloc)), free_(std::move(free)) {}
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace() { release(); }

  // A buffer of at least `bytes`; allocates only when the current one is smaller.
  void* reserve(size_t bytes) {
    if (bytes > size_) {
      release();
      ptr_ = alloc_(bytes);
      if (!ptr_) throw Exception(FLASHATTN_STATUS_INTERNAL, "workspace allocation failed");
      size_ = bytes;
    }
    return ptr_;
  }
  void* data() const { return ptr_; }
  size_t size() const { return size_; }

 private:
  void release() {
    if (ptr_) free_(ptr_);
    ptr_ = nullptr;
    size_ = 0;
  }
  Alloc alloc_;
  Free free_;
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

namespace detail {
// Size query, workspace growth (outside the run call), run.
template <typename Args>
void run_with_workspace(flashattn_status (*size_fn)(const Args*, size_t*),
                        flashattn_status (*run_fn)(const Args*, void*, size_t, void*), const Args& args,
                        Workspace& ws, void* stream) {
  size_t bytes = 0;
  check(size_fn(&args, &bytes));
  void* buffer = ws.reserve(bytes);
  check(run_fn(&args, buffer, ws.size(), stream));
}
}  // namespace detail

inline void fwd(const flashattn_fwd_args& args, Workspace& ws, void* stream = nullptr) {
  detail::run_with_workspace(flashattn_fwd_workspace_size, flashattn_fwd, args, ws, stream);
}

inline void varlen_fwd(const flashattn_fwd_args& args, Workspace& ws, void* stream = nullptr) {
  detail::run_with_workspace(flashattn_fwd_workspace_size, flashattn_varlen_fwd, args, ws, stream);
}

inline void bwd(const flashattn_bwd_args& args, Workspace& ws, void* stream = nullptr) {
  detail::run_with_workspace(flashattn_bwd_workspace_size, flashattn_bwd, args, ws, stream);
}

inline void varlen_bwd(const flashattn_bwd_args& args, Workspace& ws, void* stream = nullptr) {
  detail::run_with_workspace(flashattn_bwd_workspace_size, flashattn_varlen_bwd, args, ws, stream);
}

inline void fwd_kvcache(const flashattn_kvcache_args& args, Workspace& ws, void* stream = nullptr) {
  detail::run_with_workspace(flashattn_kvcache_workspace_size, flashattn_fwd_kvcache, args, ws, stream);
}

inline void combine(const flashattn_combine_args& args, void* stream = nullptr) {
  check(flashattn_combine(&args, stream));
}

inline flashattn_plan_info plan(const flashattn_fwd_args& args) {
  flashattn_plan_info info{};
  info.struct_size = sizeof(info);
  check(flashattn_fwd_plan(&args, &info));
  return info;
}

inline flashattn_build_info build_info() {
  flashattn_build_info info{};
  info.struct_size = sizeof(info);
  check(flashattn_build_info_get(&info));
  return info;
}

inline void set_num_threads(int n) { check(flashattn_set_num_threads(n)); }

}  // namespace flashattn

#endif  // FLASHATTN_FLASHATTN_HPP_
