#include "util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace fatest {

ref::DType to_ref(flashattn_dtype t) {
  switch (t) {
    case FLASHATTN_DTYPE_FP32: return ref::DType::kFP32;
    case FLASHATTN_DTYPE_BF16: return ref::DType::kBF16;
    default: return ref::DType::kFP16;
  }
}

flashattn_dtype from_name(const std::string& name) {
  if (name == "fp32") return FLASHATTN_DTYPE_FP32;
  if (name == "bf16") return FLASHATTN_DTYPE_BF16;
  if (name == "fp16") return FLASHATTN_DTYPE_FP16;
  throw std::invalid_argument("unknown dtype " + name);
}

size_t dtype_size(flashattn_dtype t) {
  switch (t) {
    case FLASHATTN_DTYPE_FP16:
    case FLASHATTN_DTYPE_BF16: return 2;
    case FLASHATTN_DTYPE_INT64: return 8;
    default: return 4;
  }
}

uint16_t float_to_half_bits(double x) {
  const double r = ref::round_to(ref::DType::kFP16, x);  // exact fp16 value (or inf)
  const uint16_t sign = std::signbit(r) ? 0x8000 : 0;
  const double a = std::fabs(r);
  if (std::isnan(r)) return 0x7E00;
  if (std::isinf(a)) return sign | 0x7C00;
  if (a == 0) return sign;
  if (a < std::ldexp(1.0, -14)) return sign | static_cast<uint16_t>(a / std::ldexp(1.0, -24));  // subnormal
  int e;
  const double m = std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1)
  const int biased = e - 1 + 15;
  const uint16_t mant = static_cast<uint16_t>((m * 2 - 1) * 1024);
  return sign | static_cast<uint16_t>(biased << 10) | mant;
}

double half_bits_to_double(uint16_t h) {
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  const int e = (h >> 10) & 0x1F;
  const int m = h & 0x3FF;
  if (e == 0x1F) return m ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(m, -24);
  return sign * std::ldexp(1024 + m, e - 25);
}

uint16_t float_to_bf16_bits(double x) {
  if (std::isnan(x)) return 0x7FC0;
  const float f = static_cast<float>(ref::round_to(ref::DType::kBF16, x));  // exact in fp32
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>(u >> 16);
}

double bf16_bits_to_double(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

Layout layout_from_name(const std::string& name) {
  if (name == "padded") return Layout::kPadded;
  if (name == "padded8") return Layout::kPadded8;
  if (name == "permuted") return Layout::kPermuted;
  return Layout::kContiguous;
}

HostTensor::HostTensor(flashattn_dtype dtype, std::vector<int64_t> shape, Layout layout)
    : dtype_(dtype), shape_(std::move(shape)) {
  const int n = static_cast<int>(shape_.size());
  strides_.assign(n, 1);
  std::vector<int> order(n);  // memory order, outermost first
  for (int i = 0; i < n; ++i) order[i] = i;
  if (layout == Layout::kPermuted && n >= 3) std::swap(order[n - 3], order[n - 2]);
  int64_t run = 1;
  for (int k = n - 1; k >= 0; --k) {
    const int dim = order[k];
    strides_[dim] = run;
    run = run * std::max<int64_t>(shape_[dim], 1);
    // Odd padding makes every non-last stride irregular: the library must use the strides, not the shape.
    if ((layout == Layout::kPadded || layout == Layout::kPadded8) && k < n - 1) {
      strides_[dim] += (layout == Layout::kPadded ? 3 : 8) * (n - k);
      run = strides_[dim] * std::max<int64_t>(shape_[dim], 1);
    }
  }
  int64_t max_off = 0;
  for (int i = 0; i < n; ++i) max_off += (std::max<int64_t>(shape_[i], 1) - 1) * strides_[i];
  bytes_ = std::max<size_t>(64, (max_off + 1) * dtype_size(dtype_));
  bytes_ = (bytes_ + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes_);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, bytes_);
  storage_.reset(static_cast<uint8_t*>(p), [](uint8_t* q) { std::free(q); });
}

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape_) n *= s;
  return n;
}

int64_t HostTensor::offset(const std::vector<int64_t>& idx) const {
  int64_t off = 0;
  for (size_t i = 0; i < idx.size(); ++i) off += idx[i] * strides_[i];
  return off;
}

static double load(const uint8_t* base, flashattn_dtype t, int64_t off) {
  switch (t) {
    case FLASHATTN_DTYPE_FP32: {
      float f;
      std::memcpy(&f, base + off * 4, 4);
      return f;
    }
    case FLASHATTN_DTYPE_FP16: {
      uint16_t h;
      std::memcpy(&h, base + off * 2, 2);
      return half_bits_to_double(h);
    }
    case FLASHATTN_DTYPE_BF16: {
      uint16_t h;
      std::memcpy(&h, base + off * 2, 2);
      return bf16_bits_to_double(h);
    }
    case FLASHATTN_DTYPE_INT32: {
      int32_t i;
      std::memcpy(&i, base + off * 4, 4);
      return i;
    }
    case FLASHATTN_DTYPE_INT64: {
      int64_t i;
      std::memcpy(&i, base + off * 8, 8);
      return static_cast<double>(i);
    }
    default: return NAN;
  }
}

static void store(uint8_t* base, flashattn_dtype t, int64_t off, double v) {
  switch (t) {
    case FLASHATTN_DTYPE_FP32: {
      const float f = static_cast<float>(v);
      std::memcpy(base + off * 4, &f, 4);
      break;
    }
    case FLASHATTN_DTYPE_FP16: {
      const uint16_t h = float_to_half_bits(v);
      std::memcpy(base + off * 2, &h, 2);
      break;
    }
    case FLASHATTN_DTYPE_BF16: {
      const uint16_t h = float_to_bf16_bits(v);
      std::memcpy(base + off * 2, &h, 2);
      break;
    }
    case FLASHATTN_DTYPE_INT32: {
      const int32_t i = static_cast<int32_t>(v);
      std::memcpy(base + off * 4, &i, 4);
      break;
    }
    case FLASHATTN_DTYPE_INT64: {
      const int64_t i = static_cast<int64_t>(v);
      std::memcpy(base + off * 8, &i, 8);
      break;
    }
    default: break;
  }
}

double HostTensor::get(const std::vector<int64_t>& idx) const { return load(storage_.get(), dtype_, offset(idx)); }
void HostTensor::set(const std::vector<int64_t>& idx, double v) { store(storage_.get(), dtype_, offset(idx), v); }

double HostTensor::get_flat(int64_t logical) const {
  int64_t off = 0;
  for (int i = static_cast<int>(shape_.size()) - 1; i >= 0; --i) {
    off += (logical % shape_[i]) * strides_[i];
    logical /= shape_[i];
  }
  return load(storage_.get(), dtype_, off);
}

void HostTensor::set_flat(int64_t logical, double v) {
  int64_t off = 0;
  for (int i = static_cast<int>(shape_.size()) - 1; i >= 0; --i) {
    off += (logical % shape_[i]) * strides_[i];
    logical /= shape_[i];
  }
  store(storage_.get(), dtype_, off, v);
}

std::vector<double> HostTensor::to_vector() const {
  std::vector<double> v(numel());
  for (int64_t i = 0; i < numel(); ++i) v[i] = get_flat(i);
  return v;
}

void HostTensor::from_vector(const std::vector<double>& v) {
  for (int64_t i = 0; i < numel(); ++i) set_flat(i, v[i]);
}

void HostTensor::poison() {
  uint8_t* p = storage_.get();
  const size_t es = dtype_size(dtype_);
  for (size_t off = 0; off + es <= bytes_; off += es) {
    switch (dtype_) {
      case FLASHATTN_DTYPE_FP32: {
        const uint32_t nan = 0x7FC00000u;
        std::memcpy(p + off, &nan, 4);
        break;
      }
      case FLASHATTN_DTYPE_FP16: {
        const uint16_t nan = 0x7E00;
        std::memcpy(p + off, &nan, 2);
        break;
      }
      case FLASHATTN_DTYPE_BF16: {
        const uint16_t nan = 0x7FC0;
        std::memcpy(p + off, &nan, 2);
        break;
      }
      default: std::memset(p + off, 0x7F, es);
    }
  }
}

void HostTensor::fill_normal(std::mt19937_64& rng, double stddev) {
  std::normal_distribution<double> nd(0.0, stddev);
  for (int64_t i = 0; i < numel(); ++i) set_flat(i, nd(rng));
}

void HostTensor::fill_uniform(std::mt19937_64& rng, double lo, double hi) {
  std::uniform_real_distribution<double> ud(lo, hi);
  for (int64_t i = 0; i < numel(); ++i) set_flat(i, ud(rng));
}

flashattn_tensor HostTensor::desc() const {
  flashattn_tensor t;
  std::memset(&t, 0, sizeof(t));
  t.data = storage_.get();
  t.dtype = dtype_;
  t.device_type = FLASHATTN_DEVICE_CPU;
  t.device_id = 0;
  t.ndim = static_cast<int32_t>(shape_.size());
  for (size_t i = 0; i < shape_.size(); ++i) {
    t.shape[i] = shape_[i];
    t.strides[i] = strides_[i];
  }
  return t;
}

std::vector<uint8_t> HostTensor::bytes() const {
  return std::vector<uint8_t>(storage_.get(), storage_.get() + bytes_);
}

HostTensor make_int32(const std::vector<int32_t>& values) {
  HostTensor t(FLASHATTN_DTYPE_INT32, {static_cast<int64_t>(values.size())});
  for (size_t i = 0; i < values.size(); ++i) t.set_flat(i, values[i]);
  return t;
}

HostTensor make_int32_2d(int64_t rows, int64_t cols, const std::vector<int32_t>& values) {
  HostTensor t(FLASHATTN_DTYPE_INT32, {rows, cols});
  for (int64_t i = 0; i < rows * cols; ++i) t.set_flat(i, values[i]);
  return t;
}

HostTensor make_fp32(const std::vector<double>& values, std::vector<int64_t> shape) {
  HostTensor t(FLASHATTN_DTYPE_FP32, std::move(shape));
  t.from_vector(values);
  return t;
}

std::vector<double> concat(const std::vector<std::vector<double>>& parts) {
  std::vector<double> all;
  for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

Comparison compare(const std::string& what, ref::DType dtype, const std::vector<double>& out,
                   const std::vector<double>& ref_exact, const std::vector<double>& ref_low, const Tolerance& tol) {
  Comparison c;
  std::ostringstream msg;
  if (out.size() != ref_exact.size() || (dtype != ref::DType::kFP32 && ref_low.size() != ref_exact.size())) {
    c.ok = false;
    c.message = what + ": size mismatch";
    return c;
  }
  int64_t bad_inf = -1, nan_at = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (std::isnan(out[i])) {
      if (nan_at < 0) nan_at = i;
      continue;
    }
    if (std::isinf(ref_exact[i]) || std::isinf(out[i])) {
      if (out[i] != ref_exact[i] && bad_inf < 0) bad_inf = i;
      continue;
    }
    const double e = std::fabs(out[i] - ref_exact[i]);
    if (e > c.err) {
      c.err = e;
      c.worst = i;
    }
    c.ref_max = std::max(c.ref_max, std::fabs(ref_exact[i]));
    if (dtype != ref::DType::kFP32 && !std::isinf(ref_low[i]))
      c.low_err = std::max(c.low_err, std::fabs(ref_low[i] - ref_exact[i]));
  }
  if (dtype == ref::DType::kFP32) {
    c.bound = tol.rel_fp32 * std::max(c.ref_max, 1e-30);
  } else {
    c.bound = tol.factor * c.low_err + tol.atol;
  }
  c.ok = c.err <= c.bound && nan_at < 0 && bad_inf < 0;
  msg << what << " [" << ref::dtype_name(dtype) << "]: max|out-ref| = " << c.err << " bound = " << c.bound
      << " (lowprec err " << c.low_err << ", max|ref| " << c.ref_max << ")";
  if (c.worst >= 0) msg << " worst at flat " << c.worst << ": out " << out[c.worst] << " ref " << ref_exact[c.worst];
  if (nan_at >= 0) msg << "; NaN at flat " << nan_at;
  if (bad_inf >= 0) msg << "; inf mismatch at flat " << bad_inf << ": out " << out[bad_inf] << " ref " << ref_exact[bad_inf];
  c.message = msg.str();
  return c;
}

}  // namespace fatest
