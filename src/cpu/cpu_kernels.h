// The vectorised hot loops of the CPU backend, one table per instruction set.
//
// cpu_kernels_impl.h holds the code once, written against a small SIMD trait; cpu_isa_avx512.cpp,
// cpu_isa_avx2.cpp and cpu_isa_sse2.cpp compile it for their ISA (a `#pragma GCC target` per unit, so the
// default build still runs on any x86-64) and kernels() picks the best table the CPU supports at run time.
//
// Tile conventions: every tile is row-major fp32 with a leading dimension; "cols" of the elementwise
// kernels is a multiple of 16 (tiles are padded), so no kernel has a tail except the row conversions.
#pragma once

#include <cstdint>

#include "core/params.h"

namespace flashattn {
namespace cpu {

enum GemmMode : int {
  kGemmStore = 0,       // C = A B
  kGemmAccumulate = 1,  // C += A B
  kGemmRescale = 2,     // C = diag(row_scale) C + A B  (online-softmax rescale folded into the update)
};

struct Kernels {
  const char* isa;
  // C (m x n, ldc) op= A (m x k) * B (k x n, ldb). A element (i, kk) is a[i * a_rs + kk * a_cs], so a
  // transposed A costs nothing (A is only ever broadcast). n must be a multiple of 16.
  void (*gemm)(int m, int n, int k, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t ldb,
               float* c, int64_t ldc, const float* row_scale, int mode);
  // dst[0..n) = float(src[0..n)); dst[n..npad) = 0.
  void (*load_row)(const void* src, DType t, int n, int npad, float* dst);
  // dst[0..n) = dtype(src[0..n) * mul), round to nearest even.
  void (*store_row)(const float* src, float mul, int n, void* dst, DType t);
  // t = tanh(s); s = cap2 * t. t_out (same ld) may be null.
  void (*softcap)(float* s, int64_t ld, int rows, int cols, float cap2, float* t_out);
  // s(r, c) -= slope2 * |base + row_step * r + col_step * c|.
  void (*alibi)(float* s, int64_t ld, int rows, int cols, float base, float row_step, float col_step,
                float slope2);
  // Online softmax over the rows of a transposed score tile (rows = keys, cols = query rows):
  // per column c: m_new = max(m, max_r s), alpha = exp2(m - m_new), s = exp2(s - m_new),
  // l = l * alpha + sum_r s. Columns that have seen no key keep m = -inf and produce zeros.
  void (*softmax_cols)(float* s, int64_t ld, int rows, int cols, float* m, float* l, float* alpha);
  // p = exp2(s - sub[c]) (per_col) or exp2(s - sub[r]); sub = +inf gives 0.
  void (*exp2_sub)(const float* s, int64_t ld, int rows, int cols, const float* sub, int per_col, float* p);
  // ds = p * (dp - dvec[.]) * scale, times (1 - t^2) when t is given (softcap).
  void (*grad_scores)(const float* p, const float* dp, const float* t, int64_t ld, int rows, int cols,
                      const float* dvec, int per_col, float scale, float* ds);
};

const Kernels& kernels();

// Scalar conversions for row tails and the baseline table (cpu_runtime.cpp, compiled for baseline x86-64).
void load_row_scalar(const void* src, DType t, int n, float* dst);
void store_row_scalar(const float* src, float mul, int n, void* dst, DType t);

namespace isa_avx512 { extern const Kernels kTable; }
namespace isa_avx2 { extern const Kernels kTable; }
namespace isa_sse2 { extern const Kernels kTable; }

}  // namespace cpu
}  // namespace flashattn
