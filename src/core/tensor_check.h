// Checks on C tensor descriptors. Every failure names the argument, what was expected and what was given.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/params.h"
#include "flashattn/flashattn.h"

namespace flashattn {

// Where a call's tensors live; every tensor of one call must agree with the first required one (q).
struct Device {
  int32_t type = FLASHATTN_DEVICE_CPU;
  int32_t id = 0;
  bool is_cuda() const { return type == FLASHATTN_DEVICE_CUDA; }
};

const char* dtype_name(int32_t dtype);
std::string shape_string(const flashattn_tensor& t);
inline bool present(const flashattn_tensor& t) { return t.data != nullptr; }
inline DType dtype_of(const flashattn_tensor& t) { return static_cast<DType>(t.dtype); }

// A view of one argument, carrying its name into every message.
class TensorArg {
 public:
  TensorArg(const char* name, const flashattn_tensor& t) : name_(name), t_(t) {}

  const char* name() const { return name_; }
  const flashattn_tensor& t() const { return t_; }
  bool present() const { return t_.data != nullptr; }
  int64_t size(int d) const { return t_.shape[d]; }
  int64_t stride(int d) const { return t_.strides[d]; }

  // Basic sanity of the descriptor: ndim in range, sizes and strides >= 0, addressable extent fits in
  // int64. Called on every present tensor before anything else.
  const TensorArg& check_descriptor() const;
  const TensorArg& require() const;  // must be present (then check_descriptor)
  const TensorArg& ndim(int n) const;
  const TensorArg& ndim_in(int lo, int hi) const;
  const TensorArg& dtype(DType d) const;
  const TensorArg& dtype_in(std::initializer_list<DType> allowed) const;
  const TensorArg& shape(std::initializer_list<int64_t> expected) const;  // -1 = any size
  const TensorArg& last_dim_contiguous() const;
  const TensorArg& contiguous() const;
  const TensorArg& same_device(const Device& dev) const;
  // GPU kernels load 16-byte vectors: base 16-byte aligned, non-last strides multiples of 8 elements.
  const TensorArg& gpu_vector_aligned(const Device& dev) const;

 private:
  const char* name_;
  const flashattn_tensor& t_;
};

// Reads a caller's args struct of any size into a defaulted local copy: an older (smaller) struct is
// rejected, a newer (larger) one is accepted only when the fields this library does not know are zero.
void check_struct_size(const char* what, uint64_t given, size_t ours, const void* args);

}  // namespace flashattn
