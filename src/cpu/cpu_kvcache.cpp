// KV-cache append and rotary embedding for the CPU forward pass.
#include "cpu/cpu_kvcache.h"

#include <cstring>

#include "cpu/cpu_kernels.h"

namespace flashattn {
namespace cpu {

void rotate_row(const FwdParams& p, float* x, int64_t pos) {
  const int half = p.rotary_dim / 2;
  const int64_t row = clamp_i64(pos, 0, p.seqlen_ro > 0 ? p.seqlen_ro - 1 : 0) * half;
  for (int r = 0; r < half; ++r) {
    const float c = load_elem(p.rotary_cos, row + r, p.dtype);
    const float s = load_elem(p.rotary_sin, row + r, p.dtype);
    const int i0 = p.rotary_interleaved ? 2 * r : r;
    const int i1 = p.rotary_interleaved ? 2 * r + 1 : r + half;
    const float x0 = x[i0], x1 = x[i1];
    x[i0] = x0 * c - x1 * s;
    x[i1] = x0 * s + x1 * c;
  }
}

void append_token(const FwdParams& p, int b, int64_t t, float* row) {
  const int64_t pos = static_cast<int64_t>(p.cache_seqlens[b]) + t;
  if (pos < 0 || pos >= p.seqlen_k) return;
  const SeqInfo s = seq_info(p, b);
  KeyAddr addr = key_addr(p, s, b);
  addr.first = 0;  // absolute cache position, leftpad included
  const size_t es = dtype_size(p.dtype);
  const Kernels& kn = kernels();
  const bool rotary = p.rotary_dim > 0 && p.rotary_cos && p.rotary_sin;
  for (int hk = 0; hk < p.nheads_k; ++hk) {
    const char* kn_src = static_cast<const char*>(p.k_new) +
                         (b * p.knew_batch_stride + t * p.knew_row_stride + hk * p.knew_head_stride) * es;
    const char* vn_src = static_cast<const char*>(p.v_new) +
                         (b * p.vnew_batch_stride + t * p.vnew_row_stride + hk * p.vnew_head_stride) * es;
    // The cache is the caller's tensor, updated in place by design (FwdParams carries it as const).
    char* k_dst = const_cast<char*>(static_cast<const char*>(p.k)) +
                  (addr.row_offset(pos, p.k_batch_stride, p.k_row_stride) + hk * p.k_head_stride) * es;
    char* v_dst = const_cast<char*>(static_cast<const char*>(p.v)) +
                  (addr.row_offset(pos, p.v_batch_stride, p.v_row_stride) + hk * p.v_head_stride) * es;
    if (rotary) {
      kn.load_row(kn_src, p.dtype, p.head_dim, p.head_dim, row);
      rotate_row(p, row, pos);
      kn.store_row(row, 1.f, p.head_dim, k_dst, p.dtype);
    } else {
      std::memmove(k_dst, kn_src, p.head_dim * es);
    }
    std::memmove(v_dst, vn_src, p.head_dim * es);
  }
}

}  // namespace cpu
}  // namespace flashattn
