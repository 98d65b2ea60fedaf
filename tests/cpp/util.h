// Test helpers: host tensors in any dtype and stride layout, descriptors for the C ABI, random inputs,
// conversions to the reference's per-sequence form, and the FA tolerance rule.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "flashattn/flashattn.h"
#include "reference.h"

namespace fatest {

ref::DType to_ref(flashattn_dtype t);
flashattn_dtype from_name(const std::string& name);  // "fp16" | "bf16" | "fp32"
size_t dtype_size(flashattn_dtype t);

uint16_t float_to_half_bits(double x);  // round to nearest even
double half_bits_to_double(uint16_t h);
uint16_t float_to_bf16_bits(double x);
double bf16_bits_to_double(uint16_t h);

// How a test lays a tensor out in memory. The last dim is always contiguous (the library requires it).
enum class Layout {
  kContiguous,
  kPadded,    // every non-last dim gets extra room: strides larger than the packed ones
  kPadded8,   // the same with padding in multiples of 8 elements (the GPU's 16-byte stride rule)
  kPermuted,  // 4-D tensors stored with dims 1 and 2 swapped in memory (e.g. BHSD storage of a BSHD tensor)
};
Layout layout_from_name(const std::string& name);

// A host tensor of any dtype with arbitrary element strides. Values are read and written as double
// (written values are rounded to the dtype). Storage is 64-byte aligned and includes padding.
class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(flashattn_dtype dtype, std::vector<int64_t> shape, Layout layout = Layout::kContiguous);
  bool empty() const { return !storage_; }
  flashattn_dtype dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int64_t numel() const;
  void* data() const { return storage_.get(); }
  size_t storage_bytes() const { return bytes_; }

  int64_t offset(const std::vector<int64_t>& idx) const;
  double get(const std::vector<int64_t>& idx) const;
  void set(const std::vector<int64_t>& idx, double v);
  double get_flat(int64_t logical) const;  // row-major logical index
  void set_flat(int64_t logical, double v);
  std::vector<double> to_vector() const;  // logical row-major
  void from_vector(const std::vector<double>& v);

  void poison();                                     // NaN in every byte-slot, padding included
  void fill_normal(std::mt19937_64& rng, double stddev = 1.0);
  void fill_uniform(std::mt19937_64& rng, double lo, double hi);
  flashattn_tensor desc() const;
  // Raw bytes (for bitwise comparisons of repeated runs).
  std::vector<uint8_t> bytes() const;

 private:
  flashattn_dtype dtype_ = FLASHATTN_DTYPE_INVALID;
  std::vector<int64_t> shape_, strides_;
  std::shared_ptr<uint8_t> storage_;
  size_t bytes_ = 0;
};

HostTensor make_int32(const std::vector<int32_t>& values);
HostTensor make_int32_2d(int64_t rows, int64_t cols, const std::vector<int32_t>& values);
HostTensor make_fp32(const std::vector<double>& values, std::vector<int64_t> shape);

// ---- Tolerance ----
// The FA rule (docs/shared design.md "Tests"): for fp16/bf16 inputs,
//   err = max|out - ref| <= k * max|low - ref| + atol   (k = 2, atol = 1e-5 forward; k = 3, atol = 1e-4 grads);
// for fp32 inputs, max|out - ref| / max|ref| <= rel (1e-5 forward, kGradRelFp32 for gradients).
// Positions where ref is +-inf must match exactly (LSE of empty rows); NaN anywhere fails.
struct Tolerance {
  double factor, atol, rel_fp32;
};
inline constexpr Tolerance kFwdTol{2.0, 1e-5, 1e-5};
// fp32 gradients: dS = P * (dP - Delta) subtracts two O(1) sums of length sk in fp32, then dq/dk sum
// sk/sq such terms again; the rounding of that subtraction (~1e-7 relative per term) is amplified by the
// cancellation and the second reduction, so gradients carry ~10x the forward's relative error. 1e-4 is
// still three orders of magnitude tighter than any real bug (a wrong mask or scale is O(1e-1)).
inline constexpr Tolerance kGradTol{3.0, 1e-4, 1e-4};

struct Comparison {
  bool ok = true;
  double err = 0, low_err = 0, ref_max = 0, bound = 0;
  int64_t worst = -1;
  std::string message;
};
Comparison compare(const std::string& what, ref::DType dtype, const std::vector<double>& out,
                   const std::vector<double>& ref_exact, const std::vector<double>& ref_low, const Tolerance& tol);

// Concatenate per-sequence vectors.
std::vector<double> concat(const std::vector<std::vector<double>>& parts);

}  // namespace fatest

// gtest glue: EXPECT_FA_CLOSE(what, dtype, out, ref, low, tol)
#define EXPECT_FA_CLOSE(what, dtype, out, refx, low, tol)                              \
  do {                                                                                 \
    const ::fatest::Comparison _c = ::fatest::compare(what, dtype, out, refx, low, tol); \
    EXPECT_TRUE(_c.ok) << _c.message;                                                  \
  } while (0)
