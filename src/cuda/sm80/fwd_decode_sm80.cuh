// sm80 decode kernel: the inference forward for tiles of at most 16 rows (single-token and short
// speculative queries, a PackGQA group of heads). The 64-row kernel would carry 4 useful rows at q len 1
// with 4 query heads per KV head and do 16x the MMA work; here 4 warps share one 16-row tile and split the
// keys instead. Every key block (kBlockN keys, the 64-row kernel's, so splits, batch-invariant chunks and
// mask block ranges are the same) is cut into 16-key slices; warp w takes slices w, w + 4, ... Each warp
// runs its own online softmax and its own cp.async pipeline over its slices (Q in registers, no CTA
// barrier in the loop), and the four (max, sum, O) states merge once, through shared memory, at the end.
#pragma once

#include <type_traits>

#include "cuda/common/fwd_infer.h"
#include "cuda/common/paged_kv.cuh"
#include "cuda/sm80/fwd_infer_io_sm80.cuh"
#include "cuda/sm80/kernel_traits_sm80.cuh"
#include "cuda/sm80/mainloop_fwd_sm80.cuh"

namespace flashattn {
namespace kern {

// kSliceInPage (paged only): page_size is a multiple of the 16-key slice, so each slice is read from one
// page like a dense one (KvPaged's kTileInPage); else each copied row is looked up.
template <typename T, int kHeadDim, int kBlockN_, typename Mask, typename Score, bool kPaged, bool kSliceInPage>
struct FwdDecodeKernelSm80 {
  static constexpr int kSliceKeys = kDecodeSliceKeys;
  static constexpr int kBlockM = kDecodeRows;
  // One warp's own tile: kBlockM rows x one key slice, the MMA, layouts and copies of a 1-warp forward.
  using Warp = FwdTraitsSm80<kHeadDim, kBlockM, kSliceKeys, 1, T>;
  using Element = T;
  static constexpr int kWarps = kDecodeWarps;
  static constexpr int kNThreads = kWarps * 32;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kSlicesPerWarp = kBlockN / (kSliceKeys * kWarps);
  static_assert(kSlicesPerWarp >= 1 && kBlockN % (kSliceKeys * kWarps) == 0);
  static constexpr int kStages = kDecodeStages;
  // Per warp: its Q tile, then kStages (K slice, V slice) buffers.
  static constexpr int kWarpSmemElems = Warp::kSmemElemsQ + kStages * 2 * Warp::kSmemElemsKV;
  static constexpr int kSmemBytes = kWarps * kWarpSmemElems * int(sizeof(Element));
  static_assert(kSmemBytes == fwd_decode_smem_bytes_sm80(kHeadDim));
  static constexpr int kRows = Warp::kRowsPerThread;
  // The end-of-tile merge stages each warp's (max, sum, O) fragment in its own buffers.
  static_assert((2 * kRows + kBlockM * kHeadDim / 32) * 32 * 4 <= kWarpSmemElems * int(sizeof(Element)));
  using Kv = std::conditional_t<kPaged, KvPaged<Element, kSliceKeys / (32 / Warp::kGmemThreadsPerRow), kSliceInPage>,
                                KvDense>;
  using Softmax = OnlineSoftmax<kRows>;
  using Io = InferRows<Warp>;

  FLASHATTN_DEVICE static void run(const FwdInferParams& ip, Element* smem) {
    const FwdParams& p = ip.p;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const InferWork<kBlockM, kBlockN, Mask, Score> work(ip);
    if (work.empty()) return;

    Element* ws = smem + warp * kWarpSmemElems;
    Io::load_q(ip, work.bi, work.row0, ws, lane);
    cute::cp_async_fence();

    typename Warp::TiledMma mma;
    Tensor acc_o = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
    clear(acc_o);
    Softmax softmax;
    softmax.init();
    Kv kv;
    if constexpr (kPaged) kv = Kv::make(p, work.tile.batch, work.tile.head / p.head_ratio, kSliceKeys);
    warp_mainloop(p, work.bi, work.row0, work.range, work.mask, work.score, softmax, acc_o, ws, warp, lane, kv);

    // Merge the warps' states into warp 0: O = sum_w exp2(m_w - m) O_w, l = sum_w exp2(m_w - m) l_w.
    // Lane-interleaved words (lane fastest): conflict-free shared-memory accesses.
    cute::cp_async_wait<0>();
    __syncwarp();
    Tensor o_rc = rowcol_view(acc_o);
    constexpr int kCols = decltype(size<1>(o_rc))::value;
    auto scratch = [&](int w, int word) {
      return reinterpret_cast<float*>(smem + w * kWarpSmemElems) + word * 32 + lane;
    };
    if (warp != 0) {
      CUTE_UNROLL
      for (int mi = 0; mi < kRows; ++mi) {
        *scratch(warp, mi) = softmax.row_max[mi];
        *scratch(warp, kRows + mi) = softmax.row_sum[mi];
        CUTE_UNROLL
        for (int dj = 0; dj < kCols; ++dj) *scratch(warp, 2 * kRows + mi * kCols + dj) = o_rc(mi, dj);
      }
    }
    __syncthreads();
    if (warp != 0) return;
    const float scale_log2 = work.score.softmax_scale_log2;
    CUTE_UNROLL
    for (int mi = 0; mi < kRows; ++mi) {
      float m = softmax.row_max[mi];
      CUTE_UNROLL
      for (int w = 1; w < kWarps; ++w) m = fmaxf(m, *scratch(w, mi));
      // A row no warp has seen a key of keeps max -inf: every factor is then exp2(-inf) = 0, not NaN.
      const float m_scaled = m == -INFINITY ? 0.f : m * scale_log2;
      const float f0 = exp2f(softmax.row_max[mi] * scale_log2 - m_scaled);
      float sum = softmax.row_sum[mi] * f0;
      CUTE_UNROLL
      for (int dj = 0; dj < kCols; ++dj) o_rc(mi, dj) *= f0;
      CUTE_UNROLL
      for (int w = 1; w < kWarps; ++w) {
        const float f = exp2f(*scratch(w, mi) * scale_log2 - m_scaled);
        sum += *scratch(w, kRows + mi) * f;
        CUTE_UNROLL
        for (int dj = 0; dj < kCols; ++dj) o_rc(mi, dj) += f * *scratch(w, 2 * kRows + mi * kCols + dj);
      }
      softmax.row_max[mi] = m;
      softmax.row_sum[mi] = sum;
    }
    Io::finish(ip, work.tile, work.bi, work.row0, scale_log2, softmax, acc_o, ws, lane);
  }

  // One warp's pass over its key slices of blocks [range.n_min, range.n_max), into acc_o / softmax.
  // Step i visits block n_max - 1 - i / kSlicesPerWarp (the tail block first, like the 64-row mainloop) and
  // in it slice (i % kSlicesPerWarp) * kWarps + warp. Slice i's K and V land in stage i % kStages; the
  // loads run kStages - 1 steps ahead, and a paged slice's table entries one issue further ahead.
  template <typename TensorO>
  FLASHATTN_DEVICE static void warp_mainloop(const FwdParams& p, const BlockInfo& bi, int row0, const BlockRange& range,
                                             const Mask& mask, const Score& score, Softmax& softmax, TensorO& acc_o,
                                             Element* ws, int warp, int lane, Kv kv) {
    const int n_steps = (range.n_max - range.n_min) * kSlicesPerWarp;
    auto block_of = [&](int i) { return range.n_max - 1 - i / kSlicesPerWarp; };
    auto key0_of = [&](int i) {
      return block_of(i) * kBlockN + ((i % kSlicesPerWarp) * kWarps + warp) * kSliceKeys;
    };
    Tensor s_q = make_tensor(make_smem_ptr(ws), typename Warp::SmemLayoutQ{});
    auto stage_k = [&](int s) {
      return make_tensor(make_smem_ptr(ws + Warp::kSmemElemsQ + s * 2 * Warp::kSmemElemsKV),
                         typename Warp::SmemLayoutKV{});
    };
    auto stage_v = [&](int s) {
      return make_tensor(make_smem_ptr(ws + Warp::kSmemElemsQ + (s * 2 + 1) * Warp::kSmemElemsKV),
                         typename Warp::SmemLayoutKV{});
    };

    typename Warp::GmemTiledCopyQKV g2s;
    auto thr_g2s = g2s.get_thread_slice(lane);
    Tensor t_kvc = thr_g2s.partition_S(make_identity_tensor(Shape<Int<kSliceKeys>, Int<kHeadDim>>{}));
    Tensor pred_col = column_predicate(t_kvc, p.head_dim);
    const Element* k_dense = static_cast<const Element*>(p.k) + bi.k_offset;
    const Element* v_dense = static_cast<const Element*>(p.v) + bi.v_offset;

    auto issue = [&](int i) __attribute__((always_inline)) {
      if (i < n_steps) {
        const int t0 = key0_of(i);
        const int rows_left = bi.sk - t0;
        Tensor t_ks = thr_g2s.partition_D(stage_k(i % kStages));
        Tensor t_vs = thr_g2s.partition_D(stage_v(i % kStages));
        // Only a slice reaching past the keys (in the tail block) needs row predicates.
        auto load = [&](auto check_c) __attribute__((always_inline)) {
          constexpr bool kCheck = decltype(check_c)::value;
          if constexpr (kPaged) {
            kv.template load<false, kCheck, kSliceKeys>(t0 / kSliceKeys, t_ks, t_kvc, pred_col, rows_left);
            kv.template load<true, kCheck, kSliceKeys>(t0 / kSliceKeys, t_vs, t_kvc, pred_col, rows_left);
          } else {
            copy_rows_g2s<kCheck>(t_ks, t_kvc, pred_col, rows_left,
                                  [&](int, int r) { return k_dense + (t0 + r) * p.k_row_stride; });
            copy_rows_g2s<kCheck>(t_vs, t_kvc, pred_col, rows_left,
                                  [&](int, int r) { return v_dense + (t0 + r) * p.v_row_stride; });
          }
        };
        if (rows_left < kSliceKeys) {
          load(cute::true_type{});
        } else {
          load(cute::false_type{});
        }
        if constexpr (kPaged) {
          if (i + 1 < n_steps) kv.template prefetch<kSliceKeys>(key0_of(i + 1) / kSliceKeys, t_kvc);
        }
      }
      cute::cp_async_fence();
    };

    if constexpr (kPaged) {
      if (n_steps > 0) kv.template prefetch<kSliceKeys>(key0_of(0) / kSliceKeys, t_kvc);
    }
    CUTE_UNROLL
    for (int s = 0; s + 1 < kStages; ++s) issue(s);
    if (n_steps == 0) return;

    typename Warp::TiledMma mma;
    auto thr_mma = mma.get_thread_slice(lane);
    auto s2r_q = make_tiled_copy_A(typename Warp::SmemCopyAtom{}, mma);
    auto thr_s2r_q = s2r_q.get_thread_slice(lane);
    auto s2r_k = make_tiled_copy_B(typename Warp::SmemCopyAtom{}, mma);
    auto thr_s2r_k = s2r_k.get_thread_slice(lane);
    auto s2r_v = make_tiled_copy_B(typename Warp::SmemCopyAtomTransposed{}, mma);
    auto thr_s2r_v = s2r_v.get_thread_slice(lane);
    // Q stays in registers for the whole pass (the groups before this point include its load).
    Tensor r_q = thr_mma.partition_fragment_A(s_q);
    cute::cp_async_wait<kStages - 1>();
    __syncwarp();
    copy(s2r_q, thr_s2r_q.partition_S(s_q), thr_s2r_q.retile_D(r_q));
    Tensor r_k = thr_mma.partition_fragment_B(stage_k(0));
    Tensor r_vt = thr_mma.partition_fragment_B(make_tensor(stage_v(0).data(), typename Warp::SmemLayoutVt{}));
    Tensor coord_s = rowcol_view(thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kSliceKeys>>{})));
    Tensor o_rc = rowcol_view(acc_o);

    // Masked and unmasked steps are separate instantiations (see the 64-row mainloop).
    auto step = [&](int i, auto masked_c) __attribute__((always_inline)) {
      constexpr bool kMasked = decltype(masked_c)::value;
      issue(i + kStages - 1);  // into the stage step i - 1 read; every lane left it at that step's end
      cute::cp_async_wait<kStages - 1>();
      __syncwarp();  // slice i visible to the whole warp
      const int st = i % kStages;
      Tensor s_k = stage_k(st);
      Tensor s_vt = make_tensor(stage_v(st).data(), typename Warp::SmemLayoutVt{});
      Tensor acc_s = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kSliceKeys>>{});
      clear(acc_s);
      gemm_rs(acc_s, r_q, r_k, thr_s2r_k.partition_S(s_k), mma, s2r_k, thr_s2r_k);
      Tensor s = rowcol_view(acc_s);
      const int col0 = key0_of(i);
      score.apply(s, coord_s, row0, col0, bi.sq, bi.sk);
      if constexpr (kMasked) mask.apply(s, coord_s, row0, col0, bi.sq, bi.sk);
      softmax.update(s, o_rc, score.softmax_scale_log2);
      Tensor r_p = convert_fragment<Element>(acc_s);
      Tensor r_p_a = make_tensor(r_p.data(), acc_layout_as_a_operand(r_p.layout()));
      gemm_rs(acc_o, r_p_a, r_vt, thr_s2r_v.partition_S(s_vt), mma, s2r_v, thr_s2r_v);
      __syncwarp();  // every lane is done with stage st before a later issue refills it
    };

    int i = 0;
    for (; i < n_steps && (block_of(i) >= range.full_hi || block_of(i) == range.n_max - 1); ++i) {
      step(i, cute::true_type{});
    }
    for (; i < n_steps && block_of(i) >= range.full_lo; ++i) step(i, cute::false_type{});
    if constexpr (Mask::kLocal) {
      for (; i < n_steps; ++i) step(i, cute::true_type{});
    }
  }
};

}  // namespace kern
}  // namespace flashattn
