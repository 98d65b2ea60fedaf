// Compile-time configuration of the sm80-path backward kernel: the three MMA tilings, shared-memory
// layouts (with the transposed views the ^T products read through ldmatrix.trans) and copy atoms for one
// (head dim, tile, dtype). Tile shapes come from cuda/common/tile_bwd_sm80.h.
#pragma once

#include <type_traits>

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

namespace flashattn {
namespace kern {

using namespace cute;

template <int kHeadDim_, int kBlockM_, int kBlockN_, int kNWarps_, int kQStages_, typename Element_>
struct BwdTraitsSm80 {
  using Element = Element_;
  static_assert(std::is_same_v<Element, cutlass::half_t> || std::is_same_v<Element, cutlass::bfloat16_t>);
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kNThreads = kNWarps * 32;
  static constexpr int kQStages = kQStages_;
  static_assert(kNWarps == 8 && (kBlockM == 64 || kBlockM == 128), "the warp grids assume 8 warps, 64 or 128 rows");
  static_assert(kBlockN % 64 == 0 && kHeadDim % 32 == 0 && (kQStages == 1 || kQStages == 2));

  // mma.sync m16n8k16, fp32 accumulate. Two warp grids; each warp's column step is 16 wide so one
  // ldmatrix.x4 feeds two n8 MMAs. The backward needs no row reductions across warps (P comes from the
  // saved LSE), so the grid is chosen for shared-memory traffic: a warp computing an (m x n) piece with
  // reduction length k reads (m + n) * k operand elements, least when the piece is square.
  //   S = Q K^T, dP = dO V^T : (kBlockM x kBlockN), k = d   TiledMmaSdP: 2 x 4 warps, 32 x 32 per warp
  //                                             at 64 x 128 (4 x 2 would be 16 x 64: +25%), 64 x 32 at 128 x 128
  //   dV += P^T dO, dK += dS^T Q : (kBlockN x d), k = kBlockM    TiledMmaDkv
  //   dQ = dS K : (kBlockM x d), k = kBlockN                     TiledMmaDq
  // Dkv and Dq take 2 x 4 where its piece is squarer than 4 x 2's (d256 dK/dV with 64 keys: 32 x 64,
  // not 16 x 128), ties as measured first (dK/dV 4 x 2, dQ 2 x 4). 2 x 4 needs N % 64 == 0: its N tile
  // is 4 warps x 16 columns.
  static constexpr bool grid_2x4(int m, int n, bool on_tie) {
    const int piece_2x4 = m / 2 + n / 4, piece_4x2 = m / 4 + n / 2;
    return n % 64 == 0 && (piece_2x4 < piece_4x2 || (piece_2x4 == piece_4x2 && on_tie));
  }
  using MmaAtom = std::conditional_t<std::is_same_v<Element, cutlass::half_t>, SM80_16x8x16_F32F16F16F32_TN,
                                     SM80_16x8x16_F32BF16BF16F32_TN>;
  using Grid4x2 = TiledMMA<MMA_Atom<MmaAtom>, Layout<Shape<_4, _2, _1>>, Tile<_64, _32, _16>>;
  using Grid2x4 = TiledMMA<MMA_Atom<MmaAtom>, Layout<Shape<_2, _4, _1>>, Tile<_32, _64, _16>>;
  using TiledMmaSdP = Grid2x4;
  using TiledMmaDkv = std::conditional_t<grid_2x4(kBlockN, kHeadDim, false), Grid2x4, Grid4x2>;
  using TiledMmaDq = std::conditional_t<grid_2x4(kBlockM, kHeadDim, true), Grid2x4, Grid4x2>;

  // Shared memory rows XOR-swizzled in 16-byte chunks (as the forward): conflict-free ldmatrix, both
  // plain and transposed, and conflict-free 16-byte cp.async writes.
  static constexpr int kBlockKSmem = kHeadDim % 64 == 0 ? 64 : 32;
  static constexpr int kSwizzleBits = kBlockKSmem == 64 ? 3 : 2;
  using SmemLayoutAtom = decltype(composition(Swizzle<kSwizzleBits, 3, 3>{},
                                              Layout<Shape<_8, Int<kBlockKSmem>>, Stride<Int<kBlockKSmem>, _1>>{}));
  using SmemLayoutQ = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  using SmemLayoutKV = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  // Q and dO as the (d, rows) B operands of dK += dS^T Q and dV += P^T dO; K as the (d, keys) B operand
  // of dQ = dS K. The same bytes, read through ldmatrix.trans.
  using SmemLayoutQt =
      decltype(composition(SmemLayoutQ{}, make_layout(Shape<Int<kHeadDim>, Int<kBlockM>>{}, GenRowMajor{})));
  using SmemLayoutKt =
      decltype(composition(SmemLayoutKV{}, make_layout(Shape<Int<kHeadDim>, Int<kBlockN>>{}, GenRowMajor{})));
  // P and dS (kBlockM x kBlockN, 16-bit): written from the S/dP accumulators, read plain by dQ = dS K and
  // transposed, as (keys, rows) A operands, by the dK/dV products.
  using SmemLayoutAtomPdS =
      decltype(composition(Swizzle<3, 3, 3>{}, Layout<Shape<_8, _64>, Stride<_64, _1>>{}));
  using SmemLayoutPdS = decltype(tile_to_shape(SmemLayoutAtomPdS{}, Shape<Int<kBlockM>, Int<kBlockN>>{}));
  using SmemLayoutPdSt =
      decltype(composition(SmemLayoutPdS{}, make_layout(Shape<Int<kBlockN>, Int<kBlockM>>{}, GenRowMajor{})));

  using SmemCopyAtom = Copy_Atom<SM75_U32x4_LDSM_N, Element>;
  using SmemCopyAtomTransposed = Copy_Atom<SM75_U16x8_LDSM_T, Element>;
  // Accumulator fragments -> shared: 32-bit stores of element pairs.
  using SmemCopyAtomStore = Copy_Atom<AutoVectorizingCopyWithAssumedAlignment<32>, Element>;

  // Global memory: 16-byte cp.async per thread, the threads of a row cover kBlockKSmem elements.
  static constexpr int kGmemThreadsPerRow = kBlockKSmem / 8;
  using GmemLayoutAtom = Layout<Shape<Int<kNThreads / kGmemThreadsPerRow>, Int<kGmemThreadsPerRow>>,
                                Stride<Int<kGmemThreadsPerRow>, _1>>;
  static_assert(kBlockM % (kNThreads / kGmemThreadsPerRow) == 0 && kBlockN % (kNThreads / kGmemThreadsPerRow) == 0);
  using GmemTiledCopy = decltype(make_tiled_copy(Copy_Atom<SM80_CP_ASYNC_CACHEGLOBAL<cute::uint128_t>, Element>{},
                                                 GmemLayoutAtom{}, Layout<Shape<_1, _8>>{}));
  using GmemTiledCopyOut = decltype(make_tiled_copy(Copy_Atom<UniversalCopy<cute::uint128_t>, Element>{},
                                                    GmemLayoutAtom{}, Layout<Shape<_1, _8>>{}));

  // Shared memory map (elements): [Q x stages][dO x stages][K][V][P][dS], then fp32 [LSE, D] rows x
  // stages: the per-row statistics of each Q/dO stage arrive with its cp.async group, so a step reads
  // them from shared memory instead of waiting on global loads.
  static constexpr int kSmemElemsQ = kBlockM * kHeadDim;
  static constexpr int kSmemElemsKV = kBlockN * kHeadDim;
  static constexpr int kSmemElemsPdS = kBlockM * kBlockN;
  static constexpr int kOffQ = 0;
  static constexpr int kOffDo = kQStages * kSmemElemsQ;
  static constexpr int kOffK = 2 * kQStages * kSmemElemsQ;
  static constexpr int kOffV = kOffK + kSmemElemsKV;
  static constexpr int kOffP = kOffV + kSmemElemsKV;
  static constexpr int kOffDs = kOffP + kSmemElemsPdS;
  static constexpr int kOffStats = kOffDs + kSmemElemsPdS;
  static constexpr int kSmemFloatsStats = 2 * kBlockM;  // per stage

  // Where row r's LSE (D at + kBlockM) sits in a stage's stats. With 64 rows a thread's 4 rows are
  // stored as one 16-byte vector: 2 shared loads per step instead of 8 scalar ones, which kept the MIO
  // queue full (ncu: mio_throttle 0.7-0.9 stalls per instruction, FA2's kernel 0.2); +1-2% at d128
  // (H100 A/B). TiledMmaSdP's thread holds rows rep * 32 + wm * 16 + h * 8 + g (warp wm = warp % 2,
  // g = lane / 4), fragment row mi = 2 rep + h; the 16 (wm, g) groups' vectors lie side by side, so a
  // warp's load (its 8 groups) reads 128 contiguous bytes. d64's 128-row step keeps rows in order and scalar loads:
  // with vectors (or any other read schedule tried) ptxas's schedule of that 255-register step came
  // out 1-3% slower.
  static_assert(std::is_same_v<TiledMmaSdP, Grid2x4>, "stats_slot follows the 2 x 4 S/dP warp grid");
  static constexpr int kStatsPerThread = kBlockM / 16;
  static constexpr bool kStatsVectors = kBlockM == 64;
  static constexpr int kStatsGroups = 16;
  static constexpr int stats_group(int wm, int g) { return wm * 8 + g; }
  static constexpr int stats_slot(int r) {
    if (!kStatsVectors) return r;
    const int group = stats_group((r / 16) % 2, r % 8), mi = (r / 32) * 2 + (r / 8) % 2;
    return group * kStatsPerThread + mi;
  }
  static constexpr bool stats_slots_are_a_permutation() {
    bool taken[kBlockM] = {};
    for (int r = 0; r < kBlockM; ++r) {
      const int slot = stats_slot(r);
      if (slot < 0 || slot >= kBlockM || taken[slot]) return false;
      taken[slot] = true;
    }
    return true;
  }
  static_assert(stats_slots_are_a_permutation());
  static constexpr int kSmemBytes = kOffStats * int(sizeof(Element)) + kQStages * kSmemFloatsStats * 4;
};

}  // namespace kern
}  // namespace flashattn
