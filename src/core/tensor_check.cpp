#include "core/tensor_check.h"

#include <sstream>

#include "core/error.h"

namespace flashattn {

const char* dtype_name(int32_t dtype) {
  switch (dtype) {
    case FLASHATTN_DTYPE_FP32: return "fp32";
    case FLASHATTN_DTYPE_FP16: return "fp16";
    case FLASHATTN_DTYPE_BF16: return "bf16";
    case FLASHATTN_DTYPE_INT32: return "int32";
    case FLASHATTN_DTYPE_INT64: return "int64";
    default: return "invalid";
  }
}

static const char* device_name(int32_t type) {
  switch (type) {
    case FLASHATTN_DEVICE_CPU: return "cpu";
    case FLASHATTN_DEVICE_CUDA: return "cuda";
    default: return "unknown";
  }
}

std::string shape_string(const flashattn_tensor& t) {
  std::ostringstream os;
  os << "(";
  const int n = (t.ndim >= 0 && t.ndim <= FLASHATTN_MAX_NDIM) ? t.ndim : 0;
  for (int i = 0; i < n; ++i) os << (i ? ", " : "") << t.shape[i];
  if (n == 1) os << ",";
  os << ")";
  return os.str();
}

static std::string expected_shape_string(std::initializer_list<int64_t> dims) {
  std::ostringstream os;
  os << "(";
  int i = 0;
  for (int64_t d : dims) {
    os << (i++ ? ", " : "");
    if (d < 0) {
      os << "*";
    } else {
      os << d;
    }
  }
  if (dims.size() == 1) os << ",";
  os << ")";
  return os.str();
}

const TensorArg& TensorArg::check_descriptor() const {
  if (t_.ndim < 1 || t_.ndim > FLASHATTN_MAX_NDIM) {
    fail_arg(name_, ": expected ndim in [1, ", FLASHATTN_MAX_NDIM, "], got ", t_.ndim);
  }
  if (t_.dtype < FLASHATTN_DTYPE_FP32 || t_.dtype > FLASHATTN_DTYPE_INT64) {
    fail_arg(name_, ": expected a flashattn_dtype value, got ", t_.dtype);
  }
  // The largest element offset must fit in int64 (all kernel index math is int64).
  __int128 extent = 0;
  for (int d = 0; d < t_.ndim; ++d) {
    if (t_.shape[d] < 0) fail_arg(name_, ": expected sizes >= 0, got shape ", shape_string(t_));
    if (t_.strides[d] < 0) fail_arg(name_, ": expected strides >= 0, got stride ", t_.strides[d], " in dim ", d);
    if (t_.shape[d] > 0) extent += static_cast<__int128>(t_.shape[d] - 1) * t_.strides[d];
    if (extent > static_cast<__int128>(INT64_MAX) / 8) {
      fail_arg(name_, ": tensor extent overflows int64 (shape ", shape_string(t_), ")");
    }
  }
  return *this;
}

const TensorArg& TensorArg::require() const {
  if (!present()) fail_arg(name_, ": expected a tensor, got none (data is NULL)");
  return check_descriptor();
}

const TensorArg& TensorArg::ndim(int n) const {
  if (t_.ndim != n) fail_arg(name_, ": expected ", n, " dims, got ", t_.ndim, " dims ", shape_string(t_));
  return *this;
}

const TensorArg& TensorArg::ndim_in(int lo, int hi) const {
  if (t_.ndim < lo || t_.ndim > hi) {
    fail_arg(name_, ": expected ", lo, " to ", hi, " dims, got ", t_.ndim, " dims ", shape_string(t_));
  }
  return *this;
}

const TensorArg& TensorArg::dtype(DType d) const {
  if (t_.dtype != static_cast<int32_t>(d)) {
    fail_arg(name_, ": expected dtype ", dtype_name(static_cast<int32_t>(d)), ", got ", dtype_name(t_.dtype));
  }
  return *this;
}

const TensorArg& TensorArg::dtype_in(std::initializer_list<DType> allowed) const {
  std::string names;
  for (DType d : allowed) {
    if (t_.dtype == static_cast<int32_t>(d)) return *this;
    names += (names.empty() ? "" : " or ");
    names += dtype_name(static_cast<int32_t>(d));
  }
  fail_arg(name_, ": expected dtype ", names, ", got ", dtype_name(t_.dtype));
}

const TensorArg& TensorArg::shape(std::initializer_list<int64_t> expected) const {
  bool ok = static_cast<size_t>(t_.ndim) == expected.size();
  int d = 0;
  for (int64_t e : expected) {
    if (!ok) break;
    ok = e < 0 || t_.shape[d] == e;
    ++d;
  }
  if (!ok) fail_arg(name_, ": expected shape ", expected_shape_string(expected), ", got ", shape_string(t_));
  return *this;
}

const TensorArg& TensorArg::last_dim_contiguous() const {
  if (t_.shape[t_.ndim - 1] > 1 && t_.strides[t_.ndim - 1] != 1) {
    fail_arg(name_, ": expected a contiguous last dimension (stride 1), got stride ", t_.strides[t_.ndim - 1]);
  }
  return *this;
}

const TensorArg& TensorArg::contiguous() const {
  int64_t expected = 1;
  for (int d = t_.ndim - 1; d >= 0; --d) {
    if (t_.shape[d] > 1 && t_.strides[d] != expected) {
      fail_arg(name_, ": expected a contiguous tensor, got stride ", t_.strides[d], " in dim ", d, " (expected ",
               expected, ")");
    }
    expected *= t_.shape[d];
  }
  return *this;
}

const TensorArg& TensorArg::same_device(const Device& dev) const {
  if (t_.device_type != dev.type || (dev.is_cuda() && t_.device_id != dev.id)) {
    fail_arg(name_, ": expected device ", device_name(dev.type), ":", dev.id, " (the device of q), got ",
             device_name(t_.device_type), ":", t_.device_id);
  }
  return *this;
}

const TensorArg& TensorArg::gpu_vector_aligned(const Device& dev) const {
  if (!dev.is_cuda()) return *this;
  if (reinterpret_cast<uintptr_t>(t_.data) % 16 != 0) {
    fail_arg(name_, ": expected a 16-byte aligned base pointer on the GPU, got address ", t_.data);
  }
  for (int d = 0; d + 1 < t_.ndim; ++d) {
    if (t_.shape[d] > 1 && t_.strides[d] % 8 != 0) {
      fail_arg(name_, ": expected strides that are multiples of 8 elements on the GPU, got stride ",
               t_.strides[d], " in dim ", d);
    }
  }
  return *this;
}

void check_struct_size(const char* what, uint64_t given, size_t ours, const void* args) {
  if (given < ours) {
    fail_arg(what, ".struct_size: expected >= ", ours, " (initialise it with ", what, "_init()), got ", given);
  }
  // A newer caller's extra fields must be zero: a non-zero one asks for something this library lacks.
  const unsigned char* bytes = static_cast<const unsigned char*>(args);
  for (uint64_t i = ours; i < given; ++i) {
    if (bytes[i] != 0) {
      fail(FLASHATTN_STATUS_NOT_SUPPORTED, what, ".struct_size: ", given, " bytes with fields this library (",
           ours, " bytes) does not know set; upgrade libflashattn");
    }
  }
}

}  // namespace flashattn
