// Process-wide CPU backend state: the thread count and the instruction-set dispatch.
#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/backend.h"
#include "cpu/cpu_common.h"
#include "cpu/cpu_kernels.h"

namespace flashattn {
namespace cpu {

namespace {

std::atomic<int> g_num_threads{0};  // 0 = all hardware threads

const Kernels* pick_kernels() {
  // FLASHATTN_CPU_ISA=sse2|avx2|avx512 caps the choice (tests use it to cover every table on one machine).
  const char* cap = std::getenv("FLASHATTN_CPU_ISA");
  const bool allow512 = !cap || std::strcmp(cap, "avx512") == 0;
  const bool allow2 = allow512 || std::strcmp(cap, "avx2") == 0;
  __builtin_cpu_init();
  if (allow512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    return &isa_avx512::kTable;
  }
  if (allow2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &isa_avx2::kTable;
  return &isa_sse2::kTable;
}

}  // namespace

const Kernels& kernels() {
  static const Kernels* const table = pick_kernels();
  return *table;
}

void set_num_threads(int n) {
  if (n < 0) fail_arg("num_threads: expected >= 0 (0 = all hardware threads), got ", n);
  g_num_threads.store(n);
}

int get_num_threads() { return resolved_threads(); }

int resolved_threads() {
  const int n = g_num_threads.load();
  if (n > 0) return n;
  const int hw = omp_get_num_procs();
  return hw > 0 ? hw : 1;
}

void load_row_scalar(const void* src, DType t, int n, float* dst) {
  for (int j = 0; j < n; ++j) dst[j] = load_elem(src, j, t);
}

void store_row_scalar(const float* src, float mul, int n, void* dst, DType t) {
  for (int j = 0; j < n; ++j) store_elem(dst, j, t, src[j] * mul);
}

}  // namespace cpu
}  // namespace flashattn
