// Per-block opt-in shared memory of the current device, read by the launch templates to pick the tile
// of the device's shared-memory class (tile_sm80.h). Cached per device: it never changes, and the
// attribute query would otherwise run on every launch.
#pragma once

#include <atomic>
#include <cstddef>

#include <cuda_runtime.h>

namespace flashattn {
namespace kern {

inline size_t device_smem_optin_bytes() {
  static std::atomic<int> cache[64];
  int dev = 0;
  cudaGetDevice(&dev);
  if (dev >= 0 && dev < 64) {
    const int v = cache[dev].load(std::memory_order_relaxed);
    if (v > 0) return static_cast<size_t>(v);
  }
  int v = 0;
  cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (dev >= 0 && dev < 64 && v > 0) cache[dev].store(v, std::memory_order_relaxed);
  return static_cast<size_t>(v);
}

}  // namespace kern
}  // namespace flashattn
