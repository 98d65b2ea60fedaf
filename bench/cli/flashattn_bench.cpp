// flashattn-bench: times flashattn on the best device present (a CUDA GPU when the library has CUDA and a
// device is there, otherwise the CPU backend) against standard attention that materialises S and P, checks
// the result against it, and reports time, TFLOP/s (FlashAttention convention), error and memory.
//
// Standard attention: on the CPU a plain fp64 loop implementation (the accuracy reference, also timed as
// "math"); on the GPU cuBLAS GEMMs + a softmax kernel, run once in fp32 as the accuracy reference and timed
// in the input dtype as "math" (what torch's math path does).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "flashattn/flashattn.h"
#include "problem.h"
#if FLASHATTN_BENCH_CUDA
#include "gpu_reference.h"
#endif

namespace {

using fab::Problem;

// ---- Options ---------------------------------------------------------------------------------------------

struct Options {
  std::string device = "auto";  // auto | cpu | cuda
  int device_id = 0;
  int threads = 0;  // CPU backend threads, 0 = all
  std::string op = "fwd";
  int64_t batch = -1, seqlen_q = -1, seqlen_k = -1, nheads = -1, nheads_k = -1, headdim = -1;  // -1: device default
  std::string dtype;  // empty: device default
  bool causal = true;
  int window_left = -1, window_right = -1;
  float softcap = 0.f;
  float scale = 0.f;
  bool alibi = false, sinks = false;
  float dropout = 0.f;
  int iters = -1, warmup = -1, math_iters = -1;  // -1: device default
  bool check = true, math = true, flush_l2 = true;
  bool deterministic = false;
  uint64_t seed = 1234;
  std::string json;
};

void usage() {
  std::printf(
      "usage: flashattn-bench [options]\n"
      "  --device auto|cpu|cuda   where to run (auto: the GPU when present and built, else the CPU)\n"
      "  --device-id N            CUDA device index (0)\n"
      "  --threads N              CPU backend threads (0 = all hardware threads)\n"
      "  --op fwd|bwd|fwd_bwd     operation timed (fwd)\n"
      "  --batch B --seqlen S --seqlen-q SQ --seqlen-k SK --heads H --heads-k HK --headdim D\n"
      "                           shape (GPU default: 2 x 4096 x 16 x 128; CPU default: 1 x 1024 x 8 x 64)\n"
      "  --dtype fp16|bf16|fp32   input dtype (GPU default bf16, CPU default fp32)\n"
      "  --causal | --no-causal   causal mask (default on)\n"
      "  --window L,R             sliding window (-1 = unbounded side)\n"
      "  --softcap X  --alibi  --sinks  --dropout P  --scale X\n"
      "  --deterministic          backward with bitwise-reproducible dq/dk/dv (opt.deterministic)\n"
      "  --iters N --warmup N     timed iterations / warm-up runs (GPU 30/5, CPU 5/1)\n"
      "  --math-iters N           timed runs of standard attention (GPU: --iters, CPU: 1)\n"
      "  --no-check               skip the accuracy check against standard attention\n"
      "  --no-math                skip timing standard attention\n"
      "  --no-flush-l2            do not clear the GPU L2 cache before each timed run\n"
      "  --seed N                 input seed\n"
      "  --json FILE              write a result file (bench/results format, docs/performance.md)\n");
}

[[noreturn]] void die(const std::string& msg, int code = 2) {
  std::fprintf(stderr, "flashattn-bench: %s\n", msg.c_str());
  std::exit(code);
}

int64_t parse_int(const std::string& flag, const char* s) {
  char* end = nullptr;
  const long long v = std::strtoll(s, &end, 10);
  if (end == s || *end) die(flag + " expects an integer, got '" + s + "'");
  return v;
}

float parse_float(const std::string& flag, const char* s) {
  char* end = nullptr;
  const float v = std::strtof(s, &end);
  if (end == s || *end) die(flag + " expects a number, got '" + s + "'");
  return v;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> const char* {
      if (i + 1 >= argc) die(a + " expects a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") { usage(); std::exit(0); }
    else if (a == "--device") o.device = val();
    else if (a == "--device-id") o.device_id = static_cast<int>(parse_int(a, val()));
    else if (a == "--threads") o.threads = static_cast<int>(parse_int(a, val()));
    else if (a == "--op") o.op = val();
    else if (a == "--batch" || a == "-b") o.batch = parse_int(a, val());
    else if (a == "--seqlen") o.seqlen_q = o.seqlen_k = parse_int(a, val());
    else if (a == "--seqlen-q") o.seqlen_q = parse_int(a, val());
    else if (a == "--seqlen-k") o.seqlen_k = parse_int(a, val());
    else if (a == "--heads") o.nheads = parse_int(a, val());
    else if (a == "--heads-k") o.nheads_k = parse_int(a, val());
    else if (a == "--headdim") o.headdim = parse_int(a, val());
    else if (a == "--dtype") o.dtype = val();
    else if (a == "--causal") o.causal = true;
    else if (a == "--no-causal") o.causal = false;
    else if (a == "--window") {
      const std::string w = val();
      const size_t comma = w.find(',');
      if (comma == std::string::npos) die("--window expects L,R (e.g. 1024,0 or 256,-1)");
      o.window_left = static_cast<int>(parse_int(a, w.substr(0, comma).c_str()));
      o.window_right = static_cast<int>(parse_int(a, w.substr(comma + 1).c_str()));
    } else if (a == "--softcap") o.softcap = parse_float(a, val());
    else if (a == "--scale") o.scale = parse_float(a, val());
    else if (a == "--alibi") o.alibi = true;
    else if (a == "--sinks") o.sinks = true;
    else if (a == "--dropout") o.dropout = parse_float(a, val());
    else if (a == "--deterministic") o.deterministic = true;
    else if (a == "--iters") o.iters = static_cast<int>(parse_int(a, val()));
    else if (a == "--warmup") o.warmup = static_cast<int>(parse_int(a, val()));
    else if (a == "--math-iters") o.math_iters = static_cast<int>(parse_int(a, val()));
    else if (a == "--no-check") o.check = false;
    else if (a == "--no-math") o.math = false;
    else if (a == "--no-flush-l2") o.flush_l2 = false;
    else if (a == "--seed") o.seed = static_cast<uint64_t>(parse_int(a, val()));
    else if (a == "--json") o.json = val();
    else die("unknown option '" + a + "' (see --help)");
  }
  if (o.device != "auto" && o.device != "cpu" && o.device != "cuda") die("--device expects auto, cpu or cuda");
  if (o.op != "fwd" && o.op != "bwd" && o.op != "fwd_bwd") die("--op expects fwd, bwd or fwd_bwd");
  if (!o.dtype.empty() && o.dtype != "fp16" && o.dtype != "bf16" && o.dtype != "fp32")
    die("--dtype expects fp16, bf16 or fp32");
  if (o.dropout < 0.f || o.dropout >= 1.f) die("--dropout expects a probability in [0, 1)");
  return o;
}

// ---- Host numerics ---------------------------------------------------------------------------------------

uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);                       // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

float bf16_to_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t float_to_fp16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t au = u & 0x7fffffffu;
  if (au > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (au >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (au < 0x38800000u) {                                              // subnormal half (or zero)
    float a;
    std::memcpy(&a, &au, 4);
    const float scaled = a * 16777216.f;  // 2^24: one half subnormal ulp = 1
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  uint32_t m = au + 0xfffu + ((au >> 13) & 1u);  // round mantissa to 10 bits, nearest even
  return static_cast<uint16_t>(sign | ((m - 0x38000000u) >> 13));
}

float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  float f;
  if (exp == 0) {
    f = std::ldexp(static_cast<float>(man), -24);
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u |= sign;
    std::memcpy(&f, &u, 4);
    return f;
  }
  const uint32_t u = sign | (exp == 31 ? (0xffu << 23) | (man << 13) : ((exp + 112u) << 23) | (man << 13));
  std::memcpy(&f, &u, 4);
  return f;
}

size_t dtype_size(int dt) { return dt == fab::kFP32 ? 4 : 2; }

const char* dtype_name(int dt) { return dt == fab::kFP32 ? "fp32" : dt == fab::kFP16 ? "fp16" : "bf16"; }

int dtype_from_name(const std::string& s) {
  return s == "fp32" ? fab::kFP32 : s == "fp16" ? fab::kFP16 : fab::kBF16;
}

double load_elem(const void* base, int dt, size_t i) {
  if (dt == fab::kFP32) return static_cast<const float*>(base)[i];
  const uint16_t h = static_cast<const uint16_t*>(base)[i];
  return dt == fab::kFP16 ? fp16_to_float(h) : bf16_to_float(h);
}

void store_elem(void* base, int dt, size_t i, float x) {
  if (dt == fab::kFP32) static_cast<float*>(base)[i] = x;
  else static_cast<uint16_t*>(base)[i] = dt == fab::kFP16 ? float_to_fp16(x) : float_to_bf16(x);
}

// splitmix64: fast, seedable, and good enough to make inputs that are random and never zero.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform on [-sqrt(3), sqrt(3)): unit variance, like the randn inputs of the FA benchmarks.
  float unit() { return (static_cast<float>(next() >> 40) * (1.f / 16777216.f) * 2.f - 1.f) * 1.7320508f; }
};

// ---- Buffers (host or device) ------------------------------------------------------------------------------

class Buffer {
 public:
  Buffer() = default;
  Buffer(size_t bytes, bool gpu) : bytes_(bytes), gpu_(gpu) {
    if (bytes == 0) return;
#if FLASHATTN_BENCH_CUDA
    if (gpu) { ptr_ = fab::gpu_alloc(bytes); return; }
#endif
    ptr_ = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!ptr_) throw std::runtime_error("out of host memory allocating " + std::to_string(bytes) + " bytes");
  }
  ~Buffer() { release(); }
  Buffer(Buffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_), gpu_(o.gpu_) { o.ptr_ = nullptr; }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) { release(); ptr_ = o.ptr_; bytes_ = o.bytes_; gpu_ = o.gpu_; o.ptr_ = nullptr; }
    return *this;
  }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  void upload(const void* src) {
#if FLASHATTN_BENCH_CUDA
    if (gpu_) { fab::gpu_upload(ptr_, src, bytes_); return; }
#endif
    std::memcpy(ptr_, src, bytes_);
  }
  std::vector<uint8_t> download() const {
    std::vector<uint8_t> h(bytes_);
#if FLASHATTN_BENCH_CUDA
    if (gpu_) { fab::gpu_download(h.data(), ptr_, bytes_); return h; }
#endif
    if (bytes_) std::memcpy(h.data(), ptr_, bytes_);
    return h;
  }

 private:
  void release() {
    if (!ptr_) return;
#if FLASHATTN_BENCH_CUDA
    if (gpu_) { fab::gpu_free(ptr_); ptr_ = nullptr; return; }
#endif
    std::free(ptr_);
    ptr_ = nullptr;
  }
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  bool gpu_ = false;
};

// ---- Library errors ---------------------------------------------------------------------------------------

struct LibError : std::runtime_error {
  flashattn_status status;
  LibError(flashattn_status s, const std::string& what) : std::runtime_error(what), status(s) {}
};

void lib_check(flashattn_status s, const char* call) {
  if (s == FLASHATTN_STATUS_OK) return;
  const char* msg = flashattn_last_error();
  throw LibError(s, std::string(call) + " returned " + flashattn_status_string(s) + ": " + (msg ? msg : ""));
}

// ---- FLOPs, formatting ------------------------------------------------------------------------------------

// The FlashAttention convention: 4 * b * sq * sk * h * d, halved when causal. A sliding window has no
// convention there; counting the visible (i, j) pairs exactly is the only number that makes a windowed run
// comparable to a full one (bench/common.py uses the same rule).
bool has_window(const Problem& p) { return p.window_left >= 0 || (!p.causal && p.window_right >= 0); }

double fwd_flops(const Problem& p) {
  const double full = 4.0 * p.batch * p.seqlen_q * p.seqlen_k * p.nheads * p.headdim;
  if (!has_window(p)) return p.causal ? full / 2 : full;
  double pairs = 0;
  for (int64_t i = 0; i < p.seqlen_q; ++i) {
    const fab::KeyRange r = fab::key_range(p, i);
    if (r.hi >= r.lo) pairs += static_cast<double>(r.hi - r.lo + 1);
  }
  return 4.0 * p.batch * p.nheads * p.headdim * pairs;
}

double op_flops(const Problem& p, const std::string& op) {
  const double f = fwd_flops(p);
  return op == "fwd" ? f : op == "bwd" ? 2.5 * f : 3.5 * f;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) { b /= 1024; ++u; }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

const char* path_name(int32_t path) {
  switch (path) {
    case FLASHATTN_PATH_CPU: return "cpu";
    case FLASHATTN_PATH_SM75: return "sm75";
    case FLASHATTN_PATH_SM80: return "sm80";
    case FLASHATTN_PATH_SM90: return "sm90";
    default: return "auto";
  }
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') { o += '\\'; o += c; }
    else if (static_cast<unsigned char>(c) < 0x20) o += ' ';
    else o += c;
  }
  return o;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t c = line.find(':');
      if (c != std::string::npos) {
        std::string m = line.substr(c + 1);
        m.erase(0, m.find_first_not_of(" \t"));
        return m;
      }
    }
  return "unknown";
}

std::string git_commit() {
  if (const char* env = std::getenv("FLASHATTN_COMMIT")) return env;
  std::string out;
  if (FILE* f = popen("git rev-parse HEAD 2>/dev/null", "r")) {
    char buf[128];
    while (std::fgets(buf, sizeof buf, f)) out += buf;
    pclose(f);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out.empty() ? "unknown" : out;
}

// ---- CPU reference: plain loops in fp64, P materialised -------------------------------------------------------

struct HostInputs {
  std::vector<double> q, k, v, dout;  // the exact values the library sees, widened
  std::vector<float> alibi, sinks;    // per query head, empty when off
};

struct CpuReference {
  std::vector<double> out, dq, dk, dv;
  size_t matrix_bytes = 0;
};

// out[b, i, h, :] = sum_j P[b, h, i, j] v[b, j, h / ratio, :]; the backward reuses P (dS from dP = dO . v).
void cpu_reference(const Problem& p, const HostInputs& in, bool with_bwd, CpuReference* r) {
  const int64_t B = p.batch, SQ = p.seqlen_q, SK = p.seqlen_k, H = p.nheads, HK = p.nheads_k, D = p.headdim;
  const int64_t ratio = H / HK;
  const size_t nq = B * SQ * H * D, nk = B * SK * HK * D;
  std::vector<double> P(static_cast<size_t>(B * H * SQ * SK));
  r->matrix_bytes = P.size() * sizeof(double);
  r->out.assign(nq, 0.0);
  if (with_bwd) { r->dq.assign(nq, 0.0); r->dk.assign(nk, 0.0); r->dv.assign(nk, 0.0); }
  auto qrow = [&](int64_t b, int64_t i, int64_t h) { return ((b * SQ + i) * H + h) * D; };
  auto krow = [&](int64_t b, int64_t j, int64_t g) { return ((b * SK + j) * HK + g) * D; };
  auto dot = [D](const double* a, const double* b) {
    double s = 0;
    for (int64_t c = 0; c < D; ++c) s += a[c] * b[c];
    return s;
  };
  // One task per (batch, kv head): dK/dV of a GQA group are accumulated by one thread only.
#pragma omp parallel for schedule(dynamic)
  for (int64_t bg = 0; bg < B * HK; ++bg) {
    const int64_t b = bg / HK, g = bg % HK;
    for (int64_t h = g * ratio; h < (g + 1) * ratio; ++h) {
      const double slope = in.alibi.empty() ? 0.0 : in.alibi[h];
      for (int64_t i = 0; i < SQ; ++i) {
        double* prow = &P[static_cast<size_t>(((b * H + h) * SQ + i) * SK)];
        const fab::KeyRange kr = fab::key_range(p, i);
        const double* qi = &in.q[qrow(b, i, h)];
        double m = -INFINITY;
        for (int64_t j = kr.lo; j <= kr.hi; ++j) {
          prow[j] = fab::logit<double>(p, dot(qi, &in.k[krow(b, j, g)]), slope, i, j);
          m = std::max(m, prow[j]);
        }
        const double sink = in.sinks.empty() ? -INFINITY : in.sinks[h];
        m = std::max(m, sink);
        double sum = in.sinks.empty() || m == -INFINITY ? 0.0 : std::exp(sink - m);
        for (int64_t j = kr.lo; j <= kr.hi; ++j) sum += std::exp(prow[j] - m);
        double* o = &r->out[qrow(b, i, h)];
        for (int64_t j = 0; j < SK; ++j) {
          prow[j] = (j >= kr.lo && j <= kr.hi && sum > 0) ? std::exp(prow[j] - m) / sum : 0.0;
          if (prow[j] != 0.0) {
            const double* vj = &in.v[krow(b, j, g)];
            for (int64_t c = 0; c < D; ++c) o[c] += prow[j] * vj[c];
          }
        }
      }
      if (!with_bwd) continue;
      for (int64_t i = 0; i < SQ; ++i) {
        const double* prow = &P[static_cast<size_t>(((b * H + h) * SQ + i) * SK)];
        const double* qi = &in.q[qrow(b, i, h)];
        const double* doi = &in.dout[qrow(b, i, h)];
        const double di = dot(doi, &r->out[qrow(b, i, h)]);
        double* dqi = &r->dq[qrow(b, i, h)];
        const fab::KeyRange kr = fab::key_range(p, i);
        for (int64_t j = kr.lo; j <= kr.hi; ++j) {
          const double* kj = &in.k[krow(b, j, g)];
          const double* vj = &in.v[krow(b, j, g)];
          const double ds = prow[j] * (dot(doi, vj) - di) * fab::dlogit_dqk<double>(p, dot(qi, kj));
          double* dkj = &r->dk[krow(b, j, g)];
          double* dvj = &r->dv[krow(b, j, g)];
          for (int64_t c = 0; c < D; ++c) {
            dqi[c] += ds * kj[c];
            dkj[c] += ds * qi[c];
            dvj[c] += prow[j] * doi[c];
          }
        }
      }
    }
  }
}

// ---- The benchmark ----------------------------------------------------------------------------------------

struct Row {
  std::string impl, op, path, note;
  double ms = 0, tflops = 0;
  double err = -1;  // < 0: not checked
  size_t mem = 0;
  std::string mem_note;
};

struct Result {
  std::string machine;  // GPU name, or cpu-<model>
  std::string device_desc;
  Problem p{};
  std::string plan_path, kernel;
  int threads = 0;
  std::vector<Row> rows;
  double ref_max = 0;
  std::vector<std::string> notes;
};

flashattn_tensor make_tensor(void* data, int dtype, bool gpu, int dev, std::vector<int64_t> shape) {
  flashattn_tensor t = flashattn_tensor_none();
  t.data = data;
  t.dtype = dtype;
  t.device_type = gpu ? FLASHATTN_DEVICE_CUDA : FLASHATTN_DEVICE_CPU;
  t.device_id = gpu ? dev : 0;
  t.ndim = static_cast<int32_t>(shape.size());
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.shape[d] = shape[d];
    t.strides[d] = stride;
    stride *= shape[d];
  }
  return t;
}

// Max |a - ref| over n elements of a (dtype dt, host copy) against ref.
double max_err(const std::vector<uint8_t>& a, int dt, const double* ref, size_t n, double* ref_max) {
  double e = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = load_elem(a.data(), dt, i);
    e = std::max(e, std::isfinite(x) ? std::fabs(x - ref[i]) : INFINITY);
    if (ref_max) *ref_max = std::max(*ref_max, std::fabs(ref[i]));
  }
  return e;
}

class Bench {
 public:
  Bench(const Options& o, bool gpu, const std::string& gpu_name) : o_(o), gpu_(gpu), gpu_name_(gpu_name) {}
  Result run();

 private:
  void resolve_problem();
  void make_inputs();
  template <typename F> std::vector<double> time_runs(int iters, int warmup, F&& f);

  const Options& o_;
  bool gpu_;
  std::string gpu_name_;
  Problem p_{};
  int dev_ = 0;
  HostInputs host_;
  Buffer q_, k_, v_, dout_, alibi_, sinks_;
  std::vector<uint8_t> q_bits_, k_bits_, v_bits_, do_bits_;
  Buffer flush_;
};

void Bench::resolve_problem() {
  // Defaults: the FA README's favourite GPU point; on the CPU one that runs in seconds on 2 cores.
  auto pick = [](int64_t v, int64_t def) { return v > 0 ? v : def; };
  p_.batch = pick(o_.batch, gpu_ ? 2 : 1);
  p_.seqlen_q = pick(o_.seqlen_q, gpu_ ? 4096 : 1024);
  p_.seqlen_k = pick(o_.seqlen_k, o_.seqlen_q > 0 ? p_.seqlen_q : (gpu_ ? 4096 : 1024));
  p_.nheads = pick(o_.nheads, gpu_ ? 16 : 8);
  p_.nheads_k = pick(o_.nheads_k, p_.nheads);
  p_.headdim = pick(o_.headdim, gpu_ ? 128 : 64);
  p_.dtype = o_.dtype.empty() ? (gpu_ ? fab::kBF16 : fab::kFP32) : dtype_from_name(o_.dtype);
  p_.causal = o_.causal;
  p_.window_left = o_.window_left;
  p_.window_right = o_.causal ? 0 : o_.window_right;
  p_.softcap = o_.softcap;
  p_.scale = o_.scale > 0 ? o_.scale : 1.f / std::sqrt(static_cast<float>(p_.headdim));
  if (p_.nheads % p_.nheads_k) die("--heads must be a multiple of --heads-k");
}

void Bench::make_inputs() {
  Rng rng{o_.seed};
  const size_t nq = p_.batch * p_.seqlen_q * p_.nheads * p_.headdim;
  const size_t nk = p_.batch * p_.seqlen_k * p_.nheads_k * p_.headdim;
  const int dt = p_.dtype;
  const bool need_do = o_.op != "fwd";
  auto fill = [&](size_t n, std::vector<uint8_t>* bits, std::vector<double>* wide) {
    bits->resize(n * dtype_size(dt));
    if (o_.check) wide->resize(n);
    for (size_t i = 0; i < n; ++i) {
      float x = rng.unit();
      if (x == 0.f) x = 0.5f;
      store_elem(bits->data(), dt, i, x);
      if (o_.check) (*wide)[i] = load_elem(bits->data(), dt, i);  // the rounded value the library sees
    }
  };
  fill(nq, &q_bits_, &host_.q);
  fill(nk, &k_bits_, &host_.k);
  fill(nk, &v_bits_, &host_.v);
  if (need_do) fill(nq, &do_bits_, &host_.dout);
  auto up = [&](const std::vector<uint8_t>& bits) {
    Buffer b(bits.size(), gpu_);
    b.upload(bits.data());
    return b;
  };
  q_ = up(q_bits_);
  k_ = up(k_bits_);
  v_ = up(v_bits_);
  if (need_do) dout_ = up(do_bits_);
  if (o_.alibi) {
    // The ALiBi paper's geometric slopes 2^(-8 (h+1) / H).
    for (int64_t h = 0; h < p_.nheads; ++h)
      host_.alibi.push_back(std::pow(2.f, -8.f * static_cast<float>(h + 1) / static_cast<float>(p_.nheads)));
    alibi_ = Buffer(p_.nheads * sizeof(float), gpu_);
    alibi_.upload(host_.alibi.data());
  }
  if (o_.sinks) {
    for (int64_t h = 0; h < p_.nheads; ++h) host_.sinks.push_back(rng.unit());
    sinks_ = Buffer(p_.nheads * sizeof(float), gpu_);
    sinks_.upload(host_.sinks.data());
  }
}

template <typename F>
std::vector<double> Bench::time_runs(int iters, int warmup, F&& f) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> ms;
#if FLASHATTN_BENCH_CUDA
  if (gpu_) {
    fab::GpuTimer t;
    fab::gpu_sync();
    for (int i = 0; i < iters; ++i) {
      // A memset of a buffer larger than L2 evicts the inputs, so each run reads them from HBM as it would
      // inside a model.
      if (flush_.get()) fab::gpu_memset(flush_.get(), i & 0xff, flush_.bytes());
      t.start();
      f();
      ms.push_back(t.stop_ms());
    }
    return ms;
  }
#endif
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return ms;
}

Result Bench::run() {
  resolve_problem();
  Result res;
  res.p = p_;
  dev_ = o_.device_id;
  const bool fwd_only = o_.op == "fwd";
  if (gpu_) {
#if FLASHATTN_BENCH_CUDA
    fab::gpu_set_device(dev_);
    if (o_.flush_l2) flush_ = Buffer(size_t(256) << 20, true);
#endif
    res.machine = gpu_name_;
    res.device_desc = "cuda:" + std::to_string(dev_) + " (" + gpu_name_ + ")";
  } else {
    lib_check(flashattn_set_num_threads(o_.threads), "flashattn_set_num_threads");
    res.threads = flashattn_get_num_threads();
    omp_set_num_threads(res.threads > 0 ? res.threads : omp_get_max_threads());
    res.machine = "CPU " + cpu_model();
    res.device_desc = "cpu (" + cpu_model() + "), " + std::to_string(res.threads) + " threads";
  }
  make_inputs();

  const int dt = p_.dtype;
  const int64_t B = p_.batch, SQ = p_.seqlen_q, SK = p_.seqlen_k, H = p_.nheads, HK = p_.nheads_k, D = p_.headdim;
  Buffer out(B * SQ * H * D * dtype_size(dt), gpu_), lse(B * H * SQ * sizeof(float), gpu_);
  flashattn_fwd_args fa;
  flashattn_fwd_args_init(&fa);
  fa.q = make_tensor(q_.get(), dt, gpu_, dev_, {B, SQ, H, D});
  fa.k = make_tensor(k_.get(), dt, gpu_, dev_, {B, SK, HK, D});
  fa.v = make_tensor(v_.get(), dt, gpu_, dev_, {B, SK, HK, D});
  fa.out = make_tensor(out.get(), dt, gpu_, dev_, {B, SQ, H, D});
  fa.lse = make_tensor(lse.get(), FLASHATTN_DTYPE_FP32, gpu_, dev_, {B, H, SQ});
  fa.opt.softmax_scale = p_.scale;
  fa.opt.causal = p_.causal;
  fa.opt.window_left = p_.window_left;
  fa.opt.window_right = p_.window_right;
  fa.opt.softcap = p_.softcap;
  if (alibi_.get()) fa.opt.alibi_slopes = make_tensor(alibi_.get(), FLASHATTN_DTYPE_FP32, gpu_, dev_, {H});
  if (sinks_.get()) fa.opt.sinks = make_tensor(sinks_.get(), FLASHATTN_DTYPE_FP32, gpu_, dev_, {H});
  fa.opt.dropout_p = o_.dropout;
  fa.opt.dropout_seed = o_.seed;
  fa.opt.deterministic = o_.deterministic ? 1 : 0;

  flashattn_plan_info plan;
  std::memset(&plan, 0, sizeof plan);
  plan.struct_size = sizeof plan;
  lib_check(flashattn_fwd_plan(&fa, &plan), "flashattn_fwd_plan");
  res.plan_path = path_name(plan.path);
  res.kernel = plan.kernel;
  size_t ws_fwd = 0;
  lib_check(flashattn_fwd_workspace_size(&fa, &ws_fwd), "flashattn_fwd_workspace_size");
  Buffer wsf(ws_fwd, gpu_);
  auto run_fwd = [&] { lib_check(flashattn_fwd(&fa, wsf.get(), ws_fwd, nullptr), "flashattn_fwd"); };
  run_fwd();  // first call: surfaces NOT_BUILT before any timing, and produces out/lse for the backward

  flashattn_bwd_args ba;
  flashattn_bwd_args_init(&ba);
  Buffer dq, dk, dv, dsinks, wsb;
  size_t ws_bwd = 0;
  if (!fwd_only) {
    dq = Buffer(B * SQ * H * D * dtype_size(dt), gpu_);
    dk = Buffer(B * SK * HK * D * dtype_size(dt), gpu_);
    dv = Buffer(B * SK * HK * D * dtype_size(dt), gpu_);
    ba.q = fa.q; ba.k = fa.k; ba.v = fa.v; ba.out = fa.out; ba.lse = fa.lse;
    ba.dout = make_tensor(dout_.get(), dt, gpu_, dev_, {B, SQ, H, D});
    ba.dq = make_tensor(dq.get(), dt, gpu_, dev_, {B, SQ, H, D});
    ba.dk = make_tensor(dk.get(), dt, gpu_, dev_, {B, SK, HK, D});
    ba.dv = make_tensor(dv.get(), dt, gpu_, dev_, {B, SK, HK, D});
    if (sinks_.get()) {
      dsinks = Buffer(H * sizeof(float), gpu_);
      ba.dsinks = make_tensor(dsinks.get(), FLASHATTN_DTYPE_FP32, gpu_, dev_, {H});
    }
    ba.opt = fa.opt;
    flashattn_plan_info bplan;
    std::memset(&bplan, 0, sizeof bplan);
    bplan.struct_size = sizeof bplan;
    lib_check(flashattn_bwd_plan(&ba, &bplan), "flashattn_bwd_plan");
    if (o_.op == "bwd") { res.plan_path = path_name(bplan.path); res.kernel = bplan.kernel; }
    lib_check(flashattn_bwd_workspace_size(&ba, &ws_bwd), "flashattn_bwd_workspace_size");
    wsb = Buffer(ws_bwd, gpu_);
  }
  auto run_bwd = [&] { lib_check(flashattn_bwd(&ba, wsb.get(), ws_bwd, nullptr), "flashattn_bwd"); };
  if (!fwd_only) run_bwd();

  const int iters = o_.iters > 0 ? o_.iters : (gpu_ ? 30 : 5);
  const int warmup = o_.warmup >= 0 ? o_.warmup : (gpu_ ? 5 : 1);
  std::vector<double> ms;
  if (o_.op == "fwd") ms = time_runs(iters, warmup, run_fwd);
  else if (o_.op == "bwd") ms = time_runs(iters, warmup, run_bwd);
  else ms = time_runs(iters, warmup, [&] { run_fwd(); run_bwd(); });
  // The backward reads the forward's out/lse; recompute them once more so the check sees a matching pair.
  if (!fwd_only) { run_fwd(); run_bwd(); }

  const double flops = op_flops(p_, o_.op);
  Row fa_row;
  fa_row.impl = "flashattn";
  fa_row.op = o_.op;
  fa_row.path = res.plan_path;
  fa_row.ms = median(ms);
  fa_row.tflops = flops / (fa_row.ms * 1e-3) / 1e12;
  const size_t outputs = out.bytes() + lse.bytes() + (fwd_only ? 0 : dq.bytes() + dk.bytes() + dv.bytes() + dsinks.bytes());
  const size_t ws_total = ws_fwd + (fwd_only ? 0 : ws_bwd);
  fa_row.mem = outputs + ws_total;
  fa_row.mem_note = "workspace " + human_bytes(ws_total) + " + outputs " + human_bytes(outputs);

  const bool check = o_.check && o_.dropout == 0.f;
  if (o_.check && o_.dropout > 0.f)
    res.notes.push_back("accuracy not checked: the reference has no dropout mask (Philox stream is the library's)");
  std::vector<uint8_t> h_out, h_dq, h_dk, h_dv;
  if (check) {
    h_out = out.download();
    if (!fwd_only) { h_dq = dq.download(); h_dk = dk.download(); h_dv = dv.download(); }
  }
  const size_t nq = B * SQ * H * D, nk = B * SK * HK * D;
  // Error of a set of outputs (fwd: out; bwd: the largest of dq, dk, dv) against the reference arrays.
  auto errors = [&](const double* ro, const double* rdq, const double* rdk, const double* rdv,
                    const std::vector<uint8_t>& o, const std::vector<uint8_t>& gq, const std::vector<uint8_t>& gk,
                    const std::vector<uint8_t>& gv, int odt) {
    double ref_max = 0;
    if (fwd_only) {
      const double e = max_err(o, odt, ro, nq, &ref_max);
      res.ref_max = ref_max;
      return e;
    }
    double e = max_err(gq, odt, rdq, nq, &ref_max);
    e = std::max(e, max_err(gk, odt, rdk, nk, &ref_max));
    e = std::max(e, max_err(gv, odt, rdv, nk, &ref_max));
    res.ref_max = ref_max;
    return e;
  };

  Row math_row;
  math_row.impl = "math";
  math_row.op = o_.op;
  const int math_iters = o_.math_iters > 0 ? o_.math_iters : (gpu_ ? iters : 1);

  if (!gpu_) {
    CpuReference ref;
    const double nmat = static_cast<double>(B) * H * SQ * SK;
    if ((check || o_.math) && nmat * 8 > 16e9) {
      res.notes.push_back("standard attention skipped: its P matrix would take " + human_bytes(nmat * 8));
    } else if (check || o_.math) {
      if (!check) {  // timing only still needs widened inputs
        auto widen = [&](const std::vector<uint8_t>& bits, std::vector<double>* w) {
          const size_t n = bits.size() / dtype_size(dt);
          w->resize(n);
          for (size_t i = 0; i < n; ++i) (*w)[i] = load_elem(bits.data(), dt, i);
        };
        widen(q_bits_, &host_.q); widen(k_bits_, &host_.k); widen(v_bits_, &host_.v);
        if (!fwd_only) widen(do_bits_, &host_.dout);
      }
      std::vector<double> rms = time_runs(o_.math ? math_iters : 1, 0, [&] { cpu_reference(p_, host_, !fwd_only, &ref); });
      if (check) {
        fa_row.err = errors(ref.out.data(), ref.dq.data(), ref.dk.data(), ref.dv.data(), h_out, h_dq, h_dk, h_dv, dt);
      }
      if (o_.math) {
        math_row.ms = median(rms);
        math_row.tflops = flops / (math_row.ms * 1e-3) / 1e12;
        math_row.mem = ref.matrix_bytes;
        math_row.mem_note = "P matrix (fp64)";
        math_row.note = "fp64 loops (the reference)";
        math_row.path = "cpu";
        res.rows.push_back(fa_row);
        res.rows.push_back(math_row);
        return res;
      }
    }
    res.rows.push_back(fa_row);
    return res;
  }

#if FLASHATTN_BENCH_CUDA
  const int math_warmup = warmup;
  const float* alibi_h = host_.alibi.empty() ? nullptr : host_.alibi.data();
  const float* sinks_h = host_.sinks.empty() ? nullptr : host_.sinks.data();
  std::vector<double> ref_o, ref_dq, ref_dk, ref_dv;
  auto fetch = [](const float* dptr, size_t n) {
    std::vector<float> h(n);
    fab::gpu_download(h.data(), dptr, n * sizeof(float));
    return std::vector<double>(h.begin(), h.end());
  };
  auto as_bits = [](const std::vector<double>& v) {
    std::vector<uint8_t> b(v.size() * sizeof(float));
    for (size_t i = 0; i < v.size(); ++i) store_elem(b.data(), fab::kFP32, i, static_cast<float>(v[i]));
    return b;
  };
  // Each standard-attention object is destroyed before the next is built: they hold the S/P matrices.
  if (check) {
    try {
      fab::GpuStandardAttention ref(p_, fab::kFP32, !fwd_only, q_.get(), k_.get(), v_.get(), dout_.get(), alibi_h,
                                    sinks_h);
      ref.forward();
      if (!fwd_only) ref.backward();
      fab::gpu_sync();
      ref_o = fetch(ref.out(), nq);
      if (!fwd_only) { ref_dq = fetch(ref.dq(), nq); ref_dk = fetch(ref.dk(), nk); ref_dv = fetch(ref.dv(), nk); }
      fa_row.err = errors(ref_o.data(), ref_dq.data(), ref_dk.data(), ref_dv.data(), h_out, h_dq, h_dk, h_dv, dt);
    } catch (const std::exception& e) {
      res.notes.push_back(std::string("accuracy not checked: fp32 standard attention failed: ") + e.what());
    }
  }
  if (o_.math) {
    try {
      fab::GpuStandardAttention m(p_, dt, !fwd_only, q_.get(), k_.get(), v_.get(), dout_.get(), alibi_h, sinks_h);
      std::vector<double> mms;
      if (o_.op == "fwd") mms = time_runs(math_iters, math_warmup, [&] { m.forward(); });
      else if (o_.op == "bwd") { m.forward(); mms = time_runs(math_iters, math_warmup, [&] { m.backward(); }); }
      else mms = time_runs(math_iters, math_warmup, [&] { m.forward(); m.backward(); });
      math_row.ms = median(mms);
      math_row.tflops = flops / (math_row.ms * 1e-3) / 1e12;
      math_row.mem = m.matrix_bytes();
      math_row.mem_note = fwd_only ? "S fp32 + P" : "S fp32 + P + dP fp32";
      math_row.note = std::string("cuBLAS, operands ") + dtype_name(dt) + ", fp32 accumulate";
      // Standard attention in the input dtype is the FA rule's "low precision" baseline.
      if (!ref_o.empty()) {
        fab::gpu_sync();
        if (fwd_only) {
          math_row.err = max_err(as_bits(fetch(m.out(), nq)), fab::kFP32, ref_o.data(), nq, nullptr);
        } else {
          double e = max_err(as_bits(fetch(m.dq(), nq)), fab::kFP32, ref_dq.data(), nq, nullptr);
          e = std::max(e, max_err(as_bits(fetch(m.dk(), nk)), fab::kFP32, ref_dk.data(), nk, nullptr));
          math_row.err = std::max(e, max_err(as_bits(fetch(m.dv(), nk)), fab::kFP32, ref_dv.data(), nk, nullptr));
        }
      }
    } catch (const std::exception& e) {
      res.notes.push_back(std::string("standard attention not timed: ") + e.what());
      math_row.ms = 0;
    }
  }
  res.rows.push_back(fa_row);
  if (o_.math && math_row.ms > 0) res.rows.push_back(math_row);
#endif
  return res;
}

// ---- Output --------------------------------------------------------------------------------------------

void print_result(const Result& r, const Options& o) {
  const Problem& p = r.p;
  std::printf("device    %s\n", r.device_desc.c_str());
  std::printf("problem   %s %s  b=%lld sq=%lld sk=%lld h=%lld hk=%lld d=%lld  causal=%d window=", o.op.c_str(),
              dtype_name(p.dtype), (long long)p.batch, (long long)p.seqlen_q, (long long)p.seqlen_k,
              (long long)p.nheads, (long long)p.nheads_k, (long long)p.headdim, p.causal);
  if (!has_window(p)) std::printf("none");
  else std::printf("%d,%d", p.window_left, p.window_right);
  std::printf(" softcap=%g alibi=%d sinks=%d dropout=%g deterministic=%d\n", p.softcap, o.alibi ? 1 : 0,
              o.sinks ? 1 : 0, o.dropout, o.deterministic ? 1 : 0);
  std::printf("plan      path=%s kernel=%s\n", r.plan_path.c_str(), r.kernel.empty() ? "-" : r.kernel.c_str());
  const bool cpu = r.plan_path == "cpu";
  std::printf("\n%-10s %-8s %12s %12s %11s  %s\n", "impl", "op", "median ms", cpu ? "GFLOP/s" : "TFLOP/s",
              "max|err|", "memory");
  for (const Row& row : r.rows) {
    char err[32];
    if (row.err < 0) std::snprintf(err, sizeof err, "%s", row.impl == "math" && cpu ? "reference" : "-");
    else std::snprintf(err, sizeof err, "%.3e", row.err);
    std::printf("%-10s %-8s %12.4f %12.3f %11s  %s (%s)\n", row.impl.c_str(), row.op.c_str(), row.ms,
                cpu ? row.tflops * 1e3 : row.tflops, err, human_bytes(static_cast<double>(row.mem)).c_str(),
                row.mem_note.c_str());
  }
  for (const Row& row : r.rows)
    if (!row.note.empty()) std::printf("  %s: %s\n", row.impl.c_str(), row.note.c_str());
  if (r.ref_max > 0) std::printf("  reference max|value| = %.3e\n", r.ref_max);
  if (r.rows.size() == 2 && r.rows[0].ms > 0 && r.rows[1].ms > 0)
    std::printf("  speedup over standard attention: %.2fx, memory %.1fx smaller\n", r.rows[1].ms / r.rows[0].ms,
                r.rows[0].mem ? static_cast<double>(r.rows[1].mem) / r.rows[0].mem : 0.0);
  // The FA accuracy rule (docs/design.md): flashattn's error at most 2x (fwd) / 3x (grads) that of standard
  // attention computed in the input dtype.
  if (!cpu && r.rows.size() == 2 && r.rows[0].err >= 0 && r.rows[1].err >= 0 && p.dtype != fab::kFP32) {
    const double k = o.op == "fwd" ? 2.0 : 3.0, tol = o.op == "fwd" ? 1e-5 : 1e-4;
    const bool ok = r.rows[0].err <= k * r.rows[1].err + tol;
    std::printf("  FA accuracy rule (err <= %.0fx standard attention's + %.0e): %s\n", k, tol, ok ? "pass" : "FAIL");
  }
  for (const std::string& n : r.notes) std::printf("  note: %s\n", n.c_str());
}

void write_json(const Result& r, const Options& o, const std::string& file) {
  const Problem& p = r.p;
  std::time_t now = std::time(nullptr);
  char date[16];
  std::strftime(date, sizeof date, "%Y-%m-%d", std::localtime(&now));
  std::ostringstream js;
  js.precision(6);
  js << "{\"gpu\": \"" << json_escape(r.machine) << "\", \"commit\": \"" << json_escape(git_commit())
     << "\", \"date\": \"" << date << "\", \"read_ceiling_tbps\": null, \"matmul_tflops\": null,"
     << " \"tool\": \"flashattn-bench\", \"records\": [";
  bool first = true;
  for (const Row& row : r.rows) {
    js << (first ? "\n  " : ",\n  ") << "{\"op\": \"" << row.op << "\", \"impl\": \"" << row.impl << "\", \"path\": ";
    first = false;
    if (row.impl == "flashattn") js << "\"" << row.path << "\"";
    else js << "null";
    js << ", \"dtype\": \"" << dtype_name(p.dtype) << "\", \"headdim\": " << p.headdim
       << ", \"causal\": " << (p.causal ? "true" : "false") << ", \"window\": ";
    if (!has_window(p)) js << "null";
    else js << "[" << p.window_left << ", " << p.window_right << "]";
    js << ", \"softcap\": " << p.softcap << ", \"alibi\": " << (o.alibi ? "true" : "false")
       << ", \"sinks\": " << (o.sinks ? "true" : "false") << ", \"batch\": " << p.batch
       << ", \"seqlen_q\": " << p.seqlen_q << ", \"seqlen_k\": " << p.seqlen_k << ", \"nheads\": " << p.nheads
       << ", \"nheads_k\": " << p.nheads_k << ", \"dropout_p\": " << o.dropout << ", \"page_size\": null"
       << ", \"deterministic\": " << (o.deterministic ? "true" : "false")
       << ", \"ms\": " << row.ms << ", \"tflops\": " << row.tflops << ", \"peak_mem_bytes\": " << row.mem;
    // JSON has no inf: a non-finite output is recorded as null with a flag.
    if (row.err >= 0 && std::isfinite(row.err)) js << ", \"max_abs_err\": " << row.err;
    else if (row.err >= 0) js << ", \"max_abs_err\": null, \"nonfinite_output\": true";
    if (row.impl == "flashattn" && !r.kernel.empty()) js << ", \"kernel\": \"" << json_escape(r.kernel) << "\"";
    if (r.plan_path == "cpu") js << ", \"threads\": " << r.threads;
    if (!row.note.empty()) js << ", \"note\": \"" << json_escape(row.note) << "\"";
    js << "}";
  }
  js << "\n]}\n";
  std::ofstream f(file);
  if (!f) die("cannot write " + file);
  f << js.str();
}

}  // namespace

int main(int argc, char** argv) {
  const Options opts = parse(argc, argv);
  flashattn_build_info info;
  std::memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  flashattn_build_info_get(&info);
  std::printf("flashattn-bench: flashattn %s (ABI %d), CUDA kernels %s%s%s\n", flashattn_version(),
              flashattn_abi_version(), info.cuda_enabled ? "built for archs " : "not built",
              info.cuda_enabled ? info.archs : "", info.cuda_enabled ? "" : " (CPU backend only)");

  // Pick the device: the GPU when the library has CUDA and a device answers, unless told otherwise.
  bool use_gpu = false;
  std::string gpu_name, why_not = "the library was built without CUDA";
#if FLASHATTN_BENCH_CUDA
  if (info.cuda_enabled && opts.device != "cpu") {
    try {
      use_gpu = fab::gpu_probe(opts.device_id, &gpu_name, &why_not);
    } catch (const std::exception& e) {
      why_not = e.what();
    }
  }
#endif
  if (opts.device == "cuda" && !use_gpu) die("--device cuda requested but no GPU can be used: " + why_not, 3);
  if (opts.device == "auto" && !use_gpu) std::printf("no GPU    %s: running the CPU backend\n", why_not.c_str());

  Result res;
  try {
    res = Bench(opts, use_gpu, gpu_name).run();
  } catch (const LibError& e) {
    const bool unavailable = e.status == FLASHATTN_STATUS_NOT_BUILT || e.status == FLASHATTN_STATUS_NOT_SUPPORTED;
    if (!use_gpu || !unavailable || opts.device == "cuda") {
      std::fprintf(stderr, "flashattn-bench: %s\n", e.what());
      return e.status == FLASHATTN_STATUS_NOT_BUILT ? 4 : 1;
    }
    // Never silent: a GPU number that is really a CPU number would be worse than none.
    std::printf("\n"
                "################################################################################\n"
                "##  GPU RUN NOT POSSIBLE: %s\n"
                "##  FALLING BACK TO THE CPU BACKEND (pass --device cuda to fail instead).\n"
                "##  The numbers below are CPU numbers%s.\n"
                "################################################################################\n\n",
                e.what(), opts.batch < 0 && opts.seqlen_q < 0 ? ", for the CPU default shape" : "");
    try {
      res = Bench(opts, false, "").run();
    } catch (const std::exception& e2) {
      std::fprintf(stderr, "flashattn-bench: CPU fallback failed too: %s\n", e2.what());
      return 1;
    }
    res.notes.push_back("FELL BACK TO THE CPU: the GPU op is not available in this build");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "flashattn-bench: %s\n", e.what());
    return 1;
  }
  print_result(res, opts);
  if (!opts.json.empty()) {
    write_json(res, opts, opts.json);
    std::printf("wrote %s\n", opts.json.c_str());
  }
  return 0;
}
