// Body of the CPU hot loops, written once against a SIMD trait and compiled per instruction set.
//
// Included by cpu_isa_*.cpp inside their own namespace (so each ISA gets its own symbols and no inline
// function is shared between units built with different -m flags), after they define:
//   struct Simd { using V; kW; load, store, set1, zero, fma, add, sub, mul, div, max, abs, copysign, iota,
//                 exp2, load_bf16/fp16, store_bf16/fp16 };
//   constexpr int kMR, kNV;   // register tile of the GEMM micro-kernel: kMR rows x kNV vectors
// and after <cstdint> and cpu_kernels.h are included. Do not include headers from here.

using V = Simd::V;
constexpr int kW = Simd::kW;

// Register-blocked C tile (MR x NV*kW), held in registers over the whole k loop. Each k step loads NV
// vectors of B and broadcasts MR scalars of A straight from memory, which is why A may have any strides.
template <int MR, int NV>
void micro_kernel(int k, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t ldb, float* c,
                  int64_t ldc, const float* row_scale, int mode) {
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = Simd::zero();
  for (int kk = 0; kk < k; ++kk, a += a_cs, b += ldb) {
    V bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = Simd::load(b + v * kW);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const V av = Simd::set1(a[r * a_rs]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = Simd::fma(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    float* cr = c + r * ldc;
    if (mode == kGemmStore) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) Simd::store(cr + v * kW, acc[r][v]);
    } else if (mode == kGemmAccumulate) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) Simd::store(cr + v * kW, Simd::add(Simd::load(cr + v * kW), acc[r][v]));
    } else {
      const V sc = Simd::set1(row_scale[r]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) Simd::store(cr + v * kW, Simd::fma(Simd::load(cr + v * kW), sc, acc[r][v]));
    }
  }
}

// Picks the instantiation for a tail tile (fewer rows or vectors than the full register tile).
template <int MR, int NV>
void micro_dispatch(int mr, int nv, int k, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                    int64_t ldb, float* c, int64_t ldc, const float* row_scale, int mode) {
  if constexpr (NV > 1) {
    if (nv < NV) return micro_dispatch<MR, NV - 1>(mr, nv, k, a, a_rs, a_cs, b, ldb, c, ldc, row_scale, mode);
  }
  if constexpr (MR > 1) {
    if (mr < MR) return micro_dispatch<MR - 1, NV>(mr, nv, k, a, a_rs, a_cs, b, ldb, c, ldc, row_scale, mode);
  }
  micro_kernel<MR, NV>(k, a, a_rs, a_cs, b, ldb, c, ldc, row_scale, mode);
}

// Column panels outside, row strips inside: the B panel (k x kNV*kW) stays in L1 while A streams.
void gemm(int m, int n, int k, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t ldb,
          float* c, int64_t ldc, const float* row_scale, int mode) {
  for (int j0 = 0; j0 < n; j0 += kNV * kW) {
    const int nv = (n - j0) / kW < kNV ? (n - j0) / kW : kNV;
    for (int i0 = 0; i0 < m; i0 += kMR) {
      const int mr = m - i0 < kMR ? m - i0 : kMR;
      micro_dispatch<kMR, kNV>(mr, nv, k, a + i0 * a_rs, a_rs, a_cs, b + j0, ldb, c + i0 * ldc + j0, ldc,
                               row_scale ? row_scale + i0 : nullptr, mode);
    }
  }
}

void load_row(const void* src, DType t, int n, int npad, float* dst) {
  int j = 0;
  if (t == DType::kFP32) {
    const float* s = static_cast<const float*>(src);
    for (; j + kW <= n; j += kW) Simd::store(dst + j, Simd::load(s + j));
  } else if (t == DType::kBF16) {
    const uint16_t* s = static_cast<const uint16_t*>(src);
    for (; j + kW <= n; j += kW) Simd::store(dst + j, Simd::load_bf16(s + j));
  } else {
    const uint16_t* s = static_cast<const uint16_t*>(src);
    for (; j + kW <= n; j += kW) Simd::store(dst + j, Simd::load_fp16(s + j));
  }
  if (j < n) load_row_scalar(static_cast<const char*>(src) + j * (t == DType::kFP32 ? 4 : 2), t, n - j, dst + j);
  for (int i = n; i < npad; ++i) dst[i] = 0.f;
}

void store_row(const float* src, float mul, int n, void* dst, DType t) {
  const V vm = Simd::set1(mul);
  int j = 0;
  if (t == DType::kFP32) {
    float* d = static_cast<float*>(dst);
    for (; j + kW <= n; j += kW) Simd::store(d + j, Simd::mul(Simd::load(src + j), vm));
  } else if (t == DType::kBF16) {
    uint16_t* d = static_cast<uint16_t*>(dst);
    for (; j + kW <= n; j += kW) Simd::store_bf16(d + j, Simd::mul(Simd::load(src + j), vm));
  } else {
    uint16_t* d = static_cast<uint16_t*>(dst);
    for (; j + kW <= n; j += kW) Simd::store_fp16(d + j, Simd::mul(Simd::load(src + j), vm));
  }
  if (j < n) store_row_scalar(src + j, mul, n - j, static_cast<char*>(dst) + j * (t == DType::kFP32 ? 4 : 2), t);
}

// tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|): no overflow, absolute error ~1 ulp of 1.
inline V tanh_v(V x) {
  const V e = Simd::exp2(Simd::mul(Simd::abs(x), Simd::set1(-2.0f * 1.4426950408889634f)));
  const V one = Simd::set1(1.f);
  return Simd::copysign(Simd::div(Simd::sub(one, e), Simd::add(one, e)), x);
}

void softcap(float* s, int64_t ld, int rows, int cols, float cap2, float* t_out) {
  const V vc = Simd::set1(cap2);
  for (int r = 0; r < rows; ++r) {
    float* sr = s + r * ld;
    for (int c = 0; c < cols; c += kW) {
      const V t = tanh_v(Simd::load(sr + c));
      if (t_out) Simd::store(t_out + r * ld + c, t);
      Simd::store(sr + c, Simd::mul(vc, t));
    }
  }
}

void alibi(float* s, int64_t ld, int rows, int cols, float base, float row_step, float col_step, float slope2) {
  const V step = Simd::mul(Simd::iota(), Simd::set1(col_step));
  const V vs = Simd::set1(slope2);
  for (int r = 0; r < rows; ++r) {
    float* sr = s + r * ld;
    for (int c = 0; c < cols; c += kW) {
      const V dist = Simd::abs(Simd::add(Simd::set1(base + row_step * r + col_step * c), step));
      Simd::store(sr + c, Simd::sub(Simd::load(sr + c), Simd::mul(vs, dist)));
    }
  }
}

void softmax_cols(float* s, int64_t ld, int rows, int cols, float* m, float* l, float* alpha) {
  // A column with no finite score keeps m = -inf; subtracting -FLT_MAX instead keeps every exp2 argument
  // at -inf (result 0) rather than NaN.
  const V lowest = Simd::set1(-3.4028234663852886e38f);
  for (int c = 0; c < cols; c += kW) {
    V mx = Simd::load(m + c);
    for (int r = 0; r < rows; ++r) mx = Simd::max(mx, Simd::load(s + r * ld + c));
    const V muse = Simd::max(mx, lowest);
    const V al = Simd::exp2(Simd::sub(Simd::load(m + c), muse));
    V sum0 = Simd::zero(), sum1 = Simd::zero();
    int r = 0;
    for (; r + 1 < rows; r += 2) {
      const V p0 = Simd::exp2(Simd::sub(Simd::load(s + r * ld + c), muse));
      const V p1 = Simd::exp2(Simd::sub(Simd::load(s + (r + 1) * ld + c), muse));
      Simd::store(s + r * ld + c, p0);
      Simd::store(s + (r + 1) * ld + c, p1);
      sum0 = Simd::add(sum0, p0);
      sum1 = Simd::add(sum1, p1);
    }
    if (r < rows) {
      const V p0 = Simd::exp2(Simd::sub(Simd::load(s + r * ld + c), muse));
      Simd::store(s + r * ld + c, p0);
      sum0 = Simd::add(sum0, p0);
    }
    Simd::store(l + c, Simd::fma(Simd::load(l + c), al, Simd::add(sum0, sum1)));
    Simd::store(alpha + c, al);
    Simd::store(m + c, mx);
  }
}

void exp2_sub(const float* s, int64_t ld, int rows, int cols, const float* sub, int per_col, float* p) {
  for (int r = 0; r < rows; ++r) {
    const V row_sub = Simd::set1(per_col ? 0.f : sub[r]);
    for (int c = 0; c < cols; c += kW) {
      const V sb = per_col ? Simd::load(sub + c) : row_sub;
      Simd::store(p + r * ld + c, Simd::exp2(Simd::sub(Simd::load(s + r * ld + c), sb)));
    }
  }
}

void grad_scores(const float* p, const float* dp, const float* t, int64_t ld, int rows, int cols,
                 const float* dvec, int per_col, float scale, float* ds) {
  const V vs = Simd::set1(scale);
  const V one = Simd::set1(1.f);
  for (int r = 0; r < rows; ++r) {
    const V row_d = Simd::set1(per_col ? 0.f : dvec[r]);
    for (int c = 0; c < cols; c += kW) {
      const int64_t o = r * ld + c;
      const V dv = per_col ? Simd::load(dvec + c) : row_d;
      V g = Simd::mul(Simd::mul(Simd::load(p + o), Simd::sub(Simd::load(dp + o), dv)), vs);
      if (t) {
        const V tv = Simd::load(t + o);
        g = Simd::mul(g, Simd::sub(one, Simd::mul(tv, tv)));
      }
      Simd::store(ds + o, g);
    }
  }
}

const Kernels kTable = {kIsaName, gemm, load_row, store_row, softcap, alibi, softmax_cols, exp2_sub, grad_scores};
