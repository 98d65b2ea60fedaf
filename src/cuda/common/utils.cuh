// Small device helpers shared by every forward/backward kernel: register-fragment layout views of the
// MMA accumulators, quad reductions, dtype conversion of fragments, predicated global->shared tile copies.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/array.h>
#include <cutlass/numeric_conversion.h>
#include <cutlass/numeric_types.h>

#include "core/platform.h"

namespace flashattn {
namespace kern {

using namespace cute;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Division rounding towards -inf (mask bounds can be negative: rows above the diagonal, windows).
FLASHATTN_HOST_DEVICE constexpr int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
FLASHATTN_HOST_DEVICE constexpr int ceil_div_int(int a, int b) { return -floor_div(-a, b); }

struct MaxOp {
  FLASHATTN_DEVICE float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  FLASHATTN_DEVICE float operator()(float a, float b) const { return a + b; }
};

// The four threads of an MMA quad (lanes 4r..4r+3) hold the columns of the same accumulator rows.
template <typename Op>
FLASHATTN_DEVICE float quad_allreduce(float x, Op op) {
  x = op(x, __shfl_xor_sync(0xffffffffu, x, 2));
  x = op(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return x;
}

// m16n8 accumulator fragment ((2,2), MMA_M, MMA_N) viewed as (rows, cols) = ((2, MMA_M), (2, MMA_N)):
// value bit 0 selects the column pair, bit 1 the row half (r, r + 8).
template <typename Layout>
FLASHATTN_DEVICE constexpr auto acc_layout_rowcol(Layout acc) {
  static_assert(decltype(rank(acc))::value == 3);
  auto l = logical_divide(acc, Shape<_2>{});
  return make_layout(make_layout(get<0, 1>(l), get<1>(l)), make_layout(get<0, 0>(l), get<2>(l)));
}

// The same accumulator reused as the A operand of an m16n8k16 MMA: two neighbouring n8 column tiles form
// one k16 slice, so (4, MMA_M, MMA_N) -> ((4, 2), MMA_M, MMA_N / 2). No data moves.
template <typename Layout>
FLASHATTN_DEVICE constexpr auto acc_layout_as_a_operand(Layout acc) {
  static_assert(decltype(size<0>(acc))::value == 4);
  static_assert(decltype(size<2>(acc))::value % 2 == 0);
  auto l = logical_divide(acc, Shape<Underscore, Underscore, _2>{});
  return make_layout(make_layout(get<0>(l), get<2, 0>(l)), get<1>(l), get<2, 1>(l));
}

template <typename Tensor>
FLASHATTN_DEVICE auto rowcol_view(Tensor&& t) {
  return make_tensor(t.data(), acc_layout_rowcol(t.layout()));
}

// Register fragment conversion (fp32 accumulators -> fp16/bf16) with the vectorised converter.
template <typename To, typename Engine, typename Layout>
FLASHATTN_DEVICE auto convert_fragment(Tensor<Engine, Layout> const& src) {
  using From = typename Engine::value_type;
  constexpr int N = decltype(size(src))::value;
  Tensor dst = make_tensor<To>(src.layout());
  cutlass::NumericArrayConverter<To, From, N> conv;
  *reinterpret_cast<cutlass::Array<To, N>*>(dst.data()) =
      conv(*reinterpret_cast<const cutlass::Array<From, N>*>(src.data()));
  return dst;
}

// Which 8-column chunks of a tile partition (CPY, CPY_ROWS, CPY_COLS identity coordinates) lie inside
// head_dim: the others are zero-filled by the copies below.
template <typename TC>
FLASHATTN_DEVICE auto column_predicate(TC const& coord, int head_dim) {
  Tensor pred = make_tensor<bool>(make_shape(size<2>(coord)));
  CUTE_UNROLL
  for (int k = 0; k < size(pred); ++k) pred(k) = get<1>(coord(0, 0, k)) < head_dim;
  return pred;
}

// One 16-byte cp.async from global to shared memory. With `valid` false it reads nothing and writes
// zeros (src-size 0): a predicated chunk is one instruction, with no branch and no separate zeroing
// store (which would also make ptxas order the shared-memory write against the later cp.async).
FLASHATTN_DEVICE void cp_async_16_zfill(const void* src, void* dst, bool valid) {
  SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>::copy(*static_cast<const cute::uint128_t*>(src),
                                                        *static_cast<cute::uint128_t*>(dst), valid);
}

// One 4-byte cp.async (per-row scalars such as LSE), zero-filled when `valid` is false.
FLASHATTN_DEVICE void cp_async_4_zfill(const float* src, float* dst, bool valid) {
  SM80_CP_ASYNC_CACHEALWAYS_ZFILL<uint32_t>::copy(*reinterpret_cast<const uint32_t*>(src),
                                                 *reinterpret_cast<uint32_t*>(dst), valid);
}

// Global -> shared copy of one tile partition (CPY, CPY_ROWS, CPY_COLS) with cp.async, one 16-byte chunk
// per (row, column chunk). Rows at or past `rows_left` and 8-column chunks with pred_col false are
// zero-filled in shared memory instead, so ragged tiles and head dims below the kernel's need no special
// case downstream. kCheckRows = false compiles the row test out for interior tiles.
template <bool kCheckRows, typename TS, typename TD, typename TC, typename TP>
FLASHATTN_DEVICE void copy_tile_g2s(TS const& src, TD&& dst, TC const& coord, TP const& pred_col, int rows_left) {
  CUTE_UNROLL
  for (int m = 0; m < size<1>(src); ++m) {
    const bool row_in = !kCheckRows || get<0>(coord(0, m, 0)) < rows_left;
    CUTE_UNROLL
    for (int k = 0; k < size<2>(src); ++k) cp_async_16_zfill(&src(0, m, k), &dst(0, m, k), row_in && pred_col(k));
  }
}

// The same copy for tiles whose rows do not sit at one stride (paged K/V, PackGQA query rows):
// row_ptr(r) gives row r's column 0 in global memory. Rows past the end are cleared without calling
// row_ptr (its page lookup is only defined inside the sequence).
template <bool kCheckRows, typename TD, typename TC, typename TP, typename RowPtr>
FLASHATTN_DEVICE void copy_rows_g2s(TD&& dst, TC const& coord, TP const& pred_col, int rows_left,
                                    RowPtr const& row_ptr) {
  CUTE_UNROLL
  for (int m = 0; m < size<1>(dst); ++m) {
    const int r = get<0>(coord(0, m, 0));
    if (!kCheckRows || r < rows_left) {
      const auto* src = row_ptr(m, r);
      CUTE_UNROLL
      for (int k = 0; k < size<2>(dst); ++k) cp_async_16_zfill(src + get<1>(coord(0, m, k)), &dst(0, m, k), pred_col(k));
    } else {
      CUTE_UNROLL
      for (int k = 0; k < size<2>(dst); ++k) clear(dst(_, m, k));
    }
  }
}

// Barrier over the threads that share a tile: the CTA, or one warp when a warp owns its tile alone (the
// decode kernel's epilogue).
template <int kThreads>
FLASHATTN_DEVICE void tile_barrier() {
  if constexpr (kThreads == 32) {
    __syncwarp();
  } else {
    __syncthreads();
  }
}

// Row r of a query/output tile -> element (or float) offset. The inference kernel's PackGQA view puts
// the `pack` query heads that share a KV head on consecutive rows of each token:
// offset(r) = (r / pack) * row_stride + (r % pack) * pack_stride. pack = 1 is a plain strided view.
struct RowMap {
  int pack = 1;
  int64_t row_stride = 0, pack_stride = 0;
  FLASHATTN_DEVICE int64_t operator()(int r) const {
    const int t = r / pack;
    return t * row_stride + (r - t * pack) * pack_stride;
  }
};

}  // namespace kern
}  // namespace flashattn
