// K/V addressing policies of the forward mainloop.
//   KvDense: K/V rows of a sequence are equally strided from BlockInfo's offsets (the mainloop's own tiled
//            global views; this policy carries nothing and changes no generated code).
//   KvPaged: logical key t lives in page block_table[b][t / page_size], row t % page_size. Each thread
//            resolves the rows it copies: with page_size a multiple of the key tile a whole key block sits
//            in one page (one block_table read per block); otherwise every row is looked up (any page
//            size >= 1). Table entries are clamped to the pool, so a corrupt entry reads a wrong page but
//            never out of bounds (check mode reports it instead).
#pragma once

#include <cstdint>

#include "core/params.h"
#include "cuda/common/utils.cuh"

namespace flashattn {
namespace kern {

struct KvDense {
  static constexpr bool kPaged = false;
};

template <typename Element>
struct KvPaged {
  static constexpr bool kPaged = true;
  const int32_t* table;  // this sequence's block_table row
  const Element* k;      // pool base + this kv head's offset
  const Element* v;
  int64_t k_page_stride, k_row_stride, v_page_stride, v_row_stride;
  int page_size, last_page, last_entry;
  bool block_in_page;  // page_size % kBlockN == 0

  FLASHATTN_DEVICE static KvPaged make(const FwdParams& p, int b, int h, int block_n) {
    KvPaged kv;
    const int hk = h / p.head_ratio;
    kv.table = p.block_table + b * p.block_table_batch_stride;
    kv.k = static_cast<const Element*>(p.k) + hk * p.k_head_stride;
    kv.v = static_cast<const Element*>(p.v) + hk * p.v_head_stride;
    kv.k_page_stride = p.k_batch_stride;
    kv.k_row_stride = p.k_row_stride;
    kv.v_page_stride = p.v_batch_stride;
    kv.v_row_stride = p.v_row_stride;
    kv.page_size = p.page_size;
    kv.last_page = p.num_pages - 1;
    kv.last_entry = p.max_pages_per_seq - 1;
    kv.block_in_page = p.page_size % block_n == 0;
    return kv;
  }

  FLASHATTN_DEVICE int page(int entry) const {
    const int e = min(max(entry, 0), last_entry);
    return min(max(__ldg(table + e), 0), last_page);
  }

  // Copies key block n (rows [n * kBlockN, ...)) of K (kIsV false) or V into its shared tile partition,
  // like copy_tile_g2s: rows at or past rows_left and columns with pred_col false are zero-filled.
  template <bool kIsV, bool kCheckRows, int kBlockN, typename TD, typename TC, typename TP>
  FLASHATTN_DEVICE void load(int n, TD&& dst, TC const& coord, TP const& pred_col, int rows_left) const {
    const Element* base = kIsV ? v : k;
    const int64_t page_stride = kIsV ? v_page_stride : k_page_stride;
    const int64_t row_stride = kIsV ? v_row_stride : k_row_stride;
    const int t0 = n * kBlockN;
    int page0 = 0, row0 = 0;
    if (block_in_page) {
      const int e = t0 / page_size;
      page0 = page(e);
      row0 = t0 - e * page_size;
    }
    CUTE_UNROLL
    for (int m = 0; m < size<1>(dst); ++m) {
      const int r = get<0>(coord(0, m, 0));
      if (!kCheckRows || r < rows_left) {
        int pg, row;
        if (block_in_page) {
          pg = page0;
          row = row0 + r;
        } else {
          const int t = t0 + r;
          const int e = t / page_size;
          pg = page(e);
          row = t - e * page_size;
        }
        const Element* src = base + pg * page_stride + row * row_stride;
        CUTE_UNROLL
        for (int kc = 0; kc < size<2>(dst); ++kc) {
          if (pred_col(kc)) {
            const int col = get<1>(coord(0, m, kc));
            SM80_CP_ASYNC_CACHEGLOBAL<cute::uint128_t>::copy(*reinterpret_cast<const cute::uint128_t*>(src + col),
                                                             *reinterpret_cast<cute::uint128_t*>(&dst(0, m, kc)));
          } else {
            clear(dst(_, m, kc));
          }
        }
      } else {
        CUTE_UNROLL
        for (int kc = 0; kc < size<2>(dst); ++kc) clear(dst(_, m, kc));
      }
    }
  }
};

}  // namespace kern
}  // namespace flashattn
