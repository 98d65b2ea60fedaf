// Registry of compiled GPU kernels (generated from kernels.toml by tools/gen_kernels.py).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/params.h"

namespace flashattn {

// One compiled instantiation. `variant_bits` holds the family's boolean variants in manifest order.
struct KernelEntry {
  const char* op;
  const char* path;
  DType dtype;
  int32_t head_dim;
  uint32_t variant_bits;
  const char* name;
  void (*fn)(const void* params, void* stream);
};

// The generated table (kernel_registry.cpp); `count` excludes the terminating sentinel.
const KernelEntry* kernel_table(size_t* count);

// Finds an instantiation; nullptr when it is not in this build.
const KernelEntry* find_kernel(const char* op, const char* path, DType dtype, int head_dim, uint32_t variant_bits);

}  // namespace flashattn
