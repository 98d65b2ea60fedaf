// GPU test harness: one attention case run through the C API on device copies of random host tensors
// (outputs poisoned first), then checked against the fp64 reference with the FA tolerance rule.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "flashattn/flashattn.h"
#include "reference.h"
#include "util.h"

#define SKIP_WITHOUT_GPU() \
  if (!gputest::gpu_available()) GTEST_SKIP() << "no CUDA device"

namespace gputest {

bool gpu_available();

// Device copy of a host tensor's whole storage (padding included), freed with the object.
class DeviceCopy {
 public:
  explicit DeviceCopy(const fatest::HostTensor& t);
  ~DeviceCopy();
  DeviceCopy(const DeviceCopy&) = delete;
  DeviceCopy& operator=(const DeviceCopy&) = delete;
  // Descriptor of the device copy on `device` (-1: the current device).
  flashattn_tensor desc(int device = -1) const;
  void upload() const;                           // host tensor -> device again
  void copy_back(fatest::HostTensor& t) const;  // device -> t (same storage size)

 private:
  const fatest::HostTensor* host_;
  void* ptr_ = nullptr;
};

// A fresh random seed per run (printed, so a failure can be replayed).
uint64_t fresh_seed(const char* test);

struct Case {
  flashattn_dtype dtype = FLASHATTN_DTYPE_BF16;
  int batch = 2, nheads = 2, nheads_k = 2, head_dim = 64;
  int64_t sq = 128, sk = 128;
  bool causal = false;
  int window_left = -1, window_right = -1;
  float softcap = 0.f;
  int alibi = 0;  // 0: none, 1: (h), 2: (b, h)
  bool sinks = false;
  bool lse = true;
  fatest::Layout layout = fatest::Layout::kContiguous;
  // Varlen: per-sequence lengths (batch = lens_q.size()); fixed-length when empty.
  std::vector<int> lens_q, lens_k;
  std::string name() const;
};

struct Result {
  flashattn_status status = FLASHATTN_STATUS_OK;
  std::string error;
  fatest::HostTensor q, k, v, out, lse;  // out/lse: what the GPU wrote (padding included)
  fatest::HostTensor out_poisoned;       // out before the run, to check nothing outside was written
  std::vector<double> alibi, sinks;
};

// Draws GQA ratio, mask, window, softcap, ALiBi, sinks, layout (and LSE when draw_lse) and sometimes a
// varlen batch of 3 sequences: the random-combination grid shared by the forward and backward tests.
void randomize_case(Case& c, std::mt19937_64& rng, bool draw_lse);

// Small shapes over every code path (tails, causal, local + softcap + ALiBi + sinks with MQA, varlen with
// empty sequences), fp16/bf16 alternating: cheap enough for compute-sanitizer memcheck and racecheck.
std::vector<Case> small_shape_cases(const std::vector<int>& head_dims);

// The reference problem of a case: dtype, heads and options (lengths and tensors are set by the caller).
ref::Problem reference_problem(const Case& c, const std::vector<double>& alibi, const std::vector<double>& sinks);

// Runs the case on the GPU (seeded inputs); `repeats` > 1 runs it again on the same inputs and reports
// in `bitwise_ok` whether every run produced identical bytes.
Result run_case(const Case& c, uint64_t seed, int repeats = 1, bool* bitwise_ok = nullptr);

// Compares against the reference; returns "" on success, else a description of the failure.
std::string check_case(const Case& c, const Result& r);

// What a batch of cases came to. Cases whose kernel this build left out (NOT_BUILT: reduced builds such as
// the dev preset, or a validation build of a few head dims) are counted, not failed.
struct Outcome {
  std::vector<std::string> fails;
  size_t ran = 0, not_built = 0;
};

// Runs every case on the GPU (one at a time, seed + 7919 * index), then checks them on the host in
// parallel. `run` returns a result with `status`; `check` returns "" or a failure message.
template <class C, class R>
Outcome run_all(const std::vector<C>& cases, uint64_t seed, const std::function<R(const C&, uint64_t)>& run,
                const std::function<std::string(const C&, const R&)>& check);

// Forward cases through run_case / check_case.
Outcome run_and_check(const std::vector<Case>& cases, uint64_t seed);

// For tests that run cases one by one: true (and a note printed) when this build left the kernel out.
bool skipped_not_built(flashattn_status status, const std::string& name);

// gtest expectations on an outcome: no failure (the first 25 listed) and at least one case run.
void report(const Outcome& o);

}  // namespace gputest

// ---- template definitions ----------------------------------------------------------------------------

template <class C, class R>
gputest::Outcome gputest::run_all(const std::vector<C>& cases, uint64_t seed,
                                  const std::function<R(const C&, uint64_t)>& run,
                                  const std::function<std::string(const C&, const R&)>& check) {
  std::vector<R> results(cases.size());
  for (size_t i = 0; i < cases.size(); ++i) results[i] = run(cases[i], seed + 7919 * i);
  std::vector<std::string> msgs(cases.size());
  std::vector<char> skipped(cases.size(), 0);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < static_cast<int64_t>(cases.size()); ++i) {
    if (results[i].status == FLASHATTN_STATUS_NOT_BUILT)
      skipped[i] = 1;
    else
      msgs[i] = check(cases[i], results[i]);
    results[i] = R();  // free the tensors early
  }
  Outcome o;
  for (size_t i = 0; i < cases.size(); ++i) {
    if (skipped[i]) {
      ++o.not_built;
      continue;
    }
    ++o.ran;
    if (!msgs[i].empty()) o.fails.push_back(msgs[i]);
  }
  return o;
}
