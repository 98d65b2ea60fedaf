// GPU inference path (fwd_infer kernels): KV cache with in-place append and rotary, paged K/V with any page
// size, split-KV + combine, PackGQA decode, batch-invariant mode, varlen prefill over a paged cache, and a
// CUDA-graph replay with changed metadata. Every case runs through the C API and is checked against the
// fp64 reference frontends of tests/cpp/reference.h (reference_fwd_kvcache, gather_paged).
//
// Each sequence's content (q, cache, new tokens) comes from its own seed, so one logical sequence can be
// placed in different batches (batch invariance) or in a dense and a paged cache (bitwise equality).
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>

#include "gpu_harness.h"
#include "reference.h"

namespace {

using fatest::HostTensor;

// Device buffer holding a copy of a host tensor's storage.
struct Dev {
  void* ptr = nullptr;
  size_t bytes = 0;
  Dev() = default;
  explicit Dev(const HostTensor& t) { upload(t); }
  ~Dev() {
    if (ptr) cudaFree(ptr);
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  void upload(const HostTensor& t) {
    if (t.empty()) return;
    if (!ptr) {
      bytes = t.storage_bytes();
      if (cudaMalloc(&ptr, bytes) != cudaSuccess) ptr = nullptr;
    }
    if (ptr) cudaMemcpy(ptr, t.data(), t.storage_bytes(), cudaMemcpyHostToDevice);
  }
  void download(HostTensor& t) const {
    if (ptr) cudaMemcpy(t.data(), ptr, t.storage_bytes(), cudaMemcpyDeviceToHost);
  }
  flashattn_tensor desc(const HostTensor& t) const {
    if (t.empty() || !ptr) return flashattn_tensor_none();
    flashattn_tensor d = t.desc();
    d.data = ptr;
    d.device_type = FLASHATTN_DEVICE_CUDA;
    int dev = 0;
    cudaGetDevice(&dev);
    d.device_id = dev;
    return d;
  }
};

struct KvCase {
  flashattn_dtype dtype = FLASHATTN_DTYPE_BF16;
  int h = 4, hk = 2, d = 128;
  int64_t sq = 1, s_new = 0;
  int64_t cap = 512;             // cache positions per sequence (paged: rounded up to whole pages)
  std::vector<int32_t> seqlens;  // cache_seqlens (before the append); batch = seqlens.size()
  std::vector<int32_t> leftpad;  // empty or one per sequence
  bool batch_idx = false;        // cache rows permuted, one spare row
  int page = 0;                  // 0: dense cache
  int rotary_dim = 0;
  bool interleaved = false;
  bool causal = false;
  int wl = -1, wr = -1;
  float softcap = 0.f;
  bool alibi = false, sinks = false, lse = true;
  int num_splits = 1;
  bool batch_invariant = false;
  std::vector<uint64_t> seq_seeds;  // per-sequence content; default seed + 1000 * b
  int batch() const { return static_cast<int>(seqlens.size()); }
  int64_t pages_per_seq() const { return page > 0 ? (cap + page - 1) / page : 0; }
  int64_t capacity() const { return page > 0 ? pages_per_seq() * page : cap; }
  std::string name() const {
    std::ostringstream os;
    os << (dtype == FLASHATTN_DTYPE_FP16 ? "fp16" : "bf16") << " b" << batch() << " h" << h << "/" << hk << " d" << d
       << " sq" << sq << " new" << s_new << " cap" << cap << " seqlens[";
    for (size_t i = 0; i < seqlens.size(); ++i) os << (i ? "," : "") << seqlens[i];
    os << "]";
    if (!leftpad.empty()) os << " leftpad";
    if (batch_idx) os << " batch_idx";
    if (page) os << " page" << page;
    if (rotary_dim) os << " rotary" << rotary_dim << (interleaved ? "i" : "n");
    if (causal) os << " causal";
    if (wl >= 0 || wr >= 0) os << " window(" << wl << "," << wr << ")";
    if (softcap > 0) os << " softcap";
    if (alibi) os << " alibi";
    if (sinks) os << " sinks";
    os << " splits" << num_splits << (batch_invariant ? " invariant" : "");
    return os.str();
  }
};

struct KvRun {
  flashattn_status status = FLASHATTN_STATUS_OK;
  std::string error;
  flashattn_plan_info plan{};
  ref::KvCache in;                     // the problem as the reference sees it (caches before the call)
  HostTensor out, lse, k_cache, v_cache;  // GPU results (caches after the call)
  std::vector<double> sinks;
};

// Rotary tables of `rows` positions: angle pos * 10000^(-2r/rd), rounded to the dtype.
void rotary_tables(const KvCase& c, int64_t rows, std::vector<double>* cos_t, std::vector<double>* sin_t) {
  const int half = c.rotary_dim / 2;
  for (int64_t pos = 0; pos < rows; ++pos)
    for (int r = 0; r < half; ++r) {
      const double a = pos * std::pow(10000.0, -2.0 * r / c.rotary_dim);
      cos_t->push_back(ref::round_to(fatest::to_ref(c.dtype), std::cos(a)));
      sin_t->push_back(ref::round_to(fatest::to_ref(c.dtype), std::sin(a)));
    }
}

// Builds the inputs (host tensors + reference problem), runs flashattn_fwd_kvcache, copies results back.
KvRun run_kv(const KvCase& c, uint64_t seed) {
  KvRun r;
  const int b = c.batch(), h = c.h, hk = c.hk, d = c.d;
  const int64_t capn = c.capacity();
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  const ref::DType rt = fatest::to_ref(c.dtype);
  auto rnd = [&](std::mt19937_64& g) { return ref::round_to(rt, nd(g)); };

  ref::KvCache& kc = r.in;
  kc.dtype = rt;
  kc.batch = b;
  kc.nheads = h;
  kc.nheads_k = hk;
  kc.head_dim = d;
  kc.seqlen_q = c.sq;
  kc.seqlen_new = c.s_new;
  kc.cache_seqlens = c.seqlens;
  kc.cache_leftpad = c.leftpad;
  // Cache rows: identity, or a permutation over b + 1 rows (one never used).
  std::vector<int32_t> rows(b);
  std::iota(rows.begin(), rows.end(), 0);
  int64_t n_rows = b;
  if (c.batch_idx) {
    n_rows = b + 1;
    std::vector<int32_t> perm(n_rows);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int i = 0; i < b; ++i) rows[i] = perm[i];
    kc.cache_batch_idx = rows;
  }
  // Paged: pages of every sequence drawn from a shuffled pool with spare pages.
  int64_t n_pages = 0;
  if (c.page > 0) {
    n_pages = b * c.pages_per_seq() + 3;
    std::vector<int32_t> perm(n_pages);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    kc.page_size = c.page;
    kc.pages_per_seq = c.pages_per_seq();
    kc.block_table.assign(perm.begin(), perm.begin() + b * c.pages_per_seq());
  }
  if (c.page == 0) {
    kc.cache_rows = n_rows;
    kc.cache_len = capn;
  }
  const int64_t store_rows = c.page > 0 ? n_pages * c.page : n_rows * capn;
  kc.k_cache.assign(store_rows * hk * d, 0.0);
  kc.v_cache.assign(store_rows * hk * d, 0.0);
  for (double& x : kc.k_cache) x = rnd(rng);  // spare rows/pages hold junk too
  for (double& x : kc.v_cache) x = rnd(rng);
  auto cache_row = [&](int s, int64_t t) {
    if (c.page > 0) return static_cast<int64_t>(kc.block_table[s * c.pages_per_seq() + t / c.page]) * c.page + t % c.page;
    return static_cast<int64_t>(rows[s]) * capn + t;
  };
  kc.q.resize(static_cast<size_t>(b) * c.sq * h * d);
  kc.k_new.resize(static_cast<size_t>(b) * c.s_new * hk * d);
  kc.v_new.resize(kc.k_new.size());
  for (int s = 0; s < b; ++s) {
    std::mt19937_64 g(s < static_cast<int>(c.seq_seeds.size()) ? c.seq_seeds[s] : seed + 1000 * (s + 1));
    // Cache content last, position by position: a larger capacity only appends values, so the same seed
    // gives the same sequence in a dense and a paged cache or in caches of different capacities.
    for (int64_t i = 0; i < c.sq * h * d; ++i) kc.q[s * c.sq * h * d + i] = rnd(g);
    for (int64_t i = 0; i < c.s_new * hk * d; ++i) {
      kc.k_new[s * c.s_new * hk * d + i] = rnd(g);
      kc.v_new[s * c.s_new * hk * d + i] = rnd(g);
    }
    for (int64_t t = 0; t < capn; ++t)
      for (int64_t x = 0; x < hk * d; ++x) {
        kc.k_cache[cache_row(s, t) * hk * d + x] = rnd(g);
        kc.v_cache[cache_row(s, t) * hk * d + x] = rnd(g);
      }
  }
  kc.rotary_dim = c.rotary_dim;
  kc.rotary_interleaved = c.interleaved;
  if (c.rotary_dim) rotary_tables(c, capn, &kc.rotary_cos, &kc.rotary_sin);
  kc.opt.causal = c.causal;
  kc.opt.window_left = c.wl;
  kc.opt.window_right = c.wr;
  kc.opt.softcap = c.softcap;
  std::uniform_real_distribution<double> slope(0.05, 1.0), sink(-2.0, 4.0);
  if (c.alibi)
    for (int i = 0; i < h; ++i) kc.opt.alibi.push_back(static_cast<float>(slope(rng)));
  if (c.sinks)
    for (int i = 0; i < h; ++i) kc.opt.sinks.push_back(static_cast<float>(sink(rng)));
  r.sinks = kc.opt.sinks;

  // Host tensors in the library's layouts.
  HostTensor q(c.dtype, {b, c.sq, h, d});
  q.from_vector(kc.q);
  const std::vector<int64_t> cshape = c.page > 0 ? std::vector<int64_t>{n_pages, c.page, hk, d}
                                                 : std::vector<int64_t>{n_rows, capn, hk, d};
  r.k_cache = HostTensor(c.dtype, cshape);
  r.v_cache = HostTensor(c.dtype, cshape);
  r.k_cache.from_vector(kc.k_cache);
  r.v_cache.from_vector(kc.v_cache);
  HostTensor kn, vn, cos_t, sin_t, alibi_t, sinks_t, bt, bidx, lp;
  if (c.s_new > 0) {
    kn = HostTensor(c.dtype, {b, c.s_new, hk, d});
    vn = HostTensor(c.dtype, {b, c.s_new, hk, d});
    kn.from_vector(kc.k_new);
    vn.from_vector(kc.v_new);
  }
  if (c.rotary_dim) {
    cos_t = HostTensor(c.dtype, {capn, c.rotary_dim / 2});
    sin_t = HostTensor(c.dtype, {capn, c.rotary_dim / 2});
    cos_t.from_vector(kc.rotary_cos);
    sin_t.from_vector(kc.rotary_sin);
  }
  if (c.alibi) alibi_t = fatest::make_fp32(kc.opt.alibi, {h});
  if (c.sinks) sinks_t = fatest::make_fp32(kc.opt.sinks, {h});
  if (c.page > 0) bt = fatest::make_int32_2d(b, c.pages_per_seq(), kc.block_table);
  if (c.batch_idx) bidx = fatest::make_int32(rows);
  if (!c.leftpad.empty()) lp = fatest::make_int32(c.leftpad);
  HostTensor seqlens = fatest::make_int32(c.seqlens);
  r.out = HostTensor(c.dtype, {b, c.sq, h, d});
  r.out.poison();
  if (c.lse) {
    r.lse = HostTensor(FLASHATTN_DTYPE_FP32, {b, h, c.sq});
    r.lse.poison();
  }

  Dev dq(q), dkc(r.k_cache), dvc(r.v_cache), dkn(kn), dvn(vn), dcos(cos_t), dsin(sin_t), dal(alibi_t), dsi(sinks_t),
      dbt(bt), dbi(bidx), dlp(lp), dsl(seqlens), dout(r.out), dlse(r.lse);
  flashattn_kvcache_args a;
  flashattn_kvcache_args_init(&a);
  a.q = dq.desc(q);
  a.k_cache = dkc.desc(r.k_cache);
  a.v_cache = dvc.desc(r.v_cache);
  a.k_new = dkn.desc(kn);
  a.v_new = dvn.desc(vn);
  a.out = dout.desc(r.out);
  a.lse = dlse.desc(r.lse);
  a.cache_seqlens = dsl.desc(seqlens);
  a.cache_batch_idx = dbi.desc(bidx);
  a.cache_leftpad = dlp.desc(lp);
  a.block_table = dbt.desc(bt);
  a.rotary_cos = dcos.desc(cos_t);
  a.rotary_sin = dsin.desc(sin_t);
  a.rotary_interleaved = c.interleaved ? 1 : 0;
  a.opt.causal = c.causal ? 1 : 0;
  a.opt.window_left = c.wl;
  a.opt.window_right = c.wr;
  a.opt.softcap = c.softcap;
  a.opt.alibi_slopes = dal.desc(alibi_t);
  a.opt.sinks = dsi.desc(sinks_t);
  a.opt.num_splits = c.num_splits;
  a.opt.batch_invariant = c.batch_invariant ? 1 : 0;

  r.plan.struct_size = sizeof(r.plan);
  size_t ws_bytes = 0;
  r.status = flashattn_kvcache_plan(&a, &r.plan);
  if (r.status == FLASHATTN_STATUS_OK) r.status = flashattn_kvcache_workspace_size(&a, &ws_bytes);
  void* ws = nullptr;
  if (r.status == FLASHATTN_STATUS_OK && ws_bytes > 0 && cudaMalloc(&ws, ws_bytes) != cudaSuccess) ws = nullptr;
  // A workspace arrives holding anything: poison it, so no kernel may rely on its contents.
  if (ws) cudaMemset(ws, 0xA5, ws_bytes);
  if (r.status == FLASHATTN_STATUS_OK) r.status = flashattn_fwd_kvcache(&a, ws, ws_bytes, nullptr);
  if (r.status == FLASHATTN_STATUS_OK && cudaDeviceSynchronize() != cudaSuccess) {
    r.status = FLASHATTN_STATUS_DEVICE_ERROR;
    r.error = cudaGetErrorString(cudaGetLastError());
  }
  if (r.status != FLASHATTN_STATUS_OK && r.error.empty()) r.error = flashattn_last_error();
  if (ws) cudaFree(ws);
  dout.download(r.out);
  dlse.download(r.lse);
  dkc.download(r.k_cache);
  dvc.download(r.v_cache);
  return r;
}

// Output and LSE by the FA rule (kvcache: 3x, 5x with ALiBi, + 1e-5) against the fp64 reference; v cache
// bit-exact after the append; k cache exact without rotary, within one dtype ulp with it.
std::string check_kv(const KvCase& c, const KvRun& r) {
  if (r.status != FLASHATTN_STATUS_OK) return c.name() + ": status " + flashattn_status_string(r.status) + ": " + r.error;
  const ref::KvCacheResult exact = ref::reference_fwd_kvcache(r.in, ref::Precision::kExact);
  const ref::KvCacheResult low = ref::reference_fwd_kvcache(r.in, ref::Precision::kLow);
  std::string fails;
  const fatest::Tolerance tol{c.alibi ? 5.0 : 3.0, 1e-5, 1e-5};
  const fatest::Comparison co = fatest::compare("out", r.in.dtype, r.out.to_vector(), fatest::concat(exact.fwd.out),
                                                fatest::concat(low.fwd.out), tol);
  if (!co.ok) fails += " " + co.message + ";";
  if (c.lse) {
    // GPU LSE is (b, h, sq); the reference gives (h, sq) per sequence: the same order.
    const fatest::Tolerance lse_tol{2.0, 2e-3, 1e-5};
    const fatest::Comparison cl = fatest::compare("lse", r.in.dtype, r.lse.to_vector(), fatest::concat(exact.fwd.lse),
                                                  fatest::concat(low.fwd.lse), lse_tol);
    if (!cl.ok) fails += " " + cl.message + ";";
  }
  const std::vector<double> kg = r.k_cache.to_vector(), vg = r.v_cache.to_vector();
  int64_t v_bad = 0, k_bad = 0;
  const double ulp = c.dtype == FLASHATTN_DTYPE_FP16 ? std::ldexp(1.0, -10) : std::ldexp(1.0, -7);
  for (size_t i = 0; i < vg.size(); ++i) {
    if (vg[i] != exact.v_cache[i]) ++v_bad;
    const double bound = c.rotary_dim ? ulp * std::max(std::fabs(exact.k_cache[i]), 1e-3) : 0.0;
    if (!(std::fabs(kg[i] - exact.k_cache[i]) <= bound)) ++k_bad;
  }
  if (v_bad) fails += " v cache: " + std::to_string(v_bad) + " elements differ from the reference append;";
  if (k_bad) fails += " k cache: " + std::to_string(k_bad) + " elements off by more than one ulp;";
  return fails.empty() ? "" : c.name() + " [" + r.plan.kernel + ", splits " + std::to_string(r.plan.num_splits) + "]:" + fails;
}

std::vector<int32_t> random_seqlens(std::mt19937_64& rng, int b, int64_t lo, int64_t hi) {
  std::uniform_int_distribution<int64_t> u(lo, hi);
  std::vector<int32_t> v(b);
  for (auto& x : v) x = static_cast<int32_t>(u(rng));
  return v;
}

// GPU runs one at a time, reference checks in parallel on the host; cases whose kernel this build left
// out are counted as skipped (the harness's report), a test where nothing ran fails.
void run_and_expect(const std::vector<KvCase>& cases, uint64_t seed) {
  gputest::report(gputest::run_all<KvCase, KvRun>(cases, seed, run_kv, check_kv));
}

bool same_bytes(const HostTensor& a, const HostTensor& b) { return a.bytes() == b.bytes(); }

// ---- The reduced peers.md §4.3 kvcache grid ----------------------------------------------------------

TEST(GpuKvCache, AppendRotaryGrid) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = gputest::fresh_seed("GpuKvCache.AppendRotaryGrid");
  std::mt19937_64 rng(seed);
  std::vector<KvCase> cases;
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 128}, {1, 339}, {3, 1024}, {64, 800}, {16, 2000}};
  int i = 0;
  for (auto [sq, cap] : shapes)
    for (int splits : {1, 0, 3})
      for (int rot : {0, 1, 2}) {  // rotary fraction 0, 0.5, 1
        KvCase c;
        c.dtype = (i % 3 == 2) ? FLASHATTN_DTYPE_FP16 : FLASHATTN_DTYPE_BF16;
        c.d = (i % 4 == 1) ? 64 : 128;
        c.h = 6;
        c.hk = (i % 3 == 0) ? 6 : (i % 3 == 1 ? 2 : 1);
        c.sq = sq;
        c.s_new = (i % 2) ? sq : std::min<int64_t>(sq, 2);
        c.cap = cap;
        c.seqlens = random_seqlens(rng, 3, 0, cap - c.s_new);
        c.rotary_dim = rot == 0 ? 0 : (rot == 1 ? c.d / 2 : c.d);
        c.interleaved = i % 2;
        c.causal = (i % 5) < 3;
        if (i % 7 == 4) {
          c.causal = false;
          c.wl = 37;
          c.wr = i % 2 ? 5 : 0;
        }
        c.page = std::vector<int>{0, 16, 256, 7, 64}[i % 5];
        if (c.page == 0 && i % 4 == 3)
          for (int s = 0; s < 3; ++s) c.leftpad.push_back(c.seqlens[s] / 3);
        c.batch_idx = c.page == 0 && i % 3 == 1;
        c.alibi = i % 6 == 5;
        c.softcap = i % 8 == 6 ? 30.f : 0.f;
        c.sinks = i % 9 == 7;
        c.num_splits = splits;
        cases.push_back(c);
        ++i;
      }
  run_and_expect(cases, seed);
}

TEST(GpuKvCache, LeftpadBatchIdxRotaryStyles) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = gputest::fresh_seed("GpuKvCache.LeftpadBatchIdxRotaryStyles");
  std::vector<KvCase> cases;
  for (int interleaved : {0, 1})
    for (int rd : {16, 40, 128})  // partial (FA2 would need a multiple of 16 only for the first), full
      for (int causal : {0, 1}) {
        KvCase c;
        c.sq = causal ? 5 : 1;
        c.s_new = c.sq;
        c.cap = 700;
        c.seqlens = {100, 0, 650, 321};
        c.leftpad = {7, 0, 600, 320};
        c.batch_idx = true;
        c.rotary_dim = rd;
        c.interleaved = interleaved;
        c.causal = causal;
        c.num_splits = causal ? 0 : 3;
        cases.push_back(c);
      }
  run_and_expect(cases, seed);
}

// Paged and dense caches holding the same logical sequences give bitwise identical outputs, LSE and
// appended tokens (the same tiles and split boundaries see the same data), for page sizes from per-row
// lookups (1, 7, 16, 64) to whole-block pages (128 = the d128 key tile, 256).
TEST(GpuKvCache, PagedMatchesDenseBitwise) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = gputest::fresh_seed("GpuKvCache.PagedMatchesDenseBitwise");
  std::mt19937_64 rng(seed);
  for (int page : {1, 7, 16, 64, 128, 256})
    for (int splits : {1, 3}) {
      KvCase dense;
      dense.h = 8;
      dense.hk = 2;
      dense.sq = 2;
      dense.s_new = 2;
      dense.cap = 1000;
      dense.seqlens = random_seqlens(rng, 3, 0, 998);
      dense.rotary_dim = 64;
      dense.causal = true;
      dense.num_splits = splits;
      dense.seq_seeds = {seed + 1, seed + 2, seed + 3};
      KvCase paged = dense;
      paged.page = page;
      const KvRun rd = run_kv(dense, seed), rp = run_kv(paged, seed);
      const std::string md = check_kv(dense, rd), mp = check_kv(paged, rp);
      EXPECT_TRUE(md.empty()) << md;
      EXPECT_TRUE(mp.empty()) << mp;
      EXPECT_TRUE(same_bytes(rd.out, rp.out)) << paged.name() << ": paged output differs from the dense one";
      EXPECT_TRUE(same_bytes(rd.lse, rp.lse)) << paged.name() << ": paged LSE differs from the dense one";
    }
}

TEST(GpuKvCache, GqaDecode32x8) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = gputest::fresh_seed("GpuKvCache.GqaDecode32x8");
  std::mt19937_64 rng(seed);
  std::vector<KvCase> cases;
  for (int splits : {1, 0, 3})
    for (int page : {0, 16})
      for (int variant = 0; variant < 3; ++variant) {
        KvCase c;
        c.h = 32;
        c.hk = 8;
        c.sq = 1;
        c.s_new = 1;
        c.cap = 2048;  // long enough for several splits; the host reference of 18 cases stays under a minute
        c.page = page;
        c.seqlens = random_seqlens(rng, 4, 0, 2047);
        c.seqlens[0] = 2047;
        c.num_splits = splits;
        c.sinks = variant == 1;     // PackGQA with sinks: only through the combine
        c.softcap = variant == 2 ? 20.f : 0.f;
        c.alibi = variant == 2;     // ALiBi: no PackGQA
        c.rotary_dim = variant == 0 ? 128 : 0;
        cases.push_back(c);
      }
  run_and_expect(cases, seed);
  // One token x 4 packed heads: the 16-row decode tile, unless FLASHATTN_DECODE_TILE=0 asks for the 64-row one.
  const char* env = std::getenv("FLASHATTN_DECODE_TILE");
  const bool decode_tile = !(env && std::string(env) == "0");
  const KvRun r = run_kv(cases.front(), seed + 7);
  ASSERT_EQ(r.status, FLASHATTN_STATUS_OK) << r.error;
  EXPECT_EQ(r.plan.block_m, decode_tile ? 16 : 64) << r.plan.kernel;
  EXPECT_EQ(std::string(r.plan.kernel).find("decode") != std::string::npos, decode_tile) << r.plan.kernel;
}

// Decode at split counts from 2 to past the key blocks (splits with no key), with empty sequences (every
// split empty: out 0, LSE +inf or the sink), sinks, a window and paged K/V, at 4 and 16 packed rows.
TEST(GpuKvCache, DecodeSplitCounts) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = gputest::fresh_seed("GpuKvCache.DecodeSplitCounts");
  std::mt19937_64 rng(seed);
  std::vector<KvCase> cases;
  int variant = 0;
  for (int splits : {2, 7, 16, 24, 40, 64})
    for (int page : {0, 16}) {
      KvCase c;
      c.h = 8;
      c.hk = 2;
      c.sq = variant % 3 == 2 ? 4 : 1;  // 16 or 4 packed rows: one decode tile
      c.cap = 2304;  // 18 key blocks: from 24 splits on, some splits get none
      c.page = page;
      c.seqlens = random_seqlens(rng, 3, 1, c.cap);
      c.seqlens[0] = static_cast<int32_t>(c.cap);
      c.seqlens[1] = 0;
      c.num_splits = splits;
      c.sinks = variant % 2 == 0;
      if (variant % 4 == 1) {
        c.causal = true;
        c.wl = 300;
        c.wr = 0;
      }
      cases.push_back(c);
      ++variant;
    }
  run_and_expect(cases, seed);
}

// PackGQA at several query tokens (speculative decoding, chunked prefill): tile rows are (token, head)
// pairs, so causal and window masks must act per token, and out/LSE/partials land in the caller's layout.
TEST(GpuKvCache, PackedGqaMultiToken) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = gputest::fresh_seed("GpuKvCache.PackedGqaMultiToken");
  std::mt19937_64 rng(seed);
  std::vector<KvCase> cases;
  for (int sq : {3, 4, 17})
    for (int page : {0, 16})
      for (int variant = 0; variant < 3; ++variant) {
        KvCase c;
        c.h = 32;
        c.hk = 8;
        c.sq = sq;
        c.s_new = variant == 2 ? 0 : sq;
        c.cap = 1024;
        c.page = page;
        c.seqlens = random_seqlens(rng, 3, 0, static_cast<int>(c.cap - c.s_new));
        c.causal = variant != 1;
        if (variant == 1) {
          c.wl = 100;
          c.wr = 2;
        }
        c.num_splits = variant == 0 ? 0 : (variant == 1 ? 1 : 3);
        c.sinks = variant == 2;  // with partials: the combine adds each head's sink
        c.softcap = variant == 1 ? 30.f : 0.f;
        cases.push_back(c);
      }
  run_and_expect(cases, seed);
  KvCase c = cases.front();
  const KvRun r = run_kv(c, seed + 7);
  ASSERT_EQ(r.status, FLASHATTN_STATUS_OK) << r.error;
  EXPECT_NE(std::string(r.plan.kernel).find("packgqa"), std::string::npos) << r.plan.kernel;
}

// Every instantiated head dim (and two that round up) through both inference kernels: q len 1 and 4 with
// 4 packed heads (the 16-row decode kernel) and a 20-token chunk (80 rows: the 64-row kernel); dense and
// paged (per-row and tile-sized pages), fp16 and bf16, split or not, with rotary, windows and softcap.
TEST(GpuKvCache, EveryHeadDim) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = gputest::fresh_seed("GpuKvCache.EveryHeadDim");
  std::mt19937_64 rng(seed);
  std::vector<KvCase> cases;
  int i = 0;
  for (int d : {32, 64, 96, 128, 160, 192, 224, 256, 40, 200})
    for (int sq : {1, 4, 20}) {
      KvCase c;
      c.dtype = i % 2 ? FLASHATTN_DTYPE_FP16 : FLASHATTN_DTYPE_BF16;
      c.d = d;
      c.h = 8;
      c.hk = 2;
      c.sq = sq;
      c.s_new = sq == 20 ? 0 : sq;
      c.cap = 700;
      c.seqlens = random_seqlens(rng, 2, 0, c.cap - c.s_new);
      c.page = std::vector<int>{16, 0, 7}[i % 3];
      c.causal = i % 4 != 3;
      if (!c.causal) {
        c.wl = 90;
        c.wr = 3;
      }
      c.num_splits = i % 2 ? 0 : 3;
      c.rotary_dim = i % 4 == 0 ? d / 2 : 0;
      c.softcap = i % 5 == 2 ? 30.f : 0.f;
      cases.push_back(c);
      ++i;
    }
  run_and_expect(cases, seed);
}

// The same sequence alone and among others (different batch sizes, lengths and cache capacities) gives
// bitwise identical output and LSE in batch-invariant mode, with the heuristic on.
TEST(GpuKvCache, BatchInvariantMode) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = gputest::fresh_seed("GpuKvCache.BatchInvariantMode");
  for (int page : {0, 16})
    for (int sq : {1, 4}) {
      KvCase alone;
      alone.h = 32;
      alone.hk = 8;
      alone.sq = sq;
      alone.s_new = sq;
      alone.causal = true;
      alone.page = page;
      alone.cap = 2600;
      alone.seqlens = {2321};  // three batch-invariant chunks of 1024 keys
      alone.seq_seeds = {seed ^ 0x5eed};
      alone.num_splits = 0;
      alone.batch_invariant = true;
      alone.sinks = false;
      KvCase crowd = alone;
      crowd.cap = 4600;
      crowd.seqlens = {4000, 17, 2321, 1500, 4590 - sq, 1};
      crowd.seq_seeds = {seed + 11, seed + 12, seed ^ 0x5eed, seed + 13, seed + 14, seed + 15};
      const KvRun ra = run_kv(alone, seed), rc = run_kv(crowd, seed + 1);
      const std::string ma = check_kv(alone, ra), mc = check_kv(crowd, rc);
      EXPECT_TRUE(ma.empty()) << ma;
      EXPECT_TRUE(mc.empty()) << mc;
      if (ra.status != FLASHATTN_STATUS_OK || rc.status != FLASHATTN_STATUS_OK) continue;
      const size_t per_out = static_cast<size_t>(sq) * alone.h * alone.d * fatest::dtype_size(alone.dtype);
      const size_t per_lse = static_cast<size_t>(sq) * alone.h * sizeof(float);
      const auto ob = rc.out.bytes(), lb = rc.lse.bytes(), oa = ra.out.bytes(), la = ra.lse.bytes();
      EXPECT_EQ(0, std::memcmp(oa.data(), ob.data() + 2 * per_out, per_out)) << crowd.name() << ": output depends on the batch";
      EXPECT_EQ(0, std::memcmp(la.data(), lb.data() + 2 * per_lse, per_lse)) << crowd.name() << ": LSE depends on the batch";
    }
}

TEST(GpuKvCache, RepeatedRunsAreBitwiseIdentical) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = gputest::fresh_seed("GpuKvCache.RepeatedRunsAreBitwiseIdentical");
  KvCase c;
  c.h = 32;
  c.hk = 8;
  c.cap = 3000;
  c.page = 16;
  c.seqlens = {2999, 1500};
  c.num_splits = 5;
  c.sinks = true;
  const KvRun a = run_kv(c, seed), b = run_kv(c, seed);
  EXPECT_TRUE(check_kv(c, a).empty()) << check_kv(c, a);
  EXPECT_TRUE(same_bytes(a.out, b.out) && same_bytes(a.lse, b.lse)) << c.name() << ": runs differ";
}

// Small decode and append cases (dense, small and tile-sized pages, split-KV, PackGQA, rotary), cheap
// enough for compute-sanitizer (tools/device_check.sh step sanitize).
TEST(GpuKvCacheSmall, SanitizerShapes) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = gputest::fresh_seed("GpuKvCacheSmall.SanitizerShapes");
  std::mt19937_64 rng(seed);
  std::vector<KvCase> cases;
  for (int i = 0; i < 6; ++i) {
    KvCase c;
    c.h = 8;
    c.hk = i % 2 ? 2 : 8;
    c.sq = i < 3 ? 1 : 5;
    c.s_new = i % 3 == 1 ? c.sq : 0;
    c.cap = 300;
    c.seqlens = random_seqlens(rng, 2, 0, c.cap - c.s_new);
    c.page = std::vector<int>{0, 16, 7, 128, 0, 16}[i];
    c.rotary_dim = c.s_new ? 64 : 0;
    c.causal = i % 2 == 0;
    c.num_splits = i % 3 == 2 ? 3 : 1;
    cases.push_back(c);
  }
  run_and_expect(cases, seed);
}

// ---- Varlen prefill over a paged cache (vLLM's flash_attn_varlen_func with block_table + seqused_k) ----

TEST(GpuKvCache, VarlenPrefillOverPagedCache) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = gputest::fresh_seed("GpuKvCache.VarlenPrefillOverPagedCache");
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  struct V {
    std::vector<int> lq, lk;
    int page, splits;
    bool causal;
  };
  const std::vector<V> grid = {{{1, 5, 129}, {1328, 18, 463}, 16, 1, true},
                               {{1, 5, 129}, {1328, 18, 463}, 16, 3, true},
                               {{64, 1, 200, 7}, {64, 54, 293, 70}, 7, 1, true},
                               {{33, 100}, {2049, 100}, 256, 1, false},
                               {{17, 0, 9}, {300, 0, 9}, 1, 2, true}};
  for (const V& g : grid) {
    const int b = static_cast<int>(g.lq.size()), h = 8, hk = 2, d = 128;
    const flashattn_dtype dt = FLASHATTN_DTYPE_BF16;
    const ref::DType rt = fatest::to_ref(dt);
    int max_k = 0, max_q = 0;
    for (int x : g.lk) max_k = std::max(max_k, x);
    for (int x : g.lq) max_q = std::max(max_q, x);
    const int pps = (max_k + g.page - 1) / g.page + 1;  // one spare entry per row
    const int n_pages = b * pps + 2;
    std::vector<int32_t> perm(n_pages);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<int32_t> table(perm.begin(), perm.begin() + b * pps);
    std::vector<int32_t> cu_q(b + 1, 0), used(g.lk.begin(), g.lk.end());
    for (int s = 0; s < b; ++s) cu_q[s + 1] = cu_q[s] + g.lq[s];
    HostTensor q(dt, {cu_q[b], h, d}), kp(dt, {n_pages, g.page, hk, d}), vp(dt, {n_pages, g.page, hk, d});
    HostTensor out(dt, {cu_q[b], h, d}), lse(FLASHATTN_DTYPE_FP32, {h, cu_q[b]});
    std::vector<double> qv(q.numel()), kv(kp.numel()), vv(vp.numel());
    for (auto& x : qv) x = ref::round_to(rt, nd(rng));
    for (auto& x : kv) x = ref::round_to(rt, nd(rng));
    for (auto& x : vv) x = ref::round_to(rt, nd(rng));
    q.from_vector(qv);
    kp.from_vector(kv);
    vp.from_vector(vv);
    out.poison();
    lse.poison();
    HostTensor tcu = fatest::make_int32(cu_q), tused = fatest::make_int32(used), tbt = fatest::make_int32_2d(b, pps, table);
    Dev dq(q), dk(kp), dv(vp), dout(out), dlse(lse), dcu(tcu), dused(tused), dbt(tbt);
    flashattn_fwd_args a;
    flashattn_fwd_args_init(&a);
    a.q = dq.desc(q);
    a.k = dk.desc(kp);
    a.v = dv.desc(vp);
    a.out = dout.desc(out);
    a.lse = dlse.desc(lse);
    a.cu_seqlens_q = dcu.desc(tcu);
    a.seqused_k = dused.desc(tused);
    a.block_table = dbt.desc(tbt);
    a.max_seqlen_q = max_q;
    a.max_seqlen_k = max_k;
    a.opt.causal = g.causal;
    a.opt.num_splits = g.splits;
    size_t ws_bytes = 0;
    flashattn_status st = flashattn_fwd_workspace_size(&a, &ws_bytes);
    void* ws = nullptr;
    if (st == FLASHATTN_STATUS_OK && ws_bytes) cudaMalloc(&ws, ws_bytes);
    if (st == FLASHATTN_STATUS_OK) st = flashattn_varlen_fwd(&a, ws, ws_bytes, nullptr);
    ASSERT_EQ(st, FLASHATTN_STATUS_OK) << flashattn_last_error();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    if (ws) cudaFree(ws);
    dout.download(out);
    dlse.download(lse);
    ref::Problem pb;
    pb.dtype = rt;
    pb.nheads = h;
    pb.nheads_k = hk;
    pb.head_dim = d;
    pb.opt.causal = g.causal;
    std::vector<double> og, lg;
    for (int s = 0; s < b; ++s) {
      ref::Seq seq;
      seq.sq = g.lq[s];
      seq.sk = g.lk[s];
      seq.q.assign(qv.begin() + static_cast<int64_t>(cu_q[s]) * h * d, qv.begin() + static_cast<int64_t>(cu_q[s + 1]) * h * d);
      seq.k = ref::gather_paged(kv, g.page, hk, d, table.data() + s * pps, seq.sk);
      seq.v = ref::gather_paged(vv, g.page, hk, d, table.data() + s * pps, seq.sk);
      for (int64_t i = 0; i < seq.sq * h * d; ++i) og.push_back(out.get_flat(cu_q[s] * int64_t{h} * d + i));
      for (int hh = 0; hh < h; ++hh)
        for (int i = 0; i < seq.sq; ++i) lg.push_back(lse.get({hh, cu_q[s] + i}));
      pb.seqs.push_back(std::move(seq));
    }
    const ref::FwdResult ex = ref::reference_fwd(pb, ref::Precision::kExact);
    const ref::FwdResult lo = ref::reference_fwd(pb, ref::Precision::kLow);
    EXPECT_FA_CLOSE("out", rt, og, fatest::concat(ex.out), fatest::concat(lo.out), fatest::kFwdTol);
    EXPECT_FA_CLOSE("lse", rt, lg, fatest::concat(ex.lse), fatest::concat(lo.lse), (fatest::Tolerance{2.0, 2e-3, 1e-5}));
  }
}

// ---- CUDA graph: one decode step captured once, replayed with new cache_seqlens and block_table --------

TEST(GpuKvCache, GraphReplayWithChangedMetadata) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = gputest::fresh_seed("GpuKvCache.GraphReplayWithChangedMetadata");
  std::mt19937_64 rng(seed);
  KvCase c;
  c.h = 32;
  c.hk = 8;
  c.sq = 1;
  c.s_new = 1;
  c.cap = 2048;
  c.page = 16;
  c.rotary_dim = 128;
  c.causal = true;
  c.num_splits = 0;
  c.seqlens = {100, 2000, 5, 1024};
  const int b = c.batch();
  // Step 0 inputs from run_kv's generator (its reference problem doubles as the host mirror).
  KvRun r0 = run_kv(c, seed);  // an eager run: also checks the same shapes outside the graph
  ASSERT_TRUE(check_kv(c, r0).empty()) << check_kv(c, r0);
  ref::KvCache st = r0.in;     // inputs for the graph steps: same shapes, fresh metadata each step
  HostTensor q(c.dtype, {b, 1, c.h, c.d}), kn(c.dtype, {b, 1, c.hk, c.d}), vn(c.dtype, {b, 1, c.hk, c.d});
  HostTensor kc(c.dtype, r0.k_cache.shape()), vc(c.dtype, r0.v_cache.shape());
  kc.from_vector(st.k_cache);
  vc.from_vector(st.v_cache);
  HostTensor cos_t(c.dtype, {c.capacity(), c.rotary_dim / 2}), sin_t(c.dtype, {c.capacity(), c.rotary_dim / 2});
  cos_t.from_vector(st.rotary_cos);
  sin_t.from_vector(st.rotary_sin);
  HostTensor seqlens = fatest::make_int32(st.cache_seqlens);
  HostTensor bt = fatest::make_int32_2d(b, c.pages_per_seq(), st.block_table);
  HostTensor out(c.dtype, {b, 1, c.h, c.d}), lse(FLASHATTN_DTYPE_FP32, {b, c.h, 1});
  q.from_vector(st.q);
  kn.from_vector(st.k_new);
  vn.from_vector(st.v_new);
  Dev dq(q), dkn(kn), dvn(vn), dkc(kc), dvc(vc), dcos(cos_t), dsin(sin_t), dsl(seqlens), dbt(bt), dout(out), dlse(lse);
  flashattn_kvcache_args a;
  flashattn_kvcache_args_init(&a);
  a.q = dq.desc(q);
  a.k_cache = dkc.desc(kc);
  a.v_cache = dvc.desc(vc);
  a.k_new = dkn.desc(kn);
  a.v_new = dvn.desc(vn);
  a.out = dout.desc(out);
  a.lse = dlse.desc(lse);
  a.cache_seqlens = dsl.desc(seqlens);
  a.block_table = dbt.desc(bt);
  a.rotary_cos = dcos.desc(cos_t);
  a.rotary_sin = dsin.desc(sin_t);
  a.rotary_interleaved = c.interleaved ? 1 : 0;  // args_init's default is GPT-J (interleaved), like flash_attn
  a.opt.causal = 1;
  size_t ws_bytes = 0;
  ASSERT_EQ(flashattn_kvcache_workspace_size(&a, &ws_bytes), FLASHATTN_STATUS_OK) << flashattn_last_error();
  void* ws = nullptr;
  if (ws_bytes) {
    ASSERT_EQ(cudaMalloc(&ws, ws_bytes), cudaSuccess);
    ASSERT_EQ(cudaMemset(ws, 0xA5, ws_bytes), cudaSuccess);
  }
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  const flashattn_status cap_status = flashattn_fwd_kvcache(&a, ws, ws_bytes, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_EQ(cap_status, FLASHATTN_STATUS_OK) << flashattn_last_error();
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);

  std::normal_distribution<double> nd(0.0, 1.0);
  const ref::DType rt = fatest::to_ref(c.dtype);
  for (int step = 0; step < 4; ++step) {
    // New lengths (including 0 and the full capacity minus the append) and a reshuffled block table; the
    // cache pool keeps what earlier steps appended.
    st.cache_seqlens = random_seqlens(rng, b, 0, c.capacity() - 1);
    st.cache_seqlens[step % b] = step % 2 ? 0 : static_cast<int32_t>(c.capacity() - 1);
    std::vector<int32_t> perm(st.k_cache.size() / (c.page * c.hk * c.d));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    st.block_table.assign(perm.begin(), perm.begin() + b * c.pages_per_seq());
    for (auto& x : st.q) x = ref::round_to(rt, nd(rng));
    for (auto& x : st.k_new) x = ref::round_to(rt, nd(rng));
    for (auto& x : st.v_new) x = ref::round_to(rt, nd(rng));
    seqlens = fatest::make_int32(st.cache_seqlens);
    bt = fatest::make_int32_2d(b, c.pages_per_seq(), st.block_table);
    q.from_vector(st.q);
    kn.from_vector(st.k_new);
    vn.from_vector(st.v_new);
    dsl.upload(seqlens);
    dbt.upload(bt);
    dq.upload(q);
    dkn.upload(kn);
    dvn.upload(vn);
    out.poison();
    dout.upload(out);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    dout.download(out);
    dlse.download(lse);
    dkc.download(kc);
    dvc.download(vc);
    KvRun r;
    r.in = st;
    r.out = out;
    r.lse = lse;
    r.k_cache = kc;
    r.v_cache = vc;
    r.plan = r0.plan;
    const std::string msg = check_kv(c, r);
    EXPECT_TRUE(msg.empty()) << "graph step " << step << ": " << msg;
    // The next step starts from the cache as the GPU left it (checked just above).
    st.k_cache = kc.to_vector();
    st.v_cache = vc.to_vector();
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  if (ws) cudaFree(ws);
}

TEST(GpuKvCache, PlanReportsSplitsAndWorkspace) {
  SKIP_WITHOUT_GPU();
  KvCase c;
  c.h = 32;
  c.hk = 8;
  c.cap = 32768;
  c.page = 256;
  c.seqlens = {32000};
  c.num_splits = 0;
  const KvRun r = run_kv(c, 3);
  ASSERT_EQ(r.status, FLASHATTN_STATUS_OK) << r.error;
  // One sequence, 8 kv heads: far less than a wave, so the heuristic must split.
  EXPECT_GT(r.plan.num_splits, 1) << r.plan.kernel;
  EXPECT_NE(std::string(r.plan.kernel).find("packgqa"), std::string::npos) << r.plan.kernel;
  EXPECT_TRUE(check_kv(c, r).empty()) << check_kv(c, r);
}

}  // namespace
