// Where one (batch, head) problem lives in memory. Built on core seq_info() (which clamps every index read
// from device metadata), so varlen, seqused_k, cache rows and leftpad are resolved in one place.
#pragma once

#include <cstdint>

#include "core/params.h"
#include "core/platform.h"

namespace flashattn {
namespace kern {

struct BlockInfo {
  int sq;  // query rows of this sequence
  int sk;  // keys visible to this sequence
  int64_t q_offset, k_offset, v_offset, o_offset;  // elements, to row 0 of this (batch, head)
  int64_t lse_offset;                              // floats, to row 0 of this (batch, head)

  FLASHATTN_DEVICE static BlockInfo make(const FwdParams& p, int b, int h) {
    const SeqInfo s = seq_info(p, b);
    BlockInfo bi;
    bi.sq = static_cast<int>(s.sq);
    bi.sk = static_cast<int>(s.sk);
    const int hk = h / p.head_ratio;
    const bool varlen_q = p.cu_seqlens_q != nullptr;
    // Varlen tensors are (total, h, d): the sequence starts at its global token index.
    bi.q_offset = (varlen_q ? s.q_start * p.q_row_stride : b * p.q_batch_stride) + h * p.q_head_stride;
    bi.o_offset = (varlen_q ? s.q_start * p.o_row_stride : b * p.o_batch_stride) + h * p.o_head_stride;
    const bool varlen_k = p.cu_seqlens_k != nullptr && p.block_table == nullptr;
    const int64_t kb = varlen_k ? 0 : s.k_batch;
    bi.k_offset = kb * p.k_batch_stride + s.k_start * p.k_row_stride + hk * p.k_head_stride;
    bi.v_offset = kb * p.v_batch_stride + s.k_start * p.v_row_stride + hk * p.v_head_stride;
    // LSE: (b, h, sq) fixed length; (h, total_q) varlen, addressed by global token index.
    bi.lse_offset = varlen_q ? h * p.lse_head_stride + s.q_start : b * p.lse_batch_stride + h * p.lse_head_stride;
    return bi;
  }
};

}  // namespace kern
}  // namespace flashattn
