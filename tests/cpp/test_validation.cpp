// Every validation error: each case starts from a valid call, breaks one thing, and asserts the status and
// that flashattn_last_error() names the offending argument (by its C struct field name).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <ostream>

#include "util.h"

namespace {

using fatest::HostTensor;
using fatest::make_fp32;
using fatest::make_int32;
using fatest::make_int32_2d;

enum class Op { kFwd, kVarlen, kPaged, kPagedVarlen, kBwd, kVarlenBwd, kKv, kKvPaged, kCombine };

constexpr flashattn_dtype F16 = FLASHATTN_DTYPE_FP16;
constexpr flashattn_dtype F32 = FLASHATTN_DTYPE_FP32;

// Valid arguments for every operation, plus storage for tensors the mutations create.
struct Fix {
  // dims: batch 2, seqlen_q 8, seqlen_k 12, heads 4, kv heads 2, head_dim 16
  HostTensor q{F16, {2, 8, 4, 16}}, k{F16, {2, 12, 2, 16}}, v{F16, {2, 12, 2, 16}}, out{F16, {2, 8, 4, 16}},
      lse{F32, {2, 4, 8}};
  HostTensor vq{F16, {13, 4, 16}}, vk{F16, {20, 2, 16}}, vv{F16, {20, 2, 16}}, vout{F16, {13, 4, 16}},
      vlse{F32, {4, 13}};
  HostTensor cu_q = make_int32({0, 5, 13}), cu_k = make_int32({0, 9, 20});
  HostTensor pool_k{F16, {6, 4, 2, 16}}, pool_v{F16, {6, 4, 2, 16}};
  HostTensor table = make_int32_2d(2, 3, {4, 0, 2, 1, 5, 3}), seqused = make_int32({9, 11});
  HostTensor dout{F16, {2, 8, 4, 16}}, dq{F16, {2, 8, 4, 16}}, dk{F16, {2, 12, 2, 16}}, dv{F16, {2, 12, 2, 16}};
  HostTensor vdout{F16, {13, 4, 16}}, vdq{F16, {13, 4, 16}}, vdk{F16, {20, 2, 16}}, vdv{F16, {20, 2, 16}};
  // KV cache: q (2, 3, 4, 16), cache rows 3 x capacity 20, 2 new tokens, rotary_dim 8.
  HostTensor kq{F16, {2, 3, 4, 16}}, kcache{F16, {3, 20, 2, 16}}, vcache{F16, {3, 20, 2, 16}}, knew{F16, {2, 2, 2, 16}},
      vnew{F16, {2, 2, 2, 16}}, kout{F16, {2, 3, 4, 16}}, klse{F32, {2, 4, 3}};
  HostTensor cache_seqlens = make_int32({5, 10}), cos{F16, {20, 4}}, sin{F16, {20, 4}};
  HostTensor kpool_k{F16, {10, 4, 2, 16}}, kpool_v{F16, {10, 4, 2, 16}};
  HostTensor ktable = make_int32_2d(2, 5, {0, 2, 4, 6, 8, 1, 3, 5, 7, 9});
  // Combine: 3 splits.
  HostTensor opart{F32, {3, 2, 8, 4, 16}}, lpart{F32, {3, 2, 4, 8}}, cout{F16, {2, 8, 4, 16}}, clse{F32, {2, 4, 8}};
  HostTensor alibi = make_fp32({0.1, 0.2, 0.3, 0.4}, {4}), sinks = make_fp32({0.1, 0.2, 0.3, 0.4}, {4});
  HostTensor dsinks{F32, {4}};

  std::vector<HostTensor> keep;  // tensors made by mutations live as long as the fixture
  flashattn_fwd_args fwd;
  flashattn_bwd_args bwd;
  flashattn_kvcache_args kv;
  flashattn_combine_args comb;
  bool shrink_workspace = false;

  flashattn_tensor make(flashattn_dtype dt, std::vector<int64_t> shape) {
    keep.emplace_back(dt, std::move(shape));
    std::mt19937_64 rng(keep.size());
    keep.back().fill_uniform(rng, 0.1, 1.0);
    return keep.back().desc();
  }
  flashattn_tensor ints(const std::vector<int32_t>& v) {
    keep.push_back(make_int32(v));
    return keep.back().desc();
  }

  explicit Fix(Op op) {
    std::mt19937_64 rng(3);
    for (HostTensor* t : {&q, &k, &v, &vq, &vk, &vv, &pool_k, &pool_v, &dout, &vdout, &kq, &kcache, &vcache, &knew,
                          &vnew, &kpool_k, &kpool_v, &opart, &cos, &sin})
      t->fill_normal(rng);
    lse.fill_uniform(rng, 1, 2);
    vlse.fill_uniform(rng, 1, 2);
    lpart.fill_uniform(rng, -1, 1);
    flashattn_fwd_args_init(&fwd);
    flashattn_bwd_args_init(&bwd);
    flashattn_kvcache_args_init(&kv);
    flashattn_combine_args_init(&comb);
    const bool varlen = op == Op::kVarlen || op == Op::kPagedVarlen || op == Op::kVarlenBwd;
    if (varlen) {
      fwd.q = vq.desc();
      fwd.out = vout.desc();
      fwd.lse = vlse.desc();
      fwd.cu_seqlens_q = cu_q.desc();
      fwd.max_seqlen_q = 8;
      fwd.max_seqlen_k = 12;
      fwd.k = vk.desc();
      fwd.v = vv.desc();
      fwd.cu_seqlens_k = cu_k.desc();
    } else {
      fwd.q = q.desc();
      fwd.k = k.desc();
      fwd.v = v.desc();
      fwd.out = out.desc();
      fwd.lse = lse.desc();
    }
    if (op == Op::kPaged || op == Op::kPagedVarlen) {
      fwd.k = pool_k.desc();
      fwd.v = pool_v.desc();
      fwd.block_table = table.desc();
      fwd.cu_seqlens_k = flashattn_tensor_none();
      if (op == Op::kPagedVarlen) fwd.seqused_k = seqused.desc();
    }
    if (op == Op::kBwd || op == Op::kVarlenBwd) {
      bwd.q = fwd.q;
      bwd.k = fwd.k;
      bwd.v = fwd.v;
      bwd.out = fwd.out;
      bwd.lse = fwd.lse;
      bwd.dout = varlen ? vdout.desc() : dout.desc();
      bwd.dq = varlen ? vdq.desc() : dq.desc();
      bwd.dk = varlen ? vdk.desc() : dk.desc();
      bwd.dv = varlen ? vdv.desc() : dv.desc();
      if (varlen) {
        bwd.cu_seqlens_q = cu_q.desc();
        bwd.cu_seqlens_k = cu_k.desc();
        bwd.max_seqlen_q = 8;
        bwd.max_seqlen_k = 12;
      }
      // A real forward produces the out/lse that backward consumes.
      size_t ws = 0;
      flashattn_fwd_workspace_size(&fwd, &ws);
      std::vector<uint8_t> w(ws + 64);
      (varlen ? flashattn_varlen_fwd : flashattn_fwd)(&fwd, w.data(), ws, nullptr);
    }
    kv.q = kq.desc();
    kv.k_cache = kcache.desc();
    kv.v_cache = vcache.desc();
    kv.k_new = knew.desc();
    kv.v_new = vnew.desc();
    kv.out = kout.desc();
    kv.lse = klse.desc();
    kv.cache_seqlens = cache_seqlens.desc();
    kv.rotary_cos = cos.desc();
    kv.rotary_sin = sin.desc();
    if (op == Op::kKvPaged) {
      kv.k_cache = kpool_k.desc();
      kv.v_cache = kpool_v.desc();
      kv.block_table = ktable.desc();
    }
    comb.out_partial = opart.desc();
    comb.lse_partial = lpart.desc();
    comb.out = cout.desc();
    comb.lse = clse.desc();
  }
};

// Calls the operation: workspace query first (a failure there is the call's answer), then the run.
flashattn_status call(Op op, Fix& f) {
  size_t ws = 0;
  flashattn_status st = FLASHATTN_STATUS_OK;
  switch (op) {
    case Op::kFwd:
    case Op::kVarlen:
    case Op::kPaged:
    case Op::kPagedVarlen: st = flashattn_fwd_workspace_size(&f.fwd, &ws); break;
    case Op::kBwd:
    case Op::kVarlenBwd: st = flashattn_bwd_workspace_size(&f.bwd, &ws); break;
    case Op::kKv:
    case Op::kKvPaged: st = flashattn_kvcache_workspace_size(&f.kv, &ws); break;
    case Op::kCombine: return flashattn_combine(&f.comb, nullptr);
  }
  if (st != FLASHATTN_STATUS_OK) return st;
  size_t give = ws;
  if (f.shrink_workspace) {
    if (ws == 0) return FLASHATTN_STATUS_INTERNAL;  // cannot shrink: the test reports it
    give = ws - 1;
  }
  std::vector<uint8_t> w(ws + 64);
  switch (op) {
    case Op::kFwd:
    case Op::kPaged: return flashattn_fwd(&f.fwd, w.data(), give, nullptr);
    case Op::kVarlen:
    case Op::kPagedVarlen: return flashattn_varlen_fwd(&f.fwd, w.data(), give, nullptr);
    case Op::kBwd: return flashattn_bwd(&f.bwd, w.data(), give, nullptr);
    case Op::kVarlenBwd: return flashattn_varlen_bwd(&f.bwd, w.data(), give, nullptr);
    case Op::kKv:
    case Op::kKvPaged: return flashattn_fwd_kvcache(&f.kv, w.data(), give, nullptr);
    default: return FLASHATTN_STATUS_INTERNAL;
  }
}

struct VCase {
  const char* name;
  Op op;
  std::function<void(Fix&)> mutate;
  flashattn_status status;
  const char* needle;  // must appear in flashattn_last_error()
};
void PrintTo(const VCase& c, std::ostream* os) { *os << c.name; }

constexpr auto INV = FLASHATTN_STATUS_INVALID_ARGUMENT;
constexpr auto META = FLASHATTN_STATUS_BAD_METADATA;

std::vector<VCase> validation_cases() {
  std::vector<VCase> v;
  auto add = [&](const char* n, Op op, std::function<void(Fix&)> m, flashattn_status st, const char* needle) {
    v.push_back({n, op, std::move(m), st, needle});
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // The valid baselines must pass: they make every other case mean "this one change is rejected".
  for (auto [n, op] : {std::pair<const char*, Op>{"valid_fwd", Op::kFwd},
                       {"valid_varlen", Op::kVarlen},
                       {"valid_paged", Op::kPaged},
                       {"valid_paged_varlen", Op::kPagedVarlen},
                       {"valid_bwd", Op::kBwd},
                       {"valid_varlen_bwd", Op::kVarlenBwd},
                       {"valid_kvcache", Op::kKv},
                       {"valid_kvcache_paged", Op::kKvPaged},
                       {"valid_combine", Op::kCombine}})
    add(n, op, [](Fix&) {}, FLASHATTN_STATUS_OK, "");

  // ---- struct handling ----
  add("fwd_struct_size_small", Op::kFwd, [](Fix& f) { f.fwd.struct_size = 8; }, INV, "struct_size");
  add("bwd_struct_size_zero", Op::kBwd, [](Fix& f) { f.bwd.struct_size = 0; }, INV, "struct_size");
  add("kv_struct_size_small", Op::kKv, [](Fix& f) { f.kv.struct_size = sizeof(f.kv) - 8; }, INV, "struct_size");
  add("combine_struct_size_small", Op::kCombine, [](Fix& f) { f.comb.struct_size = 4; }, INV, "struct_size");

  // ---- required tensors, ndim, dtype, device, layout ----
  add("q_missing", Op::kFwd, [](Fix& f) { f.fwd.q = flashattn_tensor_none(); }, INV, "q");
  add("k_missing", Op::kFwd, [](Fix& f) { f.fwd.k = flashattn_tensor_none(); }, INV, "k");
  add("v_missing", Op::kFwd, [](Fix& f) { f.fwd.v = flashattn_tensor_none(); }, INV, "v");
  add("out_missing", Op::kFwd, [](Fix& f) { f.fwd.out = flashattn_tensor_none(); }, INV, "out");
  add("q_ndim", Op::kFwd, [](Fix& f) { f.fwd.q.ndim = 3; }, INV, "q");
  add("k_ndim", Op::kFwd, [](Fix& f) { f.fwd.k.ndim = 5; }, INV, "k");
  add("q_ndim_zero", Op::kFwd, [](Fix& f) { f.fwd.q.ndim = 0; }, INV, "q");
  add("q_dtype_int32", Op::kFwd, [](Fix& f) { f.fwd.q.dtype = FLASHATTN_DTYPE_INT32; }, INV, "q");
  add("q_dtype_garbage", Op::kFwd, [](Fix& f) { f.fwd.q.dtype = 77; }, INV, "q");
  add("k_dtype_differs", Op::kFwd, [](Fix& f) { f.fwd.k = f.make(FLASHATTN_DTYPE_BF16, {2, 12, 2, 16}); }, INV, "k");
  add("v_dtype_differs", Op::kFwd, [](Fix& f) { f.fwd.v = f.make(F32, {2, 12, 2, 16}); }, INV, "v");
  add("out_dtype_differs", Op::kFwd, [](Fix& f) { f.fwd.out = f.make(F32, {2, 8, 4, 16}); }, INV, "out");
  add("lse_dtype_fp16", Op::kFwd, [](Fix& f) { f.fwd.lse = f.make(F16, {2, 4, 8}); }, INV, "lse");
  add("alibi_dtype_fp16", Op::kFwd, [](Fix& f) { f.fwd.opt.alibi_slopes = f.make(F16, {4}); }, INV, "alibi_slopes");
  add("sinks_dtype_fp16", Op::kFwd, [](Fix& f) { f.fwd.opt.sinks = f.make(F16, {4}); }, INV, "sinks");
  add("cu_seqlens_q_int64", Op::kVarlen, [](Fix& f) { f.fwd.cu_seqlens_q = f.make(FLASHATTN_DTYPE_INT64, {3}); }, INV,
      "cu_seqlens_q");
  add("cu_seqlens_k_fp32", Op::kVarlen, [](Fix& f) { f.fwd.cu_seqlens_k = f.make(F32, {3}); }, INV, "cu_seqlens_k");
  add("block_table_int64", Op::kPaged, [](Fix& f) { f.fwd.block_table = f.make(FLASHATTN_DTYPE_INT64, {2, 3}); },
      INV, "block_table");
  add("seqused_k_fp32", Op::kPagedVarlen, [](Fix& f) { f.fwd.seqused_k = f.make(F32, {2}); }, INV, "seqused_k");
  add("k_on_cuda", Op::kFwd, [](Fix& f) { f.fwd.k.device_type = FLASHATTN_DEVICE_CUDA; }, INV, "k");
  add("out_on_cuda", Op::kFwd, [](Fix& f) { f.fwd.out.device_type = FLASHATTN_DEVICE_CUDA; }, INV, "out");
  add("lse_on_cuda", Op::kFwd, [](Fix& f) { f.fwd.lse.device_type = FLASHATTN_DEVICE_CUDA; }, INV, "lse");
  add("cu_seqlens_q_on_cuda", Op::kVarlen, [](Fix& f) { f.fwd.cu_seqlens_q.device_type = FLASHATTN_DEVICE_CUDA; },
      INV, "cu_seqlens_q");
  add("q_bad_device_type", Op::kFwd, [](Fix& f) { f.fwd.q.device_type = 9; }, INV, "q");
  add("q_last_dim_strided", Op::kFwd, [](Fix& f) { f.fwd.q.strides[3] = 2; }, INV, "q");
  add("k_last_dim_strided", Op::kFwd, [](Fix& f) { f.fwd.k.strides[3] = 2; }, INV, "k");
  add("out_last_dim_strided", Op::kFwd, [](Fix& f) { f.fwd.out.strides[3] = 2; }, INV, "out");
  add("q_negative_shape", Op::kFwd, [](Fix& f) { f.fwd.q.shape[1] = -1; }, INV, "q");

  // ---- sizes and shapes ----
  add("head_dim_zero", Op::kFwd, [](Fix& f) {
    f.fwd.q = f.make(F16, {2, 8, 4, 0});
    f.fwd.k = f.make(F16, {2, 12, 2, 0});
    f.fwd.v = f.make(F16, {2, 12, 2, 0});
    f.fwd.out = f.make(F16, {2, 8, 4, 0});
  }, INV, "head_dim");
  add("head_dim_257", Op::kFwd, [](Fix& f) {
    f.fwd.q = f.make(F16, {1, 2, 1, 257});
    f.fwd.k = f.make(F16, {1, 2, 1, 257});
    f.fwd.v = f.make(F16, {1, 2, 1, 257});
    f.fwd.out = f.make(F16, {1, 2, 1, 257});
    f.fwd.lse = flashattn_tensor_none();
  }, INV, "head_dim");
  add("heads_not_divisible", Op::kFwd, [](Fix& f) {
    f.fwd.k = f.make(F16, {2, 12, 3, 16});
    f.fwd.v = f.make(F16, {2, 12, 3, 16});
  }, INV, "k");
  add("k_v_shape_mismatch", Op::kFwd, [](Fix& f) { f.fwd.v = f.make(F16, {2, 11, 2, 16}); }, INV, "v");
  add("k_batch_mismatch", Op::kFwd, [](Fix& f) {
    f.fwd.k = f.make(F16, {3, 12, 2, 16});
    f.fwd.v = f.make(F16, {3, 12, 2, 16});
  }, INV, "k");
  add("k_head_dim_mismatch", Op::kFwd, [](Fix& f) {
    f.fwd.k = f.make(F16, {2, 12, 2, 32});
    f.fwd.v = f.make(F16, {2, 12, 2, 32});
  }, INV, "k");
  add("out_shape_mismatch", Op::kFwd, [](Fix& f) { f.fwd.out = f.make(F16, {2, 7, 4, 16}); }, INV, "out");
  add("lse_shape_mismatch", Op::kFwd, [](Fix& f) { f.fwd.lse = f.make(F32, {2, 8, 4}); }, INV, "lse");
  add("varlen_lse_shape", Op::kVarlen, [](Fix& f) { f.fwd.lse = f.make(F32, {2, 4, 8}); }, INV, "lse");
  add("cu_seqlens_q_shape", Op::kVarlen, [](Fix& f) { f.fwd.cu_seqlens_q = f.ints({0, 5, 9, 13}); }, INV,
      "cu_seqlens");
  add("cu_seqlens_k_shape", Op::kVarlen, [](Fix& f) { f.fwd.cu_seqlens_k = f.ints({0, 20}); }, INV, "cu_seqlens_k");
  add("varlen_without_cu_seqlens_q", Op::kVarlen, [](Fix& f) { f.fwd.cu_seqlens_q = flashattn_tensor_none(); }, INV,
      "cu_seqlens_q");
  add("varlen_without_cu_seqlens_k", Op::kVarlen, [](Fix& f) { f.fwd.cu_seqlens_k = flashattn_tensor_none(); }, INV,
      "cu_seqlens_k");
  add("cu_seqlens_k_without_q", Op::kFwd, [](Fix& f) { f.fwd.cu_seqlens_k = f.ints({0, 12, 24}); }, INV,
      "cu_seqlens_k");
  add("max_seqlen_q_negative", Op::kVarlen, [](Fix& f) { f.fwd.max_seqlen_q = -1; }, INV, "max_seqlen_q");
  add("block_table_rows", Op::kPaged, [](Fix& f) {
    f.keep.push_back(make_int32_2d(3, 2, {0, 1, 2, 3, 4, 5}));
    f.fwd.block_table = f.keep.back().desc();
  }, INV, "block_table");
  add("block_table_ndim", Op::kPaged, [](Fix& f) { f.fwd.block_table = f.ints({0, 1, 2}); }, INV, "block_table");
  add("page_size_zero", Op::kPaged, [](Fix& f) {
    f.fwd.k = f.make(F16, {6, 0, 2, 16});
    f.fwd.v = f.make(F16, {6, 0, 2, 16});
  }, INV, "page");
  add("paged_varlen_without_seqused_k", Op::kPagedVarlen, [](Fix& f) { f.fwd.seqused_k = flashattn_tensor_none(); },
      INV, "seqused_k");
  add("paged_varlen_with_cu_seqlens_k", Op::kPagedVarlen, [](Fix& f) { f.fwd.cu_seqlens_k = f.cu_k.desc(); }, INV,
      "cu_seqlens_k");
  add("seqused_k_shape", Op::kPagedVarlen, [](Fix& f) { f.fwd.seqused_k = f.ints({9, 11, 3}); }, INV, "seqused_k");
  add("alibi_shape_h", Op::kFwd, [](Fix& f) { f.fwd.opt.alibi_slopes = f.make(F32, {3}); }, INV, "alibi_slopes");
  add("alibi_shape_bh", Op::kFwd, [](Fix& f) { f.fwd.opt.alibi_slopes = f.make(F32, {3, 4}); }, INV, "alibi_slopes");
  add("alibi_ndim3", Op::kFwd, [](Fix& f) { f.fwd.opt.alibi_slopes = f.make(F32, {1, 2, 4}); }, INV, "alibi_slopes");
  add("sinks_shape", Op::kFwd, [](Fix& f) { f.fwd.opt.sinks = f.make(F32, {2}); }, INV, "sinks");

  // ---- option values ----
  add("window_left_below_minus1", Op::kFwd, [](Fix& f) { f.fwd.opt.window_left = -2; }, INV, "window_left");
  add("window_right_below_minus1", Op::kFwd, [](Fix& f) { f.fwd.opt.window_right = -5; }, INV, "window_right");
  add("softcap_negative", Op::kFwd, [](Fix& f) { f.fwd.opt.softcap = -1; }, INV, "softcap");
  add("softcap_nan", Op::kFwd, [nan](Fix& f) { f.fwd.opt.softcap = nan; }, INV, "softcap");
  add("dropout_p_one", Op::kFwd, [](Fix& f) { f.fwd.opt.dropout_p = 1.0f; }, INV, "dropout_p");
  add("dropout_p_negative", Op::kFwd, [](Fix& f) { f.fwd.opt.dropout_p = -0.1f; }, INV, "dropout_p");
  add("dropout_p_nan", Op::kFwd, [nan](Fix& f) { f.fwd.opt.dropout_p = nan; }, INV, "dropout_p");
  add("softcap_with_dropout", Op::kFwd, [](Fix& f) {
    f.fwd.opt.softcap = 5;
    f.fwd.opt.dropout_p = 0.1f;
  }, INV, "dropout_p");
  add("dropout_in_kvcache", Op::kKv, [](Fix& f) { f.kv.opt.dropout_p = 0.1f; }, INV, "dropout_p");
  add("num_splits_negative", Op::kFwd, [](Fix& f) { f.fwd.opt.num_splits = -1; }, INV, "num_splits");
  add("num_splits_257", Op::kFwd, [](Fix& f) { f.fwd.opt.num_splits = 257; }, INV, "num_splits");
  add("num_splits_in_bwd", Op::kBwd, [](Fix& f) { f.bwd.opt.num_splits = 4; }, INV, "num_splits");
  add("softmax_scale_inf", Op::kFwd, [](Fix& f) { f.fwd.opt.softmax_scale = INFINITY; }, INV, "softmax_scale");
  add("rng_state_wrong_dtype", Op::kFwd, [](Fix& f) {
    f.fwd.opt.dropout_p = 0.1f;
    f.fwd.opt.dropout_rng_state = f.make(F32, {2});
  }, INV, "dropout_rng_state");
  add("rng_state_wrong_shape", Op::kFwd, [](Fix& f) {
    f.fwd.opt.dropout_p = 0.1f;
    f.fwd.opt.dropout_rng_state = f.make(FLASHATTN_DTYPE_INT64, {3});
  }, INV, "dropout_rng_state");

  // ---- backward ----
  add("bwd_lse_missing", Op::kBwd, [](Fix& f) { f.bwd.lse = flashattn_tensor_none(); }, INV, "lse");
  add("bwd_dout_missing", Op::kBwd, [](Fix& f) { f.bwd.dout = flashattn_tensor_none(); }, INV, "dout");
  add("bwd_dq_missing", Op::kBwd, [](Fix& f) { f.bwd.dq = flashattn_tensor_none(); }, INV, "dq");
  add("bwd_dk_shape", Op::kBwd, [](Fix& f) { f.bwd.dk = f.make(F16, {2, 12, 4, 16}); }, INV, "dk");
  add("bwd_dv_dtype", Op::kBwd, [](Fix& f) { f.bwd.dv = f.make(FLASHATTN_DTYPE_BF16, {2, 12, 2, 16}); }, INV, "dv");
  add("bwd_dout_shape", Op::kBwd, [](Fix& f) { f.bwd.dout = f.make(F16, {2, 8, 4, 8}); }, INV, "dout");
  add("bwd_dq_last_dim_strided", Op::kBwd, [](Fix& f) { f.bwd.dq.strides[3] = 3; }, INV, "dq");
  add("bwd_dsinks_without_sinks", Op::kBwd, [](Fix& f) { f.bwd.dsinks = f.dsinks.desc(); }, INV, "dsinks");
  add("bwd_dsinks_shape", Op::kBwd, [](Fix& f) {
    f.bwd.opt.sinks = f.sinks.desc();
    f.bwd.dsinks = f.make(F32, {5});
  }, INV, "dsinks");
  add("bwd_lse_shape", Op::kBwd, [](Fix& f) { f.bwd.lse = f.make(F32, {2, 4, 9}); }, INV, "lse");

  // ---- KV cache ----
  add("kv_k_new_without_v_new", Op::kKv, [](Fix& f) { f.kv.v_new = flashattn_tensor_none(); }, INV, "v_new");
  add("kv_v_new_without_k_new", Op::kKv, [](Fix& f) {
    f.kv.k_new = flashattn_tensor_none();
    f.kv.rotary_cos = f.kv.rotary_sin = flashattn_tensor_none();
  }, INV, "k_new");
  add("kv_k_new_shape", Op::kKv, [](Fix& f) { f.kv.k_new = f.make(F16, {2, 2, 4, 16}); }, INV, "k_new");
  add("kv_v_new_shape", Op::kKv, [](Fix& f) { f.kv.v_new = f.make(F16, {2, 3, 2, 16}); }, INV, "v_new");
  add("kv_k_new_dtype", Op::kKv, [](Fix& f) { f.kv.k_new = f.make(FLASHATTN_DTYPE_BF16, {2, 2, 2, 16}); }, INV,
      "k_new");
  add("kv_cache_seqlens_missing", Op::kKv, [](Fix& f) { f.kv.cache_seqlens = flashattn_tensor_none(); }, INV,
      "cache_seqlens");
  add("kv_cache_seqlens_shape", Op::kKv, [](Fix& f) { f.kv.cache_seqlens = f.ints({5, 10, 1}); }, INV,
      "cache_seqlens");
  add("kv_cache_seqlens_dtype", Op::kKv, [](Fix& f) { f.kv.cache_seqlens = f.make(F32, {2}); }, INV, "cache_seqlens");
  add("kv_cache_batch_idx_shape", Op::kKv, [](Fix& f) { f.kv.cache_batch_idx = f.ints({0}); }, INV,
      "cache_batch_idx");
  add("kv_cache_leftpad_shape", Op::kKv, [](Fix& f) { f.kv.cache_leftpad = f.ints({0, 0, 0}); }, INV,
      "cache_leftpad");
  add("kv_rotary_cos_without_sin", Op::kKv, [](Fix& f) { f.kv.rotary_sin = flashattn_tensor_none(); }, INV,
      "rotary_sin");
  add("kv_rotary_sin_without_cos", Op::kKv, [](Fix& f) { f.kv.rotary_cos = flashattn_tensor_none(); }, INV,
      "rotary_cos");
  add("kv_rotary_dim_gt_head_dim", Op::kKv, [](Fix& f) {
    f.kv.rotary_cos = f.make(F16, {20, 9});
    f.kv.rotary_sin = f.make(F16, {20, 9});
  }, INV, "rotary_cos");
  add("kv_rotary_sin_shape_differs", Op::kKv, [](Fix& f) { f.kv.rotary_sin = f.make(F16, {20, 3}); }, INV,
      "rotary_sin");
  add("kv_rotary_dtype", Op::kKv, [](Fix& f) {
    f.kv.rotary_cos = f.make(F32, {20, 4});
    f.kv.rotary_sin = f.make(F32, {20, 4});
  }, INV, "rotary_cos");
  add("kv_seqlen_ro_too_short", Op::kKv, [](Fix& f) {
    f.kv.rotary_cos = f.make(F16, {3, 4});
    f.kv.rotary_sin = f.make(F16, {3, 4});
  }, INV, "rotary_cos");
  add("kv_paged_with_batch_idx", Op::kKvPaged, [](Fix& f) { f.kv.cache_batch_idx = f.ints({0, 1}); }, INV,
      "cache_batch_idx");
  add("kv_paged_with_leftpad", Op::kKvPaged, [](Fix& f) { f.kv.cache_leftpad = f.ints({0, 1}); }, INV,
      "cache_leftpad");
  add("kv_k_cache_missing", Op::kKv, [](Fix& f) { f.kv.k_cache = flashattn_tensor_none(); }, INV, "k_cache");
  add("kv_v_cache_shape", Op::kKv, [](Fix& f) { f.kv.v_cache = f.make(F16, {3, 19, 2, 16}); }, INV, "v_cache");
  add("kv_out_shape", Op::kKv, [](Fix& f) { f.kv.out = f.make(F16, {2, 3, 4, 8}); }, INV, "out");
  add("kv_lse_shape", Op::kKv, [](Fix& f) { f.kv.lse = f.make(F32, {2, 3, 4}); }, INV, "lse");
  add("kv_too_few_cache_rows", Op::kKv, [](Fix& f) {
    f.kv.k_cache = f.make(F16, {1, 20, 2, 16});
    f.kv.v_cache = f.make(F16, {1, 20, 2, 16});
  }, INV, "k_cache");
  add("kv_alibi_shape", Op::kKv, [](Fix& f) { f.kv.opt.alibi_slopes = f.make(F32, {5}); }, INV, "alibi_slopes");

  // ---- combine ----
  add("combine_out_partial_dtype", Op::kCombine, [](Fix& f) { f.comb.out_partial = f.make(F16, {3, 2, 8, 4, 16}); },
      INV, "out_partial");
  add("combine_lse_partial_shape", Op::kCombine, [](Fix& f) { f.comb.lse_partial = f.make(F32, {2, 2, 4, 8}); }, INV,
      "lse_partial");
  add("combine_out_shape", Op::kCombine, [](Fix& f) { f.comb.out = f.make(F16, {2, 8, 4, 8}); }, INV, "out");
  add("combine_out_missing", Op::kCombine, [](Fix& f) { f.comb.out = flashattn_tensor_none(); }, INV, "out");
  add("combine_sinks_shape", Op::kCombine, [](Fix& f) { f.comb.sinks = f.make(F32, {3}); }, INV, "sinks");
  add("combine_too_many_splits", Op::kCombine, [](Fix& f) {
    f.comb.out_partial = f.make(F32, {257, 1, 1, 1, 8});
    f.comb.lse_partial = f.make(F32, {257, 1, 1, 1});
    f.comb.out = f.make(F32, {1, 1, 1, 8});
    f.comb.lse = flashattn_tensor_none();
  }, INV, "out_partial");

  // ---- workspace ----
  add("fwd_workspace_too_small", Op::kFwd, [](Fix& f) {
    f.fwd.opt.num_splits = 3;  // split-KV needs fp32 partials in the workspace
    f.shrink_workspace = true;
  }, FLASHATTN_STATUS_WORKSPACE_TOO_SMALL, "workspace");
  add("bwd_workspace_too_small", Op::kBwd, [](Fix& f) { f.shrink_workspace = true; },
      FLASHATTN_STATUS_WORKSPACE_TOO_SMALL, "workspace");

  // ---- metadata (the CPU backend always checks it) ----
  add("cu_seqlens_q_decreasing", Op::kVarlen, [](Fix& f) { f.fwd.cu_seqlens_q = f.ints({0, 6, 5}); }, META,
      "cu_seqlens_q");
  add("cu_seqlens_q_past_total", Op::kVarlen, [](Fix& f) { f.fwd.cu_seqlens_q = f.ints({0, 5, 14}); }, META,
      "cu_seqlens_q");
  add("cu_seqlens_q_negative_start", Op::kVarlen, [](Fix& f) { f.fwd.cu_seqlens_q = f.ints({-1, 5, 13}); }, META,
      "cu_seqlens_q");
  add("cu_seqlens_k_decreasing", Op::kVarlen, [](Fix& f) { f.fwd.cu_seqlens_k = f.ints({0, 9, 8}); }, META,
      "cu_seqlens_k");
  add("cu_seqlens_k_past_total", Op::kVarlen, [](Fix& f) { f.fwd.cu_seqlens_k = f.ints({0, 9, 21}); }, META,
      "cu_seqlens_k");
  add("seq_longer_than_max_seqlen_q", Op::kVarlen, [](Fix& f) { f.fwd.max_seqlen_q = 7; }, META, "cu_seqlens_q");
  add("seq_longer_than_max_seqlen_k", Op::kVarlen, [](Fix& f) { f.fwd.max_seqlen_k = 10; }, META, "cu_seqlens_k");
  add("seqused_k_above_capacity", Op::kPagedVarlen, [](Fix& f) { f.fwd.seqused_k = f.ints({9, 13}); }, META,
      "seqused_k");
  add("seqused_k_negative", Op::kPagedVarlen, [](Fix& f) { f.fwd.seqused_k = f.ints({-1, 3}); }, META, "seqused_k");
  add("seqused_k_dense_above_seqlen_k", Op::kFwd, [](Fix& f) { f.fwd.seqused_k = f.ints({12, 13}); }, META,
      "seqused_k");
  add("block_table_entry_out_of_range", Op::kPaged, [](Fix& f) {
    f.keep.push_back(make_int32_2d(2, 3, {4, 0, 6, 1, 5, 3}));
    f.fwd.block_table = f.keep.back().desc();
  }, META, "block_table");
  add("block_table_entry_negative", Op::kPagedVarlen, [](Fix& f) {
    f.keep.push_back(make_int32_2d(2, 3, {4, -1, 2, 1, 5, 3}));
    f.fwd.block_table = f.keep.back().desc();
  }, META, "block_table");
  add("kv_cache_batch_idx_out_of_range", Op::kKv, [](Fix& f) { f.kv.cache_batch_idx = f.ints({0, 3}); }, META,
      "cache_batch_idx");
  add("kv_cache_batch_idx_negative", Op::kKv, [](Fix& f) { f.kv.cache_batch_idx = f.ints({-1, 2}); }, META,
      "cache_batch_idx");
  add("kv_leftpad_above_cache_seqlens", Op::kKv, [](Fix& f) { f.kv.cache_leftpad = f.ints({6, 0}); }, META,
      "cache_leftpad");
  add("kv_cache_seqlens_overflow", Op::kKv, [](Fix& f) { f.kv.cache_seqlens = f.ints({5, 19}); }, META,
      "cache_seqlens");
  add("kv_cache_seqlens_negative", Op::kKv, [](Fix& f) { f.kv.cache_seqlens = f.ints({-3, 4}); }, META,
      "cache_seqlens");
  add("kv_paged_block_table_out_of_range", Op::kKvPaged, [](Fix& f) {
    // Entry [0][1] is read (7 keys over pages of 4); unused trailing entries may legitimately hold garbage.
    f.keep.push_back(make_int32_2d(2, 5, {0, 10, 4, 6, 8, 1, 3, 5, 7, 9}));
    f.kv.block_table = f.keep.back().desc();
  }, META, "block_table");
  add("kv_paged_cache_seqlens_overflow", Op::kKvPaged, [](Fix& f) { f.kv.cache_seqlens = f.ints({5, 19}); }, META,
      "cache_seqlens");
  return v;
}

class Validation : public ::testing::TestWithParam<VCase> {};

TEST_P(Validation, StatusAndMessage) {
  const VCase& c = GetParam();
  Fix f(c.op);
  c.mutate(f);
  const flashattn_status st = call(c.op, f);
  const std::string msg = flashattn_last_error();
  EXPECT_EQ(st, c.status) << "message: " << msg;
  if (c.status != FLASHATTN_STATUS_OK) {
    EXPECT_NE(msg.find(c.needle), std::string::npos) << "message does not name '" << c.needle << "': " << msg;
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, Validation, ::testing::ValuesIn(validation_cases()),
                         [](const ::testing::TestParamInfo<VCase>& i) { return std::string(i.param.name); });

// Null argument pointers for every entry point.
TEST(ValidationNull, EveryEntryPointRejectsNullArgs) {
  size_t ws = 0;
  flashattn_plan_info info;
  info.struct_size = sizeof(info);
  const std::pair<const char*, flashattn_status> calls[] = {
      {"fwd_workspace_size", flashattn_fwd_workspace_size(nullptr, &ws)},
      {"fwd", flashattn_fwd(nullptr, nullptr, 0, nullptr)},
      {"varlen_fwd", flashattn_varlen_fwd(nullptr, nullptr, 0, nullptr)},
      {"fwd_plan", flashattn_fwd_plan(nullptr, &info)},
      {"bwd_workspace_size", flashattn_bwd_workspace_size(nullptr, &ws)},
      {"bwd", flashattn_bwd(nullptr, nullptr, 0, nullptr)},
      {"varlen_bwd", flashattn_varlen_bwd(nullptr, nullptr, 0, nullptr)},
      {"kvcache_workspace_size", flashattn_kvcache_workspace_size(nullptr, &ws)},
      {"fwd_kvcache", flashattn_fwd_kvcache(nullptr, nullptr, 0, nullptr)},
      {"combine", flashattn_combine(nullptr, nullptr)},
      {"build_info_get", flashattn_build_info_get(nullptr)},
  };
  for (const auto& c : calls) EXPECT_EQ(c.second, FLASHATTN_STATUS_INVALID_ARGUMENT) << c.first;
}

TEST(ValidationNull, WorkspaceSizeOutputPointer) {
  Fix f(Op::kFwd);
  EXPECT_EQ(flashattn_fwd_workspace_size(&f.fwd, nullptr), FLASHATTN_STATUS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flashattn_last_error()), "");
}

TEST(ValidationNull, VarlenEntryPointRequiresCuSeqlens) {
  Fix f(Op::kFwd);
  std::vector<uint8_t> w(1 << 20);
  EXPECT_EQ(flashattn_varlen_fwd(&f.fwd, w.data(), w.size(), nullptr), FLASHATTN_STATUS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flashattn_last_error()).find("cu_seqlens_q"), std::string::npos) << flashattn_last_error();
}

// Tensors on a CUDA device in a build without CUDA: a clear "not built" (never a crash).
TEST(ValidationDevice, CudaTensorsWithoutCudaBuild) {
  flashattn_build_info bi;
  bi.struct_size = sizeof(bi);
  ASSERT_EQ(flashattn_build_info_get(&bi), FLASHATTN_STATUS_OK);
  if (bi.cuda_enabled) GTEST_SKIP() << "CUDA is built in: covered by the GPU tests";
  Fix f(Op::kFwd);
  for (flashattn_tensor* t : {&f.fwd.q, &f.fwd.k, &f.fwd.v, &f.fwd.out, &f.fwd.lse}) t->device_type = FLASHATTN_DEVICE_CUDA;
  size_t ws = 0;
  flashattn_status st = flashattn_fwd_workspace_size(&f.fwd, &ws);
  if (st == FLASHATTN_STATUS_OK) st = flashattn_fwd(&f.fwd, nullptr, 0, nullptr);
  EXPECT_EQ(st, FLASHATTN_STATUS_NOT_BUILT) << flashattn_last_error();
  EXPECT_NE(std::string(flashattn_last_error()), "");
}

}  // namespace
