// Attention test cases: the shared table tests/cases.json (also read by the Python tests) plus grids
// generated here (head dims x sequence-length pairs x options, peers.md §4.3 in reduced form).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fatest {

// One attention problem. Field names match the keys of tests/cases.json (all keys optional).
struct AttnCase {
  std::string name;
  std::string op = "fwd";  // fwd | varlen | kvcache | bwd | varlen_bwd
  std::string dtype = "fp16";
  std::string layout = "contiguous";  // contiguous | padded | permuted (q/k/v/out and grads)
  int batch = 2, nheads = 4, nheads_k = 2, head_dim = 64;
  int64_t seqlen_q = 16, seqlen_k = 16;
  std::vector<int> seqlens_q, seqlens_k;  // varlen: per-sequence lengths (batch = their count)
  std::vector<int> seqused_k;             // optional keys used per sequence
  bool causal = false;
  int window_left = -1, window_right = -1;
  double softcap = 0;
  std::string alibi = "none";  // none | h | bh
  bool sinks = false;
  double dropout_p = 0;
  bool lse = true;
  int page_size = 0;  // > 0: paged K/V (pool of pages in random order)
  int num_splits = 0;
  double scale = 0;
  bool deterministic = false;
  // KV cache
  int seqlen_new = 0;
  int cache_len = 0;                 // capacity per cache row (0: derived from seqlen_k)
  std::vector<int> cache_seqlens;    // tokens already in the cache (random when empty)
  std::vector<int> leftpad;          // cache_leftpad
  bool batch_idx = false;            // cache_batch_idx: a permutation over a larger cache
  int rotary_dim = 0;
  bool rotary_interleaved = false;
  uint64_t seed = 0;                 // input seed (0: derived from the name)
  uint64_t dropout_seed = 1234, dropout_offset = 0;
};

// Cases of tests/cases.json (path from the FLASHATTN_CASES_JSON compile definition).
std::vector<AttnCase> cases_from_json(const std::string& path);
// The generated grids, by op family.
std::vector<AttnCase> generated_fwd_cases();
std::vector<AttnCase> generated_varlen_cases();
std::vector<AttnCase> generated_kvcache_cases();
std::vector<AttnCase> generated_bwd_cases();
// All cases of one family, json + generated: "fwd" (fwd, varlen), "kvcache", "bwd" (bwd, varlen_bwd).
std::vector<AttnCase> all_cases(const std::string& family);

std::string sanitize(const std::string& name);

// Runners (runner.cpp). Each builds inputs, calls the library, and checks against the reference with
// gtest assertions.
void run_case(const AttnCase& c);

}  // namespace fatest
