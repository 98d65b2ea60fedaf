// Shared pieces of the CPU backend: tile sizes, dtype conversion, score options, mask ranges and the
// address of a query or key row (dense, varlen, paged, KV cache).
//
// Everything here is compiled with the baseline instruction set; the vectorised hot loops live in the
// per-ISA kernel units (cpu_kernels.h).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/params.h"

namespace flashattn {
namespace cpu {

// Query rows and keys per tile. Both are multiples of 16 (one AVX-512 vector) and of 8 (one dropout
// Philox group), so tile columns need no tail code and key blocks start on a Philox group boundary.
constexpr int kBlockM = 128;
constexpr int kBlockN = 64;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kInf = std::numeric_limits<float>::infinity();
// Per-thread buffers start on a cache line (and a 64-byte vector boundary).
constexpr size_t kAlign = 64;

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
inline size_t align_bytes(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

inline size_t dtype_size(DType t) { return t == DType::kFP32 ? 4 : 2; }

// ---- Scalar fp16 / bf16 conversion (round to nearest even). Vector versions are in the kernels. ----
inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }
inline uint16_t f32_to_bf16(float f) {
  const uint32_t u = f32_to_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
inline float fp16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t man = h & 0x3FFu;
  if (exp == 0x1F) return bits_to_f32(sign | 0x7F800000u | (man << 13));
  if (exp != 0) return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
  // Subnormal half: man * 2^-24 is exact in fp32.
  const float v = static_cast<float>(man) * 5.9604644775390625e-8f;
  return sign ? -v : v;
}
inline uint16_t f32_to_fp16(float f) {
  const uint32_t u = f32_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u);
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to >= 65520: inf
  if (a >= 0x38800000u) {                                              // normal half
    const uint32_t r = a + 0xFFFu + ((a >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((r - 0x38000000u) >> 13));
  }
  // Subnormal half (or zero): add 0.5 so the fp32 adder rounds the mantissa to nearest even for us.
  const float v = bits_to_f32(a) + 0.5f;
  return static_cast<uint16_t>(sign | (f32_to_bits(v) - 0x3F000000u));
}

inline float load_elem(const void* base, int64_t idx, DType t) {
  switch (t) {
    case DType::kFP32: return static_cast<const float*>(base)[idx];
    case DType::kFP16: return fp16_to_f32(static_cast<const uint16_t*>(base)[idx]);
    default: return bf16_to_f32(static_cast<const uint16_t*>(base)[idx]);
  }
}
inline void store_elem(void* base, int64_t idx, DType t, float v) {
  switch (t) {
    case DType::kFP32: static_cast<float*>(base)[idx] = v; break;
    case DType::kFP16: static_cast<uint16_t*>(base)[idx] = f32_to_fp16(v); break;
    default: static_cast<uint16_t*>(base)[idx] = f32_to_bf16(v); break;
  }
}
// Rounds v to the storage dtype and back (what a value written to memory and read again holds).
inline float round_to(DType t, float v) {
  if (t == DType::kFP16) return fp16_to_f32(f32_to_fp16(v));
  if (t == DType::kBF16) return bf16_to_f32(f32_to_bf16(v));
  return v;
}

// ---- Score options, derived once per call from the params. ----
// Scores are kept in base 2: s2 = log2(e) * s. Without softcap the factor q_scale = scale * log2(e) is
// folded into the packed Q (or K^T) tile; with softcap q_scale = scale / softcap and the tile then holds
// t = tanh(.), s2 = cap2 * t with cap2 = softcap * log2(e).
struct ScoreOpts {
  float q_scale;
  float grad_scale;  // d s / d (q.k) without the softcap factor: scale_softmax
  float cap2;        // 0 when softcap is off
  bool softcap, alibi, sinks, dropout;
  int64_t wl, wr;  // window; -1 = unbounded (causal already folded into wr = 0)
  uint64_t seed, offset;
  uint32_t keep_threshold;
  float rescale;
};

inline ScoreOpts make_score_opts(const FwdParams& p) {
  ScoreOpts o;
  o.softcap = p.softcap > 0.f;
  o.q_scale = o.softcap ? p.scale_softmax / p.softcap : p.scale_softmax * kLog2e;
  o.grad_scale = p.scale_softmax;
  o.cap2 = o.softcap ? p.softcap * kLog2e : 0.f;
  o.alibi = p.alibi_slopes != nullptr;
  o.sinks = p.sinks != nullptr;
  o.wl = p.window_left < 0 ? -1 : p.window_left;
  o.wr = p.is_causal ? 0 : (p.window_right < 0 ? -1 : p.window_right);
  o.dropout = p.dropout_p > 0.f;
  o.seed = p.rng_state ? static_cast<uint64_t>(p.rng_state[0]) : p.seed;
  o.offset = p.rng_state ? static_cast<uint64_t>(p.rng_state[1]) : p.offset;
  o.keep_threshold = p.dropout_keep_threshold;
  o.rescale = p.dropout_rescale;
  return o;
}

inline bool has_window(const ScoreOpts& o) { return o.wl >= 0 || o.wr >= 0; }

// ---- Mask geometry. off = sk - sq aligns causal/window to the bottom-right corner. ----
struct Range {
  int64_t lo, hi;  // [lo, hi)
  bool empty() const { return hi <= lo; }
};

inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Keys visible to at least one of the query rows [i_first, i_last].
inline Range visible_keys(const ScoreOpts& o, int64_t i_first, int64_t i_last, int64_t off, int64_t sk) {
  Range r{0, sk};
  if (o.wl >= 0) r.lo = max64(r.lo, i_first + off - o.wl);
  if (o.wr >= 0) r.hi = min64(r.hi, i_last + off + o.wr + 1);
  return r;
}

// Query rows that see at least one of the keys [j_first, j_last].
inline Range visible_queries(const ScoreOpts& o, int64_t j_first, int64_t j_last, int64_t off, int64_t sq) {
  Range r{0, sq};
  if (o.wr >= 0) r.lo = max64(r.lo, j_first - off - o.wr);
  if (o.wl >= 0) r.hi = min64(r.hi, j_last - off + o.wl + 1);
  return r;
}

// True when every row in [i_first, i_last] sees every key in [j_first, j_last] (no mask needed).
inline bool block_unmasked(const ScoreOpts& o, int64_t i_first, int64_t i_last, int64_t j_first, int64_t j_last,
                           int64_t off, int64_t sk) {
  if (j_last >= sk) return false;
  if (o.wl >= 0 && j_first < i_last + off - o.wl) return false;
  if (o.wr >= 0 && j_last > i_first + off + o.wr) return false;
  return true;
}

// ---- Row addressing. ----
// Offset (elements) of query-side row i of sequence b in a (b, s, h, d) or varlen (t, h, d) tensor.
inline int64_t q_row_offset(const FwdParams& p, const SeqInfo& s, int b, int64_t i, int64_t batch_stride,
                            int64_t row_stride) {
  const int64_t row = p.cu_seqlens_q ? s.q_start + i : i;
  return b * batch_stride + row * row_stride;
}

// LSE element of row i of (b, h): fixed (b, h, sq), varlen (h, total_q) by global token index.
inline int64_t lse_offset(const FwdParams& p, const SeqInfo& s, int b, int h, int64_t i) {
  const int64_t row = p.cu_seqlens_q ? s.q_start + i : i;
  return b * p.lse_batch_stride + h * p.lse_head_stride + row;
}

// Where key j (0-based, after leftpad) of one sequence and kv head lives in k/v: dense rows, varlen rows,
// or paged through the block table. One function for every form so all paths share the tile loop.
struct KeyAddr {
  const int32_t* block_table;  // this sequence's row, or null
  int64_t first;               // logical position of key 0 (leftpad or cu_seqlens_k start)
  int64_t batch_offset;        // dense: k_batch * batch_stride
  int32_t page_size, num_pages, max_pages;

  int64_t row_offset(int64_t j, int64_t batch_stride, int64_t row_stride) const {
    const int64_t t = first + j;
    if (!block_table) return batch_offset + t * row_stride;
    const int64_t slot = clamp_i64(t / page_size, 0, max_pages - 1);
    const int64_t page = clamp_i64(block_table[slot], 0, num_pages - 1);
    return page * batch_stride + (t % page_size) * row_stride;
  }
};

inline KeyAddr key_addr(const FwdParams& p, const SeqInfo& s, int b) {
  KeyAddr a;
  a.block_table = p.block_table ? p.block_table + b * p.block_table_batch_stride : nullptr;
  a.first = s.k_start;
  a.batch_offset = p.block_table ? 0 : s.k_batch * p.k_batch_stride;
  a.page_size = p.page_size > 0 ? p.page_size : 1;
  a.num_pages = p.num_pages > 0 ? p.num_pages : 1;
  a.max_pages = p.max_pages_per_seq > 0 ? p.max_pages_per_seq : 1;
  return a;
}

inline int head_ratio(const FwdParams& p) {
  if (p.head_ratio > 0) return p.head_ratio;
  return p.nheads_k > 0 ? (p.nheads / p.nheads_k > 0 ? p.nheads / p.nheads_k : 1) : 1;
}

// Finds the item's owner in a prefix-sum table: the b with prefix[b] <= item < prefix[b + 1].
inline int find_batch(const int64_t* prefix, int batch, int64_t item) {
  int lo = 0, hi = batch;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (prefix[mid] <= item) lo = mid; else hi = mid;
  }
  return lo;
}

// Threads the run will use (set_num_threads / hardware), resolved once per call.
int resolved_threads();

// Bump allocator over the caller's workspace (never the heap).
class Arena {
 public:
  Arena(void* base, size_t bytes) : base_(static_cast<char*>(base)), bytes_(bytes) {}
  template <typename T>
  T* take(int64_t count) {
    const size_t at = used_;
    used_ = align_bytes(used_ + static_cast<size_t>(count) * sizeof(T));
    return base_ ? reinterpret_cast<T*>(base_ + at) : nullptr;  // null base: sizing only
  }
  size_t used() const { return used_; }
  bool fits() const { return used_ <= bytes_; }

 private:
  char* base_;
  size_t bytes_;
  size_t used_ = 0;
};

}  // namespace cpu
}  // namespace flashattn
