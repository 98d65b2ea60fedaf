#include "core/registry.h"

#include <cstring>

namespace flashattn {

const KernelEntry* find_kernel(const char* op, const char* path, DType dtype, int head_dim, uint32_t variant_bits) {
  // A linear scan: the table holds at most a few hundred entries and string compares stop at the first byte.
  size_t count = 0;
  const KernelEntry* table = kernel_table(&count);
  for (size_t i = 0; i < count; ++i) {
    const KernelEntry& e = table[i];
    if (e.dtype == dtype && e.head_dim == head_dim && e.variant_bits == variant_bits && std::strcmp(e.op, op) == 0 &&
        std::strcmp(e.path, path) == 0) {
      return &e;
    }
  }
  return nullptr;
}

}  // namespace flashattn
