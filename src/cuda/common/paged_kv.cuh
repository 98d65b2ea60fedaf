// K/V addressing policies of the forward mainloop.
//   KvDense: K/V rows of a sequence are equally strided from BlockInfo's offsets (the mainloop's own tiled
//            global views; this policy carries nothing and changes no generated code).
//   KvPaged: logical key t lives in page block_table[b][t / page_size], row t % page_size. Each thread
//            resolves the rows it copies: with page_size a multiple of the key tile a whole key block sits
//            in one page (one block_table read per block); otherwise every row is looked up (any page
//            size >= 1). Table entries are clamped to the pool, so a corrupt entry reads a wrong page but
//            never out of bounds (check mode reports it instead). The divisions by page_size go through
//            FastDivmod: as `/` and `%` they took about half of the decode kernel's key-slice loop (11
//            integer divisions, 1110 instructions a slice against the dense kernel's 580), and with one
//            warp per scheduler every one of them sat on the critical path.
//            kTileInPage (compile time): the host guarantees page_size % tile keys == 0, so a tile's rows
//            are consecutive rows of one page and the copy addresses them as the dense path does (one
//            base per tile plus the row offsets), not through a page and a row per copied row.
#pragma once

#include <cstdint>

#include "core/params.h"
#include "cuda/common/fast_divmod.h"
#include "cuda/common/utils.cuh"

namespace flashattn {
namespace kern {

struct KvDense {
  static constexpr bool kPaged = false;
};

// kRows: rows of a key tile one thread copies (the tiled copy's row repeats), each with its own page.
template <typename Element, int kRows, bool kTileInPage = false>
struct KvPaged {
  static constexpr bool kPaged = true;
  const int32_t* table;  // this sequence's block_table row
  const Element* k;      // pool base + this kv head's offset
  const Element* v;
  int64_t k_page_stride, k_row_stride, v_page_stride, v_row_stride;
  FastDivmod page_size;
  int last_page, last_entry;
  bool block_in_page;  // page_size % kBlockN == 0
  // Page and row inside it of each row this thread copies in the key block last prefetched. K(n) and V(n)
  // share them, and the table reads for block n - 1 are issued a half-iteration before K(n - 1) needs
  // them, so the dependent table load never sits in front of a cp.async; load() then spends two
  // multiply-adds a row, like the dense path's one.
  int pages[kRows];
  int rows[kRows];

  FLASHATTN_DEVICE static KvPaged make(const FwdParams& p, int b, int hk, int block_n) {
    KvPaged kv;
    kv.table = p.block_table + b * p.block_table_batch_stride;
    kv.k = static_cast<const Element*>(p.k) + hk * p.k_head_stride;
    kv.v = static_cast<const Element*>(p.v) + hk * p.v_head_stride;
    kv.k_page_stride = p.k_batch_stride;
    kv.k_row_stride = p.k_row_stride;
    kv.v_page_stride = p.v_batch_stride;
    kv.v_row_stride = p.v_row_stride;
    kv.page_size = FastDivmod(p.page_size);
    kv.last_page = p.num_pages - 1;
    kv.last_entry = p.max_pages_per_seq - 1;
    kv.block_in_page = p.page_size % block_n == 0;
    return kv;
  }

  // Logical key t -> its page (the table entry clamped to the pool) and its row in that page.
  FLASHATTN_DEVICE void locate(int t, int& pg, int& row) const {
    const int entry = page_size.div(t);
    pg = min(max(__ldg(table + min(max(entry, 0), last_entry)), 0), last_page);
    row = t - entry * page_size.divisor;
  }

  // Reads the block_table entries of key block n for this thread's rows (coord: the tile's identity
  // partition). With page_size a multiple of the key tile one entry serves the whole block.
  template <int kBlockN, typename TC>
  FLASHATTN_DEVICE void prefetch(int n, TC const& coord) {
    const int t0 = n * kBlockN;
    if constexpr (kTileInPage) {  // pages[0], rows[0]: the tile's page and its first row there
      locate(t0, pages[0], rows[0]);
      return;
    }
    if (block_in_page) {
      int pg, row0;
      locate(t0, pg, row0);
      CUTE_UNROLL
      for (int m = 0; m < kRows; ++m) {
        pages[m] = pg;
        rows[m] = row0 + get<0>(coord(0, m, 0));
      }
      return;
    }
    CUTE_UNROLL
    for (int m = 0; m < kRows; ++m) locate(t0 + get<0>(coord(0, m, 0)), pages[m], rows[m]);
  }

  // Copies key block n (prefetched) of K (kIsV false) or V into its shared tile partition, like
  // copy_tile_g2s: rows at or past rows_left and columns with pred_col false are zero-filled.
  template <bool kIsV, bool kCheckRows, int kBlockN, typename TD, typename TC, typename TP>
  FLASHATTN_DEVICE void load(int, TD&& dst, TC const& coord, TP const& pred_col, int rows_left) const {
    static_assert(decltype(size<1>(dst))::value == kRows);
    const Element* base = kIsV ? v : k;
    const int64_t page_stride = kIsV ? v_page_stride : k_page_stride;
    const int64_t row_stride = kIsV ? v_row_stride : k_row_stride;
    if constexpr (kTileInPage) {
      const Element* tile = base + pages[0] * page_stride + rows[0] * row_stride;
      copy_rows_g2s<kCheckRows>(dst, coord, pred_col, rows_left, [&](int, int r) { return tile + r * row_stride; });
    } else {
      copy_rows_g2s<kCheckRows>(dst, coord, pred_col, rows_left,
                                [&](int m, int) { return base + pages[m] * page_stride + rows[m] * row_stride; });
    }
  }
};

}  // namespace kern
}  // namespace flashattn
