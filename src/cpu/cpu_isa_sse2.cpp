// Baseline x86-64 (SSE2) instance of the CPU hot loops: what runs where neither AVX2 nor AVX-512 is
// available. No FMA and no F16C here, so conversions go through the scalar helpers.
#include <emmintrin.h>

#include <cstdint>

#include "cpu/cpu_kernels.h"

namespace flashattn {
namespace cpu {
namespace isa_sse2 {

constexpr const char* kIsaName = "sse2";
// 16 xmm registers: 4 x 2 accumulators + 2 B vectors + 1 broadcast + temporaries (no FMA).
constexpr int kMR = 4;
constexpr int kNV = 2;

struct Simd {
  using V = __m128;
  static constexpr int kW = 4;
  static V load(const float* p) { return _mm_loadu_ps(p); }
  static void store(float* p, V v) { _mm_storeu_ps(p, v); }
  static V set1(float x) { return _mm_set1_ps(x); }
  static V zero() { return _mm_setzero_ps(); }
  static V fma(V a, V b, V c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
  static V add(V a, V b) { return _mm_add_ps(a, b); }
  static V sub(V a, V b) { return _mm_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm_mul_ps(a, b); }
  static V div(V a, V b) { return _mm_div_ps(a, b); }
  static V max(V a, V b) { return _mm_max_ps(a, b); }
  static V abs(V a) { return _mm_andnot_ps(_mm_set1_ps(-0.f), a); }
  static V copysign(V mag, V sgn) {
    const V s = _mm_set1_ps(-0.f);
    return _mm_or_ps(_mm_andnot_ps(s, mag), _mm_and_ps(s, sgn));
  }
  static V iota() { return _mm_setr_ps(0, 1, 2, 3); }
  static V exp2(V x) {
    const V live = _mm_cmpge_ps(x, _mm_set1_ps(-126.f));
    x = _mm_min_ps(_mm_max_ps(x, _mm_set1_ps(-126.f)), _mm_set1_ps(127.f));
    const __m128i ni = _mm_cvtps_epi32(x);  // round to nearest (default MXCSR)
    const V f = _mm_sub_ps(x, _mm_cvtepi32_ps(ni));
    V p = _mm_set1_ps(1.5252733804059840e-5f);
    p = fma(p, f, _mm_set1_ps(1.5403530393381609e-4f));
    p = fma(p, f, _mm_set1_ps(1.3333558146428443e-3f));
    p = fma(p, f, _mm_set1_ps(9.6181291076284772e-3f));
    p = fma(p, f, _mm_set1_ps(5.5504108664821580e-2f));
    p = fma(p, f, _mm_set1_ps(2.4022650695910071e-1f));
    p = fma(p, f, _mm_set1_ps(6.9314718055994531e-1f));
    p = fma(p, f, _mm_set1_ps(1.f));
    const __m128i e = _mm_slli_epi32(_mm_add_epi32(ni, _mm_set1_epi32(127)), 23);
    return _mm_and_ps(live, _mm_mul_ps(p, _mm_castsi128_ps(e)));
  }
  static V load_bf16(const uint16_t* p) {
    float t[4];
    load_row_scalar(p, DType::kBF16, 4, t);
    return _mm_loadu_ps(t);
  }
  static V load_fp16(const uint16_t* p) {
    float t[4];
    load_row_scalar(p, DType::kFP16, 4, t);
    return _mm_loadu_ps(t);
  }
  static void store_bf16(uint16_t* p, V v) {
    float t[4];
    _mm_storeu_ps(t, v);
    store_row_scalar(t, 1.f, 4, p, DType::kBF16);
  }
  static void store_fp16(uint16_t* p, V v) {
    float t[4];
    _mm_storeu_ps(t, v);
    store_row_scalar(t, 1.f, 4, p, DType::kFP16);
  }
};

#include "cpu/cpu_kernels_impl.h"

}  // namespace isa_sse2
}  // namespace cpu
}  // namespace flashattn
