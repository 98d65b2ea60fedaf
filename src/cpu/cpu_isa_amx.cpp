// AMX (Sapphire Rapids and later) block products for the bf16 forward pass.
//
// The forward tile loop stays in cpu_fwd.cpp; for bf16 inputs on AMX machines it swaps its two fp32
// block products for tile-matrix ones: S^T = K Q^T with K rows as the A tiles and Q^T in the pair-
// interleaved ("VNNI") layout AMX wants for B, and O += P V with P rounded to bf16 (as GPU kernels feed
// P to their MMAs) and V pair-interleaved. Only block-level functions live here, so no shared inline
// code is compiled for this ISA.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16,avx2,fma,f16c")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 intrinsic headers, see cpu_isa_avx512.cpp

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

#include "cpu/cpu_amx.h"

namespace flashattn {
namespace cpu {
namespace isa_amx {

namespace {

// Tile registers: 0-3 accumulate a 32 x 32 fp32 block, 4-5 hold A (16 rows x 32 bf16), 6-7 hold B
// (16 pair-rows x 16 columns). Every tile is full size (16 rows x 64 bytes). The configuration is a
// constant in memory: GCC 12 does not see _tile_loadconfig read its operand and drops the stores that
// build a configuration on the stack.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

const TileConfig kTileConfig = {1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

bool request_permission() {
  // Linux hands out the 8 KB AMX register state only on request (ARCH_REQ_XCOMP_PERM, XTILEDATA).
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

}  // namespace

bool usable() {
  static const bool ok = [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16") ||
        !__builtin_cpu_supports("avx512bf16"))
      return false;
    return request_permission();
  }();
  return ok;
}

void tile_begin() { _tile_loadconfig(&kTileConfig); }

void tile_end() { _tile_release(); }

void gemm_bf16(int m, int n, int k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c,
               int64_t ldc) {
  const int64_t sa = lda * 2, sb = ldb * 2, sc = ldc * 4;  // byte strides
  for (int i = 0; i < m; i += 32) {
    for (int j = 0; j < n; j += 32) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int kk = 0; kk < k; kk += 32) {
        _tile_loadd(4, a + i * lda + kk, sa);
        _tile_loadd(5, a + (i + 16) * lda + kk, sa);
        _tile_loadd(6, b + (kk / 2) * ldb + j * 2, sb);
        _tile_loadd(7, b + (kk / 2) * ldb + (j + 16) * 2, sb);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, c + i * ldc + j, sc);
      _tile_stored(1, c + i * ldc + j + 16, sc);
      _tile_stored(2, c + (i + 16) * ldc + j, sc);
      _tile_stored(3, c + (i + 16) * ldc + j + 16, sc);
    }
  }
}

void probs_to_bf16(const float* pt, int64_t ldpt, int n, int cols, uint16_t* p, int64_t ldp) {
  const __m512i step = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(static_cast<int>(ldpt)));
  for (int r = 0; r < cols; ++r) {
    for (int j = 0; j < ldp; j += 32) {
      // Gather 32 probabilities of query row r down the key rows of the transposed tile.
      const __mmask16 m0 = j >= n ? 0 : (n - j >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - j)) - 1));
      const __mmask16 m1 = j + 16 >= n ? 0 : (n - j - 16 >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - j - 16)) - 1));
      const float* base = pt + int64_t(j) * ldpt + r;
      const __m512 lo = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m0, step, base, 4);
      const __m512 hi = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m1, step, base + 16 * ldpt, 4);
      _mm512_storeu_si512(p + r * ldp + j, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
  }
}

void pack_pairs(const uint16_t* const* rows, int n, int npad, int d, uint16_t* out) {
  // out[(kk * d + c) * 2 + t] = rows[2 kk + t][c]; missing rows are zero.
  const __m512i idx_lo = _mm512_setr_epi32(0x00200000, 0x00210001, 0x00220002, 0x00230003, 0x00240004, 0x00250005,
                                           0x00260006, 0x00270007, 0x00280008, 0x00290009, 0x002A000A, 0x002B000B,
                                           0x002C000C, 0x002D000D, 0x002E000E, 0x002F000F);
  const __m512i idx_hi = _mm512_add_epi16(idx_lo, _mm512_set1_epi16(16));
  for (int kk = 0; kk < npad / 2; ++kk) {
    const uint16_t* r0 = 2 * kk < n ? rows[2 * kk] : nullptr;
    const uint16_t* r1 = 2 * kk + 1 < n ? rows[2 * kk + 1] : nullptr;
    uint16_t* o = out + int64_t(kk) * d * 2;
    for (int c = 0; c < d; c += 32) {
      const __m512i a = r0 ? _mm512_loadu_si512(r0 + c) : _mm512_setzero_si512();
      const __m512i b = r1 ? _mm512_loadu_si512(r1 + c) : _mm512_setzero_si512();
      _mm512_storeu_si512(o + c * 2, _mm512_permutex2var_epi16(a, idx_lo, b));
      _mm512_storeu_si512(o + c * 2 + 32, _mm512_permutex2var_epi16(a, idx_hi, b));
    }
  }
}

void scale_rows(float* s, int64_t ld, int rows, int cols, float scale) {
  const __m512 v = _mm512_set1_ps(scale);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; c += 16) _mm512_storeu_ps(s + r * ld + c, _mm512_mul_ps(_mm512_loadu_ps(s + r * ld + c), v));
}

void rescale_add(float* o, const float* add, const float* alpha, int rows, int cols) {
  for (int r = 0; r < rows; ++r) {
    const __m512 a = _mm512_set1_ps(alpha[r]);
    for (int c = 0; c < cols; c += 16) {
      float* x = o + int64_t(r) * cols + c;
      _mm512_storeu_ps(x, _mm512_fmadd_ps(_mm512_loadu_ps(x), a, _mm512_loadu_ps(add + int64_t(r) * cols + c)));
    }
  }
}

}  // namespace isa_amx
}  // namespace cpu
}  // namespace flashattn
