// AMX block products for the bf16 forward pass (cpu_isa_amx.cpp). Callers check usable() first and
// bracket AMX use on each thread with tile_begin() / tile_end().
#pragma once

#include <cstdint>

namespace flashattn {
namespace cpu {
namespace isa_amx {

// The CPU has AMX-BF16 and AVX512-BF16 and the OS granted the tile state to this process.
bool usable();
void tile_begin();
void tile_end();
// C (m x n fp32) = A (m x k bf16, row-major) * B, B pair-interleaved: element (kk, c) of B is
// b[(kk / 2) * ldb + 2 * c + kk % 2]. m, n, k multiples of 32.
void gemm_bf16(int m, int n, int k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c,
               int64_t ldc);
// p[r * ldp + j] = bf16(pt[j * ldpt + r]) for j < n, 0 for n <= j < ldp (ldp a multiple of 32).
void probs_to_bf16(const float* pt, int64_t ldpt, int n, int cols, uint16_t* p, int64_t ldp);
// Pair-interleaves n bf16 rows of d elements (d a multiple of 32) into npad / 2 rows of 2 d; rows past n are 0.
void pack_pairs(const uint16_t* const* rows, int n, int npad, int d, uint16_t* out);
// s *= scale over a rows x cols tile (cols a multiple of 16).
void scale_rows(float* s, int64_t ld, int rows, int cols, float scale);
// o = diag(alpha) o + add, both rows x cols contiguous (cols a multiple of 16).
void rescale_add(float* o, const float* add, const float* alpha, int rows, int cols);

}  // namespace isa_amx
}  // namespace cpu
}  // namespace flashattn
