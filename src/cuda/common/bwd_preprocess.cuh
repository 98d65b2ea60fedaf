// Backward preprocess and postprocess kernels shared by the register-accumulator (sm75/sm80) paths.
//   preprocess:  D_i = rowsum(dO_i * O_i) in fp32 (the softmax Jacobian's row term), and per-CTA partial
//                sums of dsinks = -sum_i exp(sink_h - LSE_i) * D_i (docs/semantics.md "Backward").
//   convert_dq:  dQ = scale * sum over slices of dq_accum (fixed slice order, fragment-ordered blocks),
//                cast to the input dtype.
//   reduce_dsinks: dsinks[h] = sum of the partials in a fixed order.
// Every reduction runs in a fixed order, so these kernels are deterministic whatever the main kernel does.
// Rows outside every sequence (varlen padding of q) are never read or written.
#pragma once

#include <cmath>

#include <cutlass/array.h>
#include <cutlass/numeric_conversion.h>
#include <cutlass/numeric_types.h>

#include "core/params.h"
#include "cuda/common/block_info.cuh"
#include "cuda/common/tile_bwd_sm80.h"
#include "cuda/common/utils.cuh"

namespace flashattn {
namespace kern {

constexpr int kBwdPrepThreads = 256;
constexpr int kBwdPrepLanesPerRow = kBwdPrepThreads / kBwdPrepRows;  // 8 threads x 8 columns per step
static_assert(kBwdPrepLanesPerRow == 8, "the row reductions below shuffle over 8 lanes");

// 1-D grid over (row block, batch, head), row blocks fastest.
struct BwdRowTile {
  int m_block, batch, head;
  FLASHATTN_DEVICE static BwdRowTile get(int num_m_blocks, int nheads) {
    const int idx = static_cast<int>(blockIdx.x);
    const int bh = idx / num_m_blocks;
    BwdRowTile t;
    t.m_block = idx - bh * num_m_blocks;
    t.batch = bh / nheads;
    t.head = bh - t.batch * nheads;
    return t;
  }
};

template <typename Element>
FLASHATTN_DEVICE void load8_as_float(const Element* src, float (&dst)[8]) {
  const cutlass::Array<Element, 8> v = *reinterpret_cast<const cutlass::Array<Element, 8>*>(src);
  CUTE_UNROLL
  for (int i = 0; i < 8; ++i) dst[i] = static_cast<float>(v[i]);
}

template <typename Element>
__global__ void __launch_bounds__(kBwdPrepThreads) bwd_preprocess_kernel(const __grid_constant__ BwdParams p,
                                                                         float* dpsum, float* sink_partial,
                                                                         int num_m_blocks) {
  __shared__ float row_terms[kBwdPrepRows];
  const BwdRowTile tile = BwdRowTile::get(num_m_blocks, p.nheads);
  const SeqInfo s = seq_info(p, tile.batch);
  const BlockInfo bi = BlockInfo::make(p, tile.batch, tile.head);
  const int lane = threadIdx.x % kBwdPrepLanesPerRow;
  const int r = threadIdx.x / kBwdPrepLanesPerRow;
  const int row = tile.m_block * kBwdPrepRows + r;
  const bool valid = row < bi.sq;
  const bool varlen_q = p.cu_seqlens_q != nullptr;
  float acc = 0.f;
  if (valid) {
    const int64_t do_off = (varlen_q ? s.q_start * p.do_row_stride : tile.batch * p.do_batch_stride) +
                           tile.head * p.do_head_stride + row * p.do_row_stride;
    const Element* o_row = static_cast<const Element*>(p.out) + bi.o_offset + row * p.o_row_stride;
    const Element* do_row = static_cast<const Element*>(p.dout) + do_off;
    for (int c = lane * 8; c < p.head_dim; c += 8 * kBwdPrepLanesPerRow) {
      float o[8], d[8];
      load8_as_float(o_row + c, o);
      load8_as_float(do_row + c, d);
      CUTE_UNROLL
      for (int i = 0; i < 8; ++i) acc = fmaf(o[i], d[i], acc);
    }
  }
  acc += __shfl_xor_sync(0xffffffffu, acc, 4);
  acc += __shfl_xor_sync(0xffffffffu, acc, 2);
  acc += __shfl_xor_sync(0xffffffffu, acc, 1);
  if (lane == 0 && valid) dpsum[static_cast<int64_t>(tile.head) * p.total_q + s.q_start + row] = acc;

  if (p.sinks == nullptr || sink_partial == nullptr) return;
  // dsinks: P_sink(i) = exp(sink - LSE_i); LSE = +inf never occurs with a sink (it is >= the sink).
  if (lane == 0) {
    float term = 0.f;
    if (valid) term = -expf(p.sinks[tile.head] - p.lse[bi.lse_offset + row]) * acc;
    row_terms[r] = term;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float sum = 0.f;
    for (int i = 0; i < kBwdPrepRows; ++i) sum += row_terms[i];
    sink_partial[(static_cast<int64_t>(tile.head) * p.batch + tile.batch) * num_m_blocks + tile.m_block] = sum;
  }
}

// dQ = scale * sum_s dq_accum[s] of one kBlockM-row block, slices summed in order 0, 1, ... (bitwise
// reproducible). The accumulator block is in the main kernel's fragment order (element i of thread t at
// i * kThreads + t, add_dq in mainloop_bwd_sm80.cuh): this kernel reads it with the same thread -> element
// map (loads of 128 contiguous bytes per warp), places each value at its (row, col) of TiledMmaDq's
// partition in a shared tile, and stores 16-byte row chunks. Rows outside the sequence are never written.
template <typename Element, typename TiledMmaDq, int kBlockM, int kHeadDim>
__global__ void __launch_bounds__(kBwdPrepThreads) bwd_convert_dq_kernel(const __grid_constant__ BwdParams p,
                                                                         const float* dq_accum, int slices,
                                                                         int64_t dq_rows, int dq_pad_rows,
                                                                         int num_m_blocks) {
  static_assert(decltype(size(TiledMmaDq{}))::value == kBwdPrepThreads, "one convert thread per MMA thread");
  // Rows 16 bytes longer than the tile: consecutive rows start in different banks. Raw 16-bit storage
  // (a __shared__ array of Element would need its constructor run).
  static_assert(sizeof(Element) == 2);
  __shared__ alignas(16) uint16_t tile[kBlockM][kHeadDim + 8];
  const BwdRowTile t = BwdRowTile::get(num_m_blocks, p.nheads);
  const SeqInfo s = seq_info(p, t.batch);
  const int row0 = t.m_block * kBlockM;
  if (row0 >= s.sq) return;
  const int tidx = static_cast<int>(threadIdx.x);
  TiledMmaDq mma;
  Tensor coord = mma.get_thread_slice(tidx).partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  const int64_t slice_stride = static_cast<int64_t>(p.nheads) * dq_rows * kHeadDim;
  const int64_t block_row = bwd_dq_seq_row0_sm80(0, p.nheads, t.head, dq_rows, s.q_start, t.batch, dq_pad_rows) + row0;
  const float* src = dq_accum + block_row * kHeadDim + tidx;
  // Slices outer, elements inner: every load of a slice is independent of the others, so a thread has
  // all of its loads in flight at once. (Element-outer order waited for each load in turn: 211 us at d256
  // for 134 MB, where FA2's convert takes 78 us; the whole backward ran 132 us faster after the change.)
  // Each element still sums 0, slice 0, slice 1, ... in that order.
  constexpr int kElems = decltype(size(coord))::value;
  float v[kElems];
  CUTE_UNROLL
  for (int i = 0; i < kElems; ++i) v[i] = 0.f;
  for (int sl = 0; sl < slices; ++sl) {
    CUTE_UNROLL
    for (int i = 0; i < kElems; ++i) v[i] += src[sl * slice_stride + i * kBwdPrepThreads];
  }
  CUTE_UNROLL
  for (int i = 0; i < kElems; ++i) {
    *reinterpret_cast<Element*>(&tile[get<0>(coord(i))][get<1>(coord(i))]) = static_cast<Element>(v[i] * p.scale_softmax);
  }
  __syncthreads();
  const bool varlen_q = p.cu_seqlens_q != nullptr;
  Element* dq = static_cast<Element*>(p.dq) + (varlen_q ? s.q_start * p.dq_row_stride : t.batch * p.dq_batch_stride) +
                t.head * p.dq_head_stride;
  constexpr int kChunksPerRow = kHeadDim / 8;
  for (int idx = tidx; idx < kBlockM * kChunksPerRow; idx += kBwdPrepThreads) {
    const int r = idx / kChunksPerRow, c = (idx - r * kChunksPerRow) * 8;
    if (row0 + r < s.sq && c < p.head_dim) {
      *reinterpret_cast<uint4*>(dq + (row0 + r) * p.dq_row_stride + c) = *reinterpret_cast<const uint4*>(&tile[r][c]);
    }
  }
}

// dsinks[h] = sum of the preprocess partials of head h: per-thread strided sums, then a fixed tree.
// A template (like every kernel in these headers) so each generated TU may instantiate it: a plain
// __global__ function here would be defined once per TU and break the link.
template <int kThreads>
__global__ void __launch_bounds__(kThreads) bwd_reduce_dsinks_kernel(float* dsinks, const float* partial,
                                                                     int64_t per_head) {
  static_assert(kThreads == kBwdPrepThreads);
  __shared__ float sums[kThreads];
  const float* src = partial + static_cast<int64_t>(blockIdx.x) * per_head;
  float acc = 0.f;
  for (int64_t i = threadIdx.x; i < per_head; i += kBwdPrepThreads) acc += src[i];
  sums[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kBwdPrepThreads / 2; w > 0; w /= 2) {
    if (static_cast<int>(threadIdx.x) < w) sums[threadIdx.x] += sums[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) dsinks[blockIdx.x] = sums[0];
}

}  // namespace kern
}  // namespace flashattn
