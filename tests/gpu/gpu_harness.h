// GPU test harness: one attention case run through the C API on device copies of random host tensors
// (outputs poisoned first), then checked against the fp64 reference with the FA tolerance rule.
#pragma once

#include <cstdint>
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

// The reference problem of a case: dtype, heads and options (lengths and tensors are set by the caller).
ref::Problem reference_problem(const Case& c, const std::vector<double>& alibi, const std::vector<double>& sinks);

// Runs the case on the GPU (seeded inputs); `repeats` > 1 runs it again on the same inputs and reports
// in `bitwise_ok` whether every run produced identical bytes.
Result run_case(const Case& c, uint64_t seed, int repeats = 1, bool* bitwise_ok = nullptr);

// Compares against the reference; returns "" on success, else a description of the failure.
std::string check_case(const Case& c, const Result& r);

// Runs every case (GPU one at a time, references in parallel on the host) and returns the failures.
std::vector<std::string> run_and_check(const std::vector<Case>& cases, uint64_t seed);

}  // namespace gputest
