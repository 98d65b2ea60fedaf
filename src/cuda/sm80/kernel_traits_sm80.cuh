// Compile-time configuration of the sm80-path forward kernel: MMA atom, shared-memory layouts and the
// copy atoms for one (head dim, tile, dtype). Tile shapes come from cuda/common/tile_sm80.h.
#pragma once

#include <type_traits>

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

namespace flashattn {
namespace kern {

using namespace cute;

template <int kHeadDim_, int kBlockM_, int kBlockN_, int kNWarps_, typename Element_>
struct FwdTraitsSm80 {
  using Element = Element_;
  static_assert(std::is_same_v<Element, cutlass::half_t> || std::is_same_v<Element, cutlass::bfloat16_t>);
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kNThreads = kNWarps * 32;
  static_assert(kBlockM % (16 * kNWarps) == 0, "every warp owns whole 16-row MMA tiles");
  static_assert(kHeadDim % 32 == 0 && kBlockN % 16 == 0);

  // mma.sync m16n8k16, fp32 accumulate. Warps are stacked along M (each owns kBlockM / kNWarps rows and
  // all columns), so softmax row reductions stay inside a quad and never touch shared memory. The N
  // tile of 16 lets one ldmatrix.x4 feed two n8 MMAs.
  using MmaAtom = std::conditional_t<std::is_same_v<Element, cutlass::half_t>, SM80_16x8x16_F32F16F16F32_TN,
                                     SM80_16x8x16_F32BF16BF16F32_TN>;
  using TiledMma = TiledMMA<MMA_Atom<MmaAtom>, Layout<Shape<Int<kNWarps>, _1, _1>>, Tile<Int<16 * kNWarps>, _16, _16>>;

  // Shared memory: rows of kBlockKSmem elements (128 B for d % 64 == 0, else 64 B) XOR-swizzled in
  // 16-byte chunks, so ldmatrix (8 rows x 16 B per phase) and the 16-byte cp.async writes are free of
  // bank conflicts.
  static constexpr int kBlockKSmem = kHeadDim % 64 == 0 ? 64 : 32;
  static constexpr int kSwizzleBits = kBlockKSmem == 64 ? 3 : 2;
  using SmemLayoutAtom = decltype(composition(Swizzle<kSwizzleBits, 3, 3>{},
                                              Layout<Shape<_8, Int<kBlockKSmem>>, Stride<Int<kBlockKSmem>, _1>>{}));
  using SmemLayoutQ = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  using SmemLayoutKV = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  // V as the (head_dim, keys) B operand of P V: the same bytes read through ldmatrix.trans.
  using SmemLayoutVt =
      decltype(composition(SmemLayoutKV{}, make_layout(Shape<Int<kHeadDim>, Int<kBlockN>>{}, GenRowMajor{})));
  using SmemLayoutO = SmemLayoutQ;

  using SmemCopyAtom = Copy_Atom<SM75_U32x4_LDSM_N, Element>;
  using SmemCopyAtomTransposed = Copy_Atom<SM75_U16x8_LDSM_T, Element>;

  // Global memory: 16-byte cp.async per thread, threads of a row cover kBlockKSmem contiguous elements.
  static constexpr int kGmemThreadsPerRow = kBlockKSmem / 8;
  static_assert(kNThreads % kGmemThreadsPerRow == 0);
  using GmemLayoutAtom = Layout<Shape<Int<kNThreads / kGmemThreadsPerRow>, Int<kGmemThreadsPerRow>>,
                                Stride<Int<kGmemThreadsPerRow>, _1>>;
  static_assert(kBlockN % (kNThreads / kGmemThreadsPerRow) == 0 && kBlockM % (kNThreads / kGmemThreadsPerRow) == 0);
  using GmemTiledCopyQKV = decltype(make_tiled_copy(Copy_Atom<SM80_CP_ASYNC_CACHEGLOBAL<cute::uint128_t>, Element>{},
                                                    GmemLayoutAtom{}, Layout<Shape<_1, _8>>{}));
  using GmemTiledCopyO =
      decltype(make_tiled_copy(Copy_Atom<UniversalCopy<cute::uint128_t>, Element>{}, GmemLayoutAtom{}, Layout<Shape<_1, _8>>{}));

  static constexpr int kSmemElemsQ = kBlockM * kHeadDim;
  static constexpr int kSmemElemsKV = kBlockN * kHeadDim;
  static constexpr int kSmemBytes = (kSmemElemsQ + 2 * kSmemElemsKV) * int(sizeof(Element));
  // Score rows each thread holds (two per 16-row MMA tile): the softmax state size.
  static constexpr int kRowsPerThread = 2 * kBlockM / (16 * kNWarps);
};

}  // namespace kern
}  // namespace flashattn
