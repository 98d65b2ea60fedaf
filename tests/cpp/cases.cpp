#include "cases.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <sstream>
#include <type_traits>
#include <stdexcept>

#include "json.h"

namespace fatest {

std::string sanitize(const std::string& name) {
  std::string s;
  for (char ch : name) s.push_back(std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_');
  return s;
}

namespace {

std::vector<int> int_list(const Json& j) {
  std::vector<int> v;
  for (const Json& e : j.arr) v.push_back(static_cast<int>(e.num));
  return v;
}

AttnCase case_from_json(const Json& j) {
  AttnCase c;
  auto num = [&](const char* k, auto* dst) {
    if (j.has(k)) *dst = static_cast<std::remove_pointer_t<decltype(dst)>>(j.at(k).num);
  };
  auto flag = [&](const char* k, bool* dst) {
    if (j.has(k)) *dst = j.at(k).kind == Json::Kind::kBool ? j.at(k).b : j.at(k).num != 0;
  };
  auto str = [&](const char* k, std::string* dst) {
    if (j.has(k)) *dst = j.at(k).str;
  };
  auto list = [&](const char* k, std::vector<int>* dst) {
    if (j.has(k)) *dst = int_list(j.at(k));
  };
  str("name", &c.name);
  str("op", &c.op);
  str("dtype", &c.dtype);
  str("layout", &c.layout);
  str("alibi", &c.alibi);
  num("batch", &c.batch);
  num("nheads", &c.nheads);
  num("nheads_k", &c.nheads_k);
  num("head_dim", &c.head_dim);
  num("seqlen_q", &c.seqlen_q);
  num("seqlen_k", &c.seqlen_k);
  list("seqlens_q", &c.seqlens_q);
  list("seqlens_k", &c.seqlens_k);
  list("seqused_k", &c.seqused_k);
  flag("causal", &c.causal);
  if (j.has("window")) {
    const auto w = int_list(j.at("window"));
    c.window_left = w.at(0);
    c.window_right = w.at(1);
  }
  num("softcap", &c.softcap);
  flag("sinks", &c.sinks);
  num("dropout_p", &c.dropout_p);
  flag("lse", &c.lse);
  num("page_size", &c.page_size);
  num("num_splits", &c.num_splits);
  num("scale", &c.scale);
  flag("deterministic", &c.deterministic);
  num("seqlen_new", &c.seqlen_new);
  num("cache_len", &c.cache_len);
  list("cache_seqlens", &c.cache_seqlens);
  list("leftpad", &c.leftpad);
  flag("batch_idx", &c.batch_idx);
  num("rotary_dim", &c.rotary_dim);
  flag("rotary_interleaved", &c.rotary_interleaved);
  num("seed", &c.seed);
  num("dropout_seed", &c.dropout_seed);
  num("dropout_offset", &c.dropout_offset);
  if (c.name.empty()) throw std::runtime_error("cases.json: a case without a name");
  c.name = "json_" + c.name;
  return c;
}

// Applies "+"-joined option tokens to a case (windows scale with the key length so they always cut).
void apply(AttnCase& c, const std::string& opts) {
  std::stringstream ss(opts);
  std::string t;
  const int sk = static_cast<int>(c.seqlen_k);
  while (std::getline(ss, t, '+')) {
    if (t == "none" || t.empty()) continue;
    if (t == "causal") c.causal = true;
    else if (t == "local") { c.window_left = sk / 3 + 1; c.window_right = sk / 7; }
    else if (t == "localL") c.window_left = sk / 4;
    else if (t == "localR") c.window_right = sk / 5;
    else if (t == "local0") { c.window_left = 0; c.window_right = 0; }  // diagonal only
    else if (t == "alibi") c.alibi = "h";
    else if (t == "alibibh") c.alibi = "bh";
    else if (t == "softcap") c.softcap = 1.5;
    else if (t == "softcap50") c.softcap = 50;
    else if (t == "sinks") c.sinks = true;
    else if (t == "dropout") c.dropout_p = 0.17;
    else if (t == "nolse") c.lse = false;
    else if (t == "scale") c.scale = 0.3;
    else if (t == "det") c.deterministic = true;
    else throw std::runtime_error("unknown option token " + t);
  }
}

struct Heads {
  int h, hk;
  const char* name;
};
const Heads kHeads[] = {{4, 4, "mha"}, {4, 2, "gqa"}, {4, 1, "mqa"}};
const int kHeadDims[] = {32, 40, 59, 64, 96, 111, 128, 160, 192, 224, 256};

std::string pair_name(int64_t a, int64_t b) { return std::to_string(a) + "x" + std::to_string(b); }

AttnCase make(const std::string& op, const std::string& dtype, int d, int64_t sq, int64_t sk, const Heads& hh,
              const std::string& opts, int batch = 2) {
  AttnCase c;
  c.op = op;
  c.dtype = dtype;
  c.head_dim = d;
  c.seqlen_q = sq;
  c.seqlen_k = sk;
  c.nheads = hh.h;
  c.nheads_k = hh.hk;
  c.batch = batch;
  // Large problems use one sequence and two heads: the fp64 reference is O(sq * sk * d) per head.
  if (sq * sk > 20000) {
    c.batch = 1;
    c.nheads = 2;
    c.nheads_k = hh.hk == hh.h ? 2 : 1;  // keep a head ratio > 1 for GQA/MQA
  }
  apply(c, opts);
  c.name = op + "_" + dtype + "_d" + std::to_string(d) + "_" + pair_name(sq, sk) + "_" + hh.name + "_" + opts;
  return c;
}

}  // namespace

std::vector<AttnCase> cases_from_json(const std::string& path) {
  const Json root = Json::parse(read_file(path));
  std::vector<AttnCase> v;
  for (const Json& j : root.arr) v.push_back(case_from_json(j));
  return v;
}

std::vector<AttnCase> generated_fwd_cases() {
  std::vector<AttnCase> v;
  // 1) Every head dim x (sq, sk) pairs of peers.md §4.3 (reduced), options and head layouts rotating so
  //    each head dim meets several options and each option several head dims.
  const std::pair<int64_t, int64_t> pairs[] = {{1, 1},     {1, 147},   {113, 203}, {128, 217},
                                               {108, 256}, {256, 512}, {512, 256}, {239, 1}};
  const char* rot[] = {"none",         "causal",      "local",  "alibi",      "alibibh",          "softcap",
                       "sinks",        "dropout",     "causal+sinks", "local+alibi+softcap", "causal+dropout+alibi",
                       "nolse+causal", "localL",      "localR+sinks"};
  const int nrot = sizeof(rot) / sizeof(rot[0]);
  int k = 0;
  for (int d : kHeadDims)
    for (const auto& p : pairs) {
      const char* dtype = k % 2 ? "bf16" : "fp16";
      v.push_back(make("fwd", dtype, d, p.first, p.second, kHeads[k % 3], rot[k % nrot]));
      ++k;
    }
  // 2) Each option alone and in combination, both dtypes, sq < sk and sq > sk (empty causal rows).
  const char* opts[] = {"none",
                        "causal",
                        "local",
                        "localL",
                        "localR",
                        "local0",
                        "alibi",
                        "alibibh",
                        "softcap",
                        "softcap50",
                        "sinks",
                        "dropout",
                        "scale",
                        "causal+alibi",
                        "causal+softcap",
                        "causal+sinks",
                        "local+sinks",
                        "alibi+softcap",
                        "causal+dropout",
                        "dropout+alibibh",
                        "dropout+sinks",
                        "causal+alibi+sinks+softcap",
                        "local+dropout+alibi+sinks",
                        "local0+sinks+alibi"};
  for (const char* o : opts)
    for (const auto& p : {std::pair<int64_t, int64_t>{113, 203}, {203, 113}})
      for (const char* dtype : {"fp16", "bf16"})
        v.push_back(make("fwd", dtype, 64, p.first, p.second, kHeads[1], o));
  // 3) fp32 inputs (CPU only): relative 1e-5 against fp64.
  for (const char* o : {"none", "causal", "local", "alibi", "softcap", "sinks", "dropout", "causal+alibi+sinks+softcap"})
    v.push_back(make("fwd", "fp32", 59, 77, 131, kHeads[1], o));
  v.push_back(make("fwd", "fp32", 256, 1, 300, kHeads[2], "causal"));
  v.push_back(make("fwd", "fp32", 32, 300, 1, kHeads[0], "causal+sinks"));
  // 4) The long pair (1023, 1024) on a few head dims (one sequence, one head).
  for (int d : {32, 111, 128}) {
    AttnCase c = make("fwd", d == 111 ? "bf16" : "fp16", d, 1023, 1024, kHeads[0], d == 32 ? "none" : "causal");
    c.nheads = c.nheads_k = 1;
    v.push_back(c);
  }
  // 5) Non-contiguous strides: padded (irregular strides) and permuted (heads outside rows) storage.
  for (const char* lay : {"padded", "permuted"})
    for (const char* o : {"none", "causal+alibi", "sinks+dropout"}) {
      AttnCase c = make("fwd", "fp16", 40, 37, 91, kHeads[1], o);
      c.layout = lay;
      c.name += std::string("_") + lay;
      v.push_back(c);
    }
  // 6) Forced split-KV: the combine must reproduce the unsplit result (sinks added once).
  for (int ns : {1, 2, 3, 7, 256})
    for (const char* o : {"none", "causal+sinks"}) {
      AttnCase c = make("fwd", "fp16", 64, ns == 256 ? 3 : 64, 800, kHeads[2], o);
      c.num_splits = ns;
      c.name += "_splits" + std::to_string(ns);
      v.push_back(c);
    }
  // 7) Paged K/V vs dense, page sizes 1, 3, 16, 256 (capacity not a page multiple -> seqused_k).
  for (int ps : {1, 3, 16, 256})
    for (const char* o : {"none", "causal+alibi"}) {
      AttnCase c = make("fwd", ps == 3 ? "bf16" : "fp16", 64, 45, ps == 256 ? 300 : 77, kHeads[1], o);
      c.page_size = ps;
      c.name += "_page" + std::to_string(ps);
      v.push_back(c);
    }
  // 8) seqused_k on dense fixed-length K/V.
  {
    AttnCase c = make("fwd", "fp16", 64, 20, 90, kHeads[1], "causal");
    c.seqused_k = {90, 33};
    c.name += "_seqused";
    v.push_back(c);
    AttnCase z = make("fwd", "bf16", 64, 20, 90, kHeads[1], "sinks");
    z.seqused_k = {0, 57};  // a sequence with no keys: out 0, LSE = sink
    z.name += "_seqused0";
    v.push_back(z);
  }
  return v;
}

std::vector<AttnCase> generated_varlen_cases() {
  std::vector<AttnCase> v;
  auto add = [&](const std::string& tag, const std::string& dtype, int d, std::vector<int> lq, std::vector<int> lk,
                 const Heads& hh, const std::string& opts, int page = 0) {
    AttnCase c;
    c.op = "varlen";
    c.dtype = dtype;
    c.head_dim = d;
    c.nheads = hh.h;
    c.nheads_k = hh.hk;
    c.seqlens_q = lq;
    c.seqlens_k = lk;
    c.batch = static_cast<int>(lq.size());
    c.seqlen_k = 0;
    for (int x : lk) c.seqlen_k = std::max<int64_t>(c.seqlen_k, x);
    apply(c, opts);
    c.page_size = page;
    c.name = "varlen_" + dtype + "_d" + std::to_string(d) + "_" + tag + "_" + hh.name + "_" + opts +
             (page ? "_page" + std::to_string(page) : "");
    v.push_back(c);
  };
  const std::vector<int> lq = {1, 113, 0, 47, 128}, lk = {147, 203, 31, 0, 217};
  int k = 0;
  for (int d : kHeadDims) {
    const char* rot[] = {"none", "causal", "local", "alibibh", "sinks", "dropout", "softcap", "causal+sinks"};
    add("mixed", k % 2 ? "bf16" : "fp16", d, lq, lk, kHeads[k % 3], rot[k % 8]);
    ++k;
  }
  for (const char* o : {"causal", "local", "alibi", "sinks", "dropout", "causal+alibi+sinks"})
    add("sqgtsk", "fp16", 64, {50, 7, 64}, {20, 7, 1}, kHeads[1], o);
  add("fp32", "fp32", 59, lq, lk, kHeads[1], "causal+sinks");
  add("fp32b", "fp32", 59, lq, lk, kHeads[2], "local+alibi+dropout");
  // Paged varlen (block_table + seqused_k): page sizes 1, 3, 16, 256.
  for (int ps : {1, 3, 16, 256}) add("paged", "fp16", 64, {5, 60, 1}, {33, 130, 260}, kHeads[1], "causal", ps);
  return v;
}

std::vector<AttnCase> generated_kvcache_cases() {
  std::vector<AttnCase> v;
  const int dims[] = {32, 59, 64, 128, 256};
  int k = 0;
  // rotary: 0 none, 1 interleaved half, 2 interleaved full, 3 neox half, 4 neox full
  for (int rot = 0; rot < 5; ++rot)
    for (int paging : {0, 16, 3})
      for (int causal : {0, 1}) {
        AttnCase c;
        c.op = "kvcache";
        c.dtype = k % 3 == 2 ? "bf16" : "fp16";
        c.head_dim = dims[k % 5];
        c.nheads = kHeads[k % 3].h;
        c.nheads_k = kHeads[k % 3].hk;
        c.batch = 3;
        c.seqlen_q = (k % 4 == 0) ? 1 : (k % 4 == 1 ? 3 : 4);
        c.seqlen_new = (rot == 0 && k % 2) ? 0 : c.seqlen_q;  // also plain attention over a cache
        if (k % 5 == 3) c.seqlen_new = 2;                       // seqlen_new != seqlen_q
        c.seqlen_k = 90;
        c.cache_len = 97;
        c.page_size = paging;
        c.causal = causal;
        if (rot > 0) {
          const int half = (rot == 1 || rot == 3);
          c.rotary_dim = half ? (c.head_dim / 2) / 2 * 2 : c.head_dim / 2 * 2;
          c.rotary_interleaved = rot <= 2;
          if (c.seqlen_new == 0) c.seqlen_new = 1;  // rotary rotates the appended keys
        }
        if (paging == 0 && k % 3 == 0) c.batch_idx = true;
        if (paging == 0 && k % 3 == 1) c.leftpad = {3, 0, 17};
        if (!c.leftpad.empty()) c.cache_seqlens = {40, 12, 97 - c.seqlen_new};
        c.name = "kvcache_" + c.dtype + "_d" + std::to_string(c.head_dim) + "_rot" + std::to_string(rot) + "_page" +
                 std::to_string(paging) + (causal ? "_causal" : "") + "_" + kHeads[k % 3].name + "_sq" +
                 std::to_string(c.seqlen_q) + "_new" + std::to_string(c.seqlen_new) +
                 (c.batch_idx ? "_bidx" : "") + (c.leftpad.empty() ? "" : "_leftpad");
        v.push_back(c);
        ++k;
      }
  // Score options over a cache.
  const char* opts[] = {"alibi", "alibibh", "sinks", "softcap", "local", "causal+alibi+sinks", "local+softcap",
                        "causal+sinks"};
  for (const char* o : opts) {
    AttnCase c;
    c.op = "kvcache";
    c.head_dim = 64;
    c.nheads = 4;
    c.nheads_k = 2;
    c.batch = 2;
    c.seqlen_q = 5;
    c.seqlen_new = 5;
    c.seqlen_k = 120;
    c.cache_len = 125;
    c.rotary_dim = 32;
    c.seqlen_k = 120;
    apply(c, o);
    c.name = std::string("kvcache_fp16_d64_opt_") + o;
    v.push_back(c);
  }
  // Split-KV on a decode step.
  for (int ns : {1, 4, 0}) {
    AttnCase c;
    c.op = "kvcache";
    c.head_dim = 128;
    c.nheads = 4;
    c.nheads_k = 1;
    c.batch = 2;
    c.seqlen_q = 1;
    c.seqlen_new = 1;
    c.seqlen_k = 600;
    c.cache_len = 601;
    c.num_splits = ns;
    c.sinks = ns == 4;
    c.name = "kvcache_fp16_d128_decode_splits" + std::to_string(ns);
    v.push_back(c);
  }
  // fp32 cache.
  {
    AttnCase c;
    c.op = "kvcache";
    c.dtype = "fp32";
    c.head_dim = 40;
    c.batch = 2;
    c.seqlen_q = 3;
    c.seqlen_new = 3;
    c.seqlen_k = 50;
    c.cache_len = 53;
    c.rotary_dim = 40;
    c.causal = true;
    c.name = "kvcache_fp32_d40_rotary_causal";
    v.push_back(c);
  }
  return v;
}

std::vector<AttnCase> generated_bwd_cases() {
  std::vector<AttnCase> v;
  const std::pair<int64_t, int64_t> pairs[] = {{1, 1}, {17, 33}, {40, 25}, {64, 64}, {1, 19}, {33, 1}};
  const char* rot[] = {"none", "causal", "local", "alibi", "sinks", "dropout", "softcap", "causal+alibibh+sinks",
                       "local+dropout"};
  int k = 0;
  for (int d : kHeadDims)
    for (int r = 0; r < 2; ++r) {
      const auto& p = pairs[k % 6];
      v.push_back(make("bwd", k % 2 ? "bf16" : "fp16", d, p.first, p.second, kHeads[k % 3], rot[k % 9]));
      ++k;
    }
  const char* opts[] = {"none",         "causal",         "local",          "localL",       "local0",
                        "alibi",        "alibibh",        "softcap",        "sinks",        "dropout",
                        "scale",        "causal+alibi",   "causal+softcap", "causal+sinks", "dropout+causal",
                        "dropout+sinks+alibi", "local+softcap+sinks"};
  for (const char* o : opts)
    for (const auto& p : {std::pair<int64_t, int64_t>{37, 53}, {53, 37}})
      v.push_back(make("bwd", p.first < p.second ? "fp16" : "bf16", 64, p.first, p.second, kHeads[1], o));
  for (const char* o : {"none", "causal", "alibi+local", "softcap", "sinks", "dropout", "causal+sinks+alibibh"})
    v.push_back(make("bwd", "fp32", 40, 29, 45, kHeads[1], o));
  // Deterministic mode: repeated backward passes are bitwise equal.
  for (const char* o : {"det", "det+causal+sinks", "det+dropout"}) v.push_back(make("bwd", "fp16", 64, 70, 90, kHeads[2], o));
  // Varlen backward incl. empty sequences.
  for (const char* o : {"none", "causal", "sinks+local", "dropout", "det+causal"}) {
    AttnCase c;
    c.op = "varlen_bwd";
    c.head_dim = 48;
    c.nheads = 4;
    c.nheads_k = 2;
    c.seqlens_q = {9, 0, 30, 1};
    c.seqlens_k = {20, 5, 11, 0};
    c.batch = 4;
    apply(c, o);
    c.name = std::string("varlen_bwd_fp16_d48_") + o;
    v.push_back(c);
  }
  // Non-contiguous gradient layouts.
  for (const char* lay : {"padded", "permuted"}) {
    AttnCase c = make("bwd", "bf16", 59, 21, 34, kHeads[1], "causal+sinks");
    c.layout = lay;
    c.name += std::string("_") + lay;
    v.push_back(c);
  }
  return v;
}

std::vector<AttnCase> all_cases(const std::string& family) {
  std::vector<AttnCase> v;
#ifdef FLASHATTN_CASES_JSON
  for (const AttnCase& c : cases_from_json(FLASHATTN_CASES_JSON)) {
    const bool fwd = c.op == "fwd" || c.op == "varlen";
    const bool bwd = c.op == "bwd" || c.op == "varlen_bwd";
    if ((family == "fwd" && fwd) || (family == "bwd" && bwd) || (family == "kvcache" && c.op == "kvcache"))
      v.push_back(c);
  }
#endif
  std::vector<AttnCase> g;
  if (family == "fwd") {
    g = generated_fwd_cases();
    const auto vl = generated_varlen_cases();
    g.insert(g.end(), vl.begin(), vl.end());
  } else if (family == "kvcache") {
    g = generated_kvcache_cases();
  } else if (family == "bwd") {
    g = generated_bwd_cases();
  }
  v.insert(v.end(), g.begin(), g.end());
  // Names become test names: sanitised and unique.
  std::map<std::string, int> seen;
  for (AttnCase& c : v) {
    c.name = sanitize(c.name);
    const int n = seen[c.name]++;
    if (n) c.name += "_" + std::to_string(n);
  }
  return v;
}

}  // namespace fatest
