// Forward on the GPU (sm80 path) against the fp64 reference, through the C API. Fresh random inputs every
// run (the seed is printed), outputs poisoned before the run, the FA tolerance rule.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <random>
#include <sstream>

#include "gpu_harness.h"

namespace {

using gputest::Case;

// (seqlen_q, seqlen_k) pairs from the peers' test grids (shared docs peers.md §4.3).
const std::vector<std::pair<int64_t, int64_t>> kPairs = {
    {1, 239},   {3, 799},    {113, 203},  {128, 217},   {108, 256},   {127, 513},
    {256, 512}, {512, 256},  {1023, 1024}, {1024, 1023}, {1024, 1024}, {2048, 2048}};
const int kHeadDims[] = {32, 64, 96, 128, 160, 192, 224, 256, 40, 200};  // last two: predicated columns

// Big pairs get a smaller batch so the host reference stays fast.
Case base_case(int d, std::pair<int64_t, int64_t> pr, int i) {
  Case c;
  c.head_dim = d;
  c.sq = pr.first;
  c.sk = pr.second;
  c.dtype = i % 2 ? FLASHATTN_DTYPE_FP16 : FLASHATTN_DTYPE_BF16;
  const int64_t work = c.sq * c.sk;
  c.batch = work >= 1000000 ? 1 : 2;
  c.nheads = c.nheads_k = work >= 1000000 ? 2 : 3;
  return c;
}

TEST(GpuFwd, EveryHeadDimPlainAndCausal) {
  SKIP_WITHOUT_GPU();
  std::vector<Case> cases;
  int i = 0;
  for (int d : kHeadDims)
    for (auto pr : kPairs)
      for (bool causal : {false, true}) {
        Case c = base_case(d, pr, i++);
        c.causal = causal;
        cases.push_back(c);
      }
  gputest::report(gputest::run_and_check(cases, gputest::fresh_seed("EveryHeadDimPlainAndCausal")));
}

TEST(GpuFwd, EachOptionAlone) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(1234);
  std::vector<Case> cases;
  int i = 0;
  for (int d : {64, 128, 256})
    for (auto pr : kPairs)
      for (int opt = 0; opt < 9; ++opt) {
        Case c = base_case(d, pr, i++);
        switch (opt) {
          case 0:  // local window, both sides
            c.window_left = static_cast<int>(rng() % (c.sk + 1));
            c.window_right = static_cast<int>(rng() % (c.sk + 1));
            break;
          case 1:  // left window only
            c.window_left = static_cast<int>(rng() % 300);
            break;
          case 2:
            c.alibi = 1 + static_cast<int>(rng() % 2);
            break;
          case 3:
            c.softcap = 30.f;
            break;
          case 4:
            c.sinks = true;
            break;
          case 5:  // GQA
            c.nheads = 6;
            c.nheads_k = 2;
            break;
          case 6:  // MQA
            c.nheads = 4;
            c.nheads_k = 1;
            break;
          case 7:  // strided (BHSD storage), no LSE
            c.layout = fatest::Layout::kPermuted;
            c.lse = false;
            break;
          case 8:  // causal with sinks (rows above the diagonal: LSE = sink)
            c.causal = true;
            c.sinks = true;
            break;
        }
        cases.push_back(c);
      }
  gputest::report(gputest::run_and_check(cases, gputest::fresh_seed("EachOptionAlone")));
}

// Softcap and ALiBi, alone and together, under each mask: the causal TU's softcap and ALiBi kernels, and
// the local general kernel that serves the other combinations (tile_sm80.h, fwd_score_sm80), including a
// left window whose bottom blocks are masked on the left side only.
TEST(GpuFwd, ScoreVariantsUnderEachMask) {
  SKIP_WITHOUT_GPU();
  std::vector<Case> cases;
  int i = 0;
  for (int d : {64, 128, 256})
    for (auto pr : {kPairs[2], kPairs[5], kPairs[8], kPairs[11]})
      for (int score = 0; score < 3; ++score)
        for (int mask = 0; mask < 3; ++mask) {
          Case c = base_case(d, pr, i++);
          if (score != 1) c.softcap = 20.f;
          if (score != 0) c.alibi = 1 + i % 2;
          c.causal = mask == 1;
          if (mask == 2) {  // a sliding window: causal with 200 keys to the left
            c.window_left = 200;
            c.window_right = 0;
          }
          cases.push_back(c);
        }
  gputest::report(gputest::run_and_check(cases, gputest::fresh_seed("ScoreVariantsUnderEachMask")));
}

// Window bounds on key-block boundaries and one row off them: the key blocks a band starts and ends on are
// exactly the ones the mask range (MaskPolicy::range) must classify as edge or interior, on every tile
// (the 2-warp local tile at d96/d128 included). Right bounds, left edges, both in one block, the last
// partial query block, a key offset of 64, score variants, sinks and GQA.
TEST(GpuFwd, WindowEdgesOnBlockBoundaries) {
  SKIP_WITHOUT_GPU();
  const std::pair<int64_t, int64_t> pairs[] = {{256, 512}, {512, 256}, {1000, 1064}, {1024, 1024}, {2048, 2048}};
  const std::pair<int, int> windows[] = {{1024, 0}, {128, 0}, {64, 64},   {192, -1}, {-1, 64},
                                         {0, 0},    {256, 128}, {127, 0}, {64, 63}};
  std::vector<Case> cases;
  int i = 0;
  for (int d : {128, 96, 64, 256})
    for (auto pr : pairs)
      for (auto w : windows) {
        if ((d == 64 || d == 256) && i % 3 != 0) {
          ++i;
          continue;
        }
        Case c = base_case(d, pr, i++);
        c.window_left = w.first;
        c.window_right = w.second;
        switch (i % 5) {
          case 1: c.softcap = 20.f; break;
          case 2: c.alibi = 1; break;
          case 3: c.sinks = true; break;
          case 4:
            c.nheads = 4;
            c.nheads_k = 2;
            break;
          default: break;
        }
        cases.push_back(c);
      }
  gputest::report(gputest::run_and_check(cases, gputest::fresh_seed("WindowEdgesOnBlockBoundaries")));
}

TEST(GpuFwd, Varlen) {
  SKIP_WITHOUT_GPU();
  std::vector<Case> cases;
  const std::vector<std::pair<std::vector<int>, std::vector<int>>> lens = {
      {{1, 17, 128, 300}, {5, 64, 128, 301}},
      {{0, 77, 0, 200}, {10, 0, 50, 333}},      // zero-length q and k sequences
      {{129, 1, 255, 64, 513}, {129, 2000, 255, 17, 100}},
      {{1000}, {1000}},
      {{3, 3, 3}, {0, 0, 0}}};                  // no keys at all: out 0, LSE +inf
  int i = 0;
  for (int d : {64, 128, 96})
    for (const auto& l : lens)
      for (int mode = 0; mode < 4; ++mode) {
        Case c;
        c.dtype = i++ % 2 ? FLASHATTN_DTYPE_FP16 : FLASHATTN_DTYPE_BF16;
        c.head_dim = d;
        c.nheads = 4;
        c.nheads_k = mode == 3 ? 2 : 4;
        c.lens_q = l.first;
        c.lens_k = l.second;
        c.causal = mode == 1;
        if (mode == 2) {
          c.window_left = 40;
          c.window_right = 7;
        }
        if (mode == 3) c.sinks = true;
        cases.push_back(c);
      }
  gputest::report(gputest::run_and_check(cases, gputest::fresh_seed("Varlen")));
}

TEST(GpuFwd, RandomCombinations) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = gputest::fresh_seed("RandomCombinations");
  std::mt19937_64 rng(seed);
  std::vector<Case> cases;
  for (int i = 0; i < 30; ++i) {
    Case c = base_case(kHeadDims[rng() % 10], kPairs[rng() % kPairs.size()], static_cast<int>(rng() % 2));
    gputest::randomize_case(c, rng, /*draw_lse=*/true);
    cases.push_back(c);
  }
  gputest::report(gputest::run_and_check(cases, seed));
}

TEST(GpuFwd, RepeatedRunsAreBitwiseIdentical) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = gputest::fresh_seed("RepeatedRunsAreBitwiseIdentical");
  for (bool causal : {false, true}) {
    Case c;
    c.batch = 3;
    c.nheads = 8;
    c.nheads_k = 2;
    c.head_dim = 128;
    c.sq = 1000;
    c.sk = 1531;
    c.causal = causal;
    bool same = false;
    const gputest::Result r = gputest::run_case(c, seed, 8, &same);
    if (gputest::skipped_not_built(r.status, c.name())) continue;
    ASSERT_EQ(r.status, FLASHATTN_STATUS_OK) << r.error;
    EXPECT_TRUE(same) << c.name() << ": repeated runs differ";
  }
}

TEST(GpuFwd, UnsupportedRequestsFailClearly) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.head_dim = 59;  // not a multiple of 8: rejected (by the validator's stride rule or by the GPU plan)
  gputest::Result r = gputest::run_case(c, 1);
  EXPECT_TRUE(r.status == FLASHATTN_STATUS_NOT_SUPPORTED || r.status == FLASHATTN_STATUS_INVALID_ARGUMENT)
      << r.error;
  EXPECT_TRUE(r.error.find("head_dim") != std::string::npos || r.error.find("stride") != std::string::npos)
      << r.error;
}

}  // namespace

namespace {

// A handful of small shapes covering every code path (tails, masks, score variants, varlen, GQA), cheap
// enough for compute-sanitizer memcheck/racecheck (tools/device_check.sh runs GpuFwdSmall.* under both).
TEST(GpuFwdSmall, SanitizerShapes) {
  SKIP_WITHOUT_GPU();
  std::vector<Case> cases = gputest::small_shape_cases({32, 72, 128, 256});
  // A sliding window whose both edges fall on key-block boundaries (the 2-warp local tile at d128).
  Case c;
  c.head_dim = 128;
  c.batch = 1;
  c.sq = c.sk = 256;
  c.window_left = 128;
  c.window_right = 0;
  cases.push_back(c);
  gputest::report(gputest::run_and_check(cases, gputest::fresh_seed("SanitizerShapes")));
}

}  // namespace
