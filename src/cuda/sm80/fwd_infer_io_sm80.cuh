// What the two sm80 inference kernels (fwd_infer_sm80.cuh: 64-row tiles; fwd_decode_sm80.cuh: 16-row
// decode tiles) share: the grid order, a split's key blocks, the PackGQA row-mapped Q load, and the end of
// a tile (softmax finalisation, then the fp32 split partials or the output and LSE).
//
// Traits: the FwdTraitsSm80 whose TiledMma holds the finished accumulator and whose threads run the
// epilogue (all CTA threads for the 64-row kernel, one warp for the decode kernel).
#pragma once

#include "core/params.h"
#include "cuda/common/block_info.cuh"
#include "cuda/common/epilogue_fwd.cuh"
#include "cuda/common/fwd_infer.h"
#include "cuda/common/mask.cuh"
#include "cuda/common/softmax.cuh"
#include "cuda/common/utils.cuh"

namespace flashattn {
namespace kern {

// Grid: one CTA per (m block, split, batch, head), m block fastest, so the CTAs of one (batch, head)
// (which read the same K/V) are adjacent and a split's neighbours share L2.
struct InferTile {
  int m_block, split, batch, head;
  FLASHATTN_DEVICE static InferTile get(int num_m_blocks, int num_splits, int nheads) {
    const int idx = static_cast<int>(blockIdx.x);
    InferTile t;
    const int rest = idx / num_m_blocks;
    t.m_block = idx - rest * num_m_blocks;
    const int bh = rest / num_splits;
    t.split = rest - bh * num_splits;
    t.batch = bh / nheads;
    t.head = bh - t.batch * nheads;
    return t;
  }
};

// Tile rows of one (batch, head of the view): tokens x packed heads (PackGQA).
template <int kBlockM>
FLASHATTN_HOST_DEVICE int infer_num_m_blocks(const FwdInferParams& ip) {
  return static_cast<int>((static_cast<int64_t>(ip.p.seqlen_q) * ip.pack + kBlockM - 1) / kBlockM);
}

// This split's key blocks: fixed-size chunks (batch-invariant) or an even share of this sequence's own
// blocks. Either way the boundaries depend on this sequence alone.
template <int kBlockN>
FLASHATTN_DEVICE void restrict_to_split(const FwdInferParams& ip, int split, int sk, BlockRange& range) {
  if (!ip.write_partial) return;
  const int n_blocks = ceil_div_int(sk, kBlockN);
  const int per = ip.split_blocks > 0 ? ip.split_blocks : ceil_div_int(n_blocks, ip.num_splits);
  const int lo = split * per;
  range.n_max = min(range.n_max, lo + per);
  range.n_min = min(max(range.n_min, lo), range.n_max);
}

// What one CTA of an inference kernel works on: its tile, the sequence (bi.sq counts tile rows: tokens
// times the PackGQA group; the mask divides by pack again), the tile's first row, the mask and score
// policies, and the key blocks of its split under the mask. empty(): the tile starts past the rows.
template <int kBlockM, int kBlockN, typename Mask, typename Score>
struct InferWork {
  InferTile tile;
  BlockInfo bi;
  int row0;
  Mask mask;
  Score score;
  BlockRange range;

  FLASHATTN_DEVICE explicit InferWork(const FwdInferParams& ip)
      : tile(InferTile::get(infer_num_m_blocks<kBlockM>(ip), ip.num_splits, ip.p.nheads)),
        bi(BlockInfo::make(ip.p, tile.batch, tile.head)),
        row0(tile.m_block * kBlockM),
        mask(ip.p),
        score(ip.p, tile.batch, tile.head) {
    bi.sq *= ip.pack;
    mask.pack = ip.pack;
    range = mask.template range<kBlockM, kBlockN>(tile.m_block, bi.sq, bi.sk);
    restrict_to_split<kBlockN>(ip, tile.split, bi.sk, range);
  }
  FLASHATTN_DEVICE bool empty() const { return row0 >= bi.sq; }
};

template <typename Traits>
struct InferRows {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kHeadDim = Traits::kHeadDim;
  static constexpr int kRows = Traits::kRowsPerThread;

  // The Q tile's cp.async (not committed), rows placed by the PackGQA map; smem gets SmemLayoutQ.
  FLASHATTN_DEVICE static void load_q(const FwdInferParams& ip, const BlockInfo& bi, int row0, Element* smem,
                                      int tidx) {
    const FwdParams& p = ip.p;
    Tensor s_q = make_tensor(make_smem_ptr(smem), typename Traits::SmemLayoutQ{});
    typename Traits::GmemTiledCopyQKV g2s;
    auto thr_g2s = g2s.get_thread_slice(tidx);
    Tensor t_qs = thr_g2s.partition_D(s_q);
    Tensor t_qc = thr_g2s.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    Tensor pred_col = column_predicate(t_qc, p.head_dim);
    const Element* q = static_cast<const Element*>(p.q) + bi.q_offset;
    const RowMap q_map{ip.pack, p.q_row_stride, ip.q_pack_stride};
    copy_rows_g2s<true>(t_qs, t_qc, pred_col, bi.sq - row0, [&](int, int r) { return q + q_map(row0 + r); });
  }

  // Finalises the softmax and writes the tile: fp32 partials when splitting (sinks join once, in the
  // combine; a split that saw no key reports LSE +inf, weight 0 there), else O and LSE in the caller's
  // layout. smem: a SmemLayoutO tile no thread of Traits reads any more once in-flight copies land.
  template <typename Softmax, typename TensorO>
  FLASHATTN_DEVICE static void finish(const FwdInferParams& ip, const InferTile& tile, const BlockInfo& bi, int row0,
                                      float scale_log2, Softmax& softmax, TensorO& acc_o, Element* smem, int tidx) {
    const FwdParams& p = ip.p;
    float lse[kRows];
    Tensor o_rc = rowcol_view(acc_o);
    if (ip.write_partial) {
      softmax.finalize(o_rc, scale_log2, false, 0.f, lse);
      store_partial(ip, tile, acc_o, lse, tidx);
      cute::cp_async_wait<0>();  // nothing may be in flight into shared memory when the CTA exits
      return;
    }
    // Sinks are per query head: a packed view never gets here with sinks (use_pack_gqa).
    const bool has_sink = p.sinks != nullptr;
    const float sink = has_sink ? p.sinks[tile.head] : 0.f;
    softmax.finalize(o_rc, scale_log2, has_sink, sink, lse);
    cute::cp_async_wait<0>();
    tile_barrier<Traits::kNThreads>();
    EpilogueFwd<Traits>::store_rows(p, static_cast<Element*>(p.out) + bi.o_offset,
                                    RowMap{ip.pack, p.o_row_stride, ip.o_pack_stride},
                                    p.lse != nullptr ? p.lse + bi.lse_offset : nullptr,
                                    RowMap{ip.pack, 1, ip.lse_pack_stride}, row0, bi.sq - row0, acc_o, lse, smem, tidx);
  }

  // fp32 partials straight from the accumulator fragment: each thread holds pairs of adjacent columns, so
  // the stores are 8 bytes; the partials are small (rows * head_dim per split) next to the K/V read.
  template <typename TensorO>
  FLASHATTN_DEVICE static void store_partial(const FwdInferParams& ip, const InferTile& tile, TensorO const& acc_o,
                                             const float (&lse)[kRows], int tidx) {
    const FwdParams& p = ip.p;
    const SeqInfo s = seq_info(p, tile.batch);
    const bool varlen_q = p.cu_seqlens_q != nullptr;
    const int row0 = tile.m_block * kBlockM;
    const int rows_left = static_cast<int>(s.sq) * ip.pack - row0;
    const int64_t first_token = varlen_q ? s.q_start : 0;
    const int64_t b_off = varlen_q ? 0 : tile.batch;
    float* o_base = p.out_accum + tile.split * ip.oa_split_stride + b_off * ip.oa_batch_stride +
                    first_token * ip.oa_row_stride + tile.head * ip.oa_head_stride;
    float* l_base = p.lse_accum + tile.split * ip.la_split_stride + b_off * ip.la_batch_stride +
                    first_token * ip.la_row_stride + tile.head * ip.la_head_stride;
    const RowMap o_map{ip.pack, ip.oa_row_stride, ip.oa_pack_stride};
    const RowMap l_map{ip.pack, ip.la_row_stride, ip.la_pack_stride};
    typename Traits::TiledMma tiled_mma;
    auto thr_mma = tiled_mma.get_thread_slice(tidx);
    Tensor coord = rowcol_view(thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{})));
    Tensor o_rc = rowcol_view(acc_o);
    static_assert(decltype(size<0>(coord))::value == kRows);
    CUTE_UNROLL
    for (int mi = 0; mi < kRows; ++mi) {
      const int r = get<0>(coord(mi, 0));
      if (r >= rows_left) continue;
      float* o_row = o_base + o_map(row0 + r);
      CUTE_UNROLL
      for (int nj = 0; nj < size<1>(o_rc); nj += 2) {
        const int c = get<1>(coord(mi, nj));
        // head_dim is a multiple of 8 and c is even: the pair is in bounds whenever c is.
        if (c < p.head_dim) *reinterpret_cast<float2*>(o_row + c) = make_float2(o_rc(mi, nj), o_rc(mi, nj + 1));
      }
      if (get<1>(coord(0, 0)) == 0) l_base[l_map(row0 + r)] = lse[mi];
    }
  }
};

}  // namespace kern
}  // namespace flashattn
