#include "core/validate.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/philox.h"
#include "core/backend.h"

namespace flashattn {

namespace {

constexpr int kMaxHeadDim = 256;
constexpr int kMaxSplits = 256;
constexpr int64_t kMaxInt32 = 2147483647;

bool env_check_mode() {
  static const bool on = [] {
    const char* v = std::getenv("FLASHATTN_CHECK");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}

void check_int32_range(const char* name, int64_t v) {
  if (v > kMaxInt32) fail_arg(name, ": expected at most ", kMaxInt32, ", got ", v);
}

// The device of a call is q's; CPU and CUDA are the only devices.
Device device_of(const TensorArg& q) {
  Device d;
  d.type = q.t().device_type;
  d.id = q.t().device_id;
  if (d.type != FLASHATTN_DEVICE_CPU && d.type != FLASHATTN_DEVICE_CUDA) {
    fail_arg(q.name(), ": expected device type cpu (1) or cuda (2), got ", d.type);
  }
  return d;
}

// q/k/v/out-like tensor: present, on the device, of the compute dtype, last dim contiguous, aligned on GPU.
const TensorArg& check_data(const TensorArg& t, const Device& dev, DType dtype) {
  t.require().same_device(dev).dtype(dtype).last_dim_contiguous().gpu_vector_aligned(dev);
  return t;
}

void check_metadata_tensor(const TensorArg& t, const Device& dev, int64_t len) {
  t.require().same_device(dev).dtype(DType::kInt32).shape({len}).contiguous();
}

void check_compute_dtype(const TensorArg& q, const Device& dev) {
  if (dev.is_cuda()) {
    q.dtype_in({DType::kFP16, DType::kBF16});
  } else {
    q.dtype_in({DType::kFP32, DType::kFP16, DType::kBF16});
  }
}

void check_head_dims(const char* name, int64_t h, int64_t hk, int64_t d) {
  if (d < 1 || d > kMaxHeadDim) fail_arg(name, ": expected head_dim in [1, ", kMaxHeadDim, "], got ", d);
  if (h < 1) fail_arg(name, ": expected at least 1 head, got ", h);
  if (hk < 1 || h % hk != 0) {
    fail_arg("k: expected a number of kv heads that divides the ", h, " query heads, got ", hk);
  }
  check_int32_range(name, h);
}

// Options shared by every operation; `training` allows dropout.
void fill_options(FwdParams& p, const flashattn_options& o, const Device& dev, bool training) {
  const float scale = o.softmax_scale;
  if (std::isinf(scale)) fail_arg("softmax_scale: expected a finite value (<= 0 for the default), got ", scale);
  p.scale_softmax = (scale > 0.f) ? scale : 1.0f / std::sqrt(static_cast<float>(p.head_dim));

  if (!(o.softcap >= 0.f) || std::isinf(o.softcap)) {
    fail_arg("softcap: expected a finite value >= 0 (0 = off), got ", o.softcap);
  }
  p.softcap = o.softcap;
  // With softcap the kernel computes softcap * tanh(scale * s / softcap) first; log2(e) comes after.
  const float kLog2e = 1.4426950408889634f;
  p.scale_softmax_log2 = p.softcap > 0.f ? kLog2e : p.scale_softmax * kLog2e;

  if (o.window_left < -1) fail_arg("window_left: expected -1 (unbounded) or >= 0, got ", o.window_left);
  if (o.window_right < -1) fail_arg("window_right: expected -1 (unbounded) or >= 0, got ", o.window_right);
  p.window_left = o.window_left;
  p.window_right = o.causal ? 0 : o.window_right;
  p.is_causal = (o.causal || (p.window_left < 0 && p.window_right == 0)) ? 1 : 0;

  const TensorArg alibi("alibi_slopes", o.alibi_slopes);
  p.alibi_slopes = nullptr;
  p.alibi_batch_stride = 0;
  if (alibi.present()) {
    alibi.check_descriptor().same_device(dev).dtype(DType::kFP32).ndim_in(1, 2).last_dim_contiguous();
    if (alibi.t().ndim == 1) {
      alibi.shape({p.nheads});
    } else {
      alibi.shape({p.batch, p.nheads});
      p.alibi_batch_stride = alibi.stride(0);
    }
    p.alibi_slopes = static_cast<const float*>(alibi.t().data);
  }

  const TensorArg sinks("sinks", o.sinks);
  p.sinks = nullptr;
  if (sinks.present()) {
    sinks.check_descriptor().same_device(dev).dtype(DType::kFP32).shape({p.nheads}).contiguous();
    p.sinks = static_cast<const float*>(sinks.t().data);
  }

  if (!(o.dropout_p >= 0.f && o.dropout_p < 1.f)) {
    fail_arg("dropout_p: expected a probability in [0, 1), got ", o.dropout_p);
  }
  if (o.dropout_p > 0.f && !training) {
    fail_arg("dropout_p: dropout is a training option; this operation is inference-only, got ", o.dropout_p);
  }
  if (o.dropout_p > 0.f && p.softcap > 0.f) {
    fail_arg("dropout_p: softcap and dropout cannot be combined (as in FlashAttention-2), got dropout_p ",
             o.dropout_p, " with softcap ", p.softcap);
  }
  p.dropout_p = o.dropout_p;
  p.dropout_keep_threshold = dropout_keep_threshold(o.dropout_p);
  p.dropout_rescale = 1.0f / (1.0f - o.dropout_p);
  p.seed = o.dropout_seed;
  p.offset = o.dropout_offset;
  p.rng_state = nullptr;
  const TensorArg rng("dropout_rng_state", o.dropout_rng_state);
  if (rng.present()) {
    rng.check_descriptor().same_device(dev).dtype(DType::kInt64).shape({2}).contiguous();
    p.rng_state = static_cast<const int64_t*>(rng.t().data);
  }

  if (o.num_splits < 0 || o.num_splits > kMaxSplits) {
    fail_arg("num_splits: expected 0 (heuristic) to ", kMaxSplits, ", got ", o.num_splits);
  }
  p.num_splits = o.num_splits;
  p.batch_invariant = o.batch_invariant ? 1 : 0;
}

// Strides of a (b, s, h, d) or varlen (t, h, d) tensor into batch/row/head strides.
void strides_bshd(const TensorArg& t, bool varlen, int64_t* batch, int64_t* row, int64_t* head) {
  if (varlen) {
    *batch = 0;
    *row = t.stride(0);
    *head = t.stride(1);
  } else {
    *batch = t.stride(0);
    *row = t.stride(1);
    *head = t.stride(2);
  }
}

// LSE: (b, h, sq) or varlen (h, total_q), fp32, rows contiguous.
void fill_lse(FwdParams& p, const TensorArg& lse, const Device& dev, bool varlen, bool required) {
  p.lse = nullptr;
  p.lse_batch_stride = p.lse_head_stride = 0;
  if (!lse.present()) {
    if (required) lse.require();
    return;
  }
  lse.check_descriptor().same_device(dev).dtype(DType::kFP32).last_dim_contiguous();
  if (varlen) {
    lse.shape({p.nheads, p.total_q});
    p.lse_head_stride = lse.stride(0);
  } else {
    lse.shape({p.batch, p.nheads, p.seqlen_q});
    p.lse_batch_stride = lse.stride(0);
    p.lse_head_stride = lse.stride(1);
  }
  p.lse = static_cast<float*>(lse.t().data);
}

// Paged K/V: (num_pages, page_size, hk, d) with block_table (b, max_pages_per_seq).
void fill_paged(FwdParams& p, const TensorArg& k, const TensorArg& block_table, const Device& dev) {
  block_table.check_descriptor().same_device(dev).dtype(DType::kInt32).ndim(2).shape({p.batch, -1});
  block_table.last_dim_contiguous();
  k.ndim(4);
  if (k.size(1) < 1) fail_arg("k: expected a page size >= 1 (dim 1 of paged k), got ", k.size(1));
  check_int32_range("k", k.size(0));
  check_int32_range("k", k.size(1));
  check_int32_range("block_table", block_table.size(1));
  p.block_table = static_cast<const int32_t*>(block_table.t().data);
  p.block_table_batch_stride = block_table.stride(0);
  p.num_pages = static_cast<int32_t>(k.size(0));
  p.page_size = static_cast<int32_t>(k.size(1));
  p.max_pages_per_seq = static_cast<int32_t>(block_table.size(1));
  p.seqlen_k = static_cast<int64_t>(p.max_pages_per_seq) * p.page_size;
  check_int32_range("block_table", p.seqlen_k);
}

void set_kv_pointers(FwdParams& p, const TensorArg& k, const TensorArg& v) {
  p.k = k.t().data;
  p.v = v.t().data;
  p.k_batch_stride = k.stride(0);
  p.k_row_stride = k.stride(1);
  p.k_head_stride = k.stride(2);
  p.v_batch_stride = v.stride(0);
  p.v_row_stride = v.stride(1);
  p.v_head_stride = v.stride(2);
}

FwdParams zeroed_fwd() {
  FwdParams p;
  std::memset(&p, 0, sizeof(p));
  p.num_splits = 1;
  p.window_left = p.window_right = -1;
  return p;
}

// A gradient/derived tensor of the shape and strides-layout of `like`.
void check_same_shape(const TensorArg& t, const TensorArg& like) {
  if (t.t().ndim != like.t().ndim) {
    fail_arg(t.name(), ": expected shape ", shape_string(like.t()), " (that of ", like.name(), "), got ",
             shape_string(t.t()));
  }
  for (int d = 0; d < like.t().ndim; ++d) {
    if (t.size(d) != like.size(d)) {
      fail_arg(t.name(), ": expected shape ", shape_string(like.t()), " (that of ", like.name(), "), got ",
               shape_string(t.t()));
    }
  }
}

void check_like(const TensorArg& t, const TensorArg& like, const Device& dev, DType dt) {
  check_data(t, dev, dt);
  check_same_shape(t, like);
}

// The attention core shared by fwd and bwd: q/k/v/out/lse, varlen, paging and options.
void fill_attention(FwdParams& p, Device& dev, const flashattn_tensor& q_t, const flashattn_tensor& k_t,
                    const flashattn_tensor& v_t, const flashattn_tensor& out_t, const flashattn_tensor& lse_t,
                    const flashattn_tensor& cu_q_t, const flashattn_tensor& cu_k_t,
                    const flashattn_tensor& seqused_t, const flashattn_tensor& block_table_t, int64_t max_seqlen_q,
                    int64_t max_seqlen_k, const flashattn_options& opt, bool require_varlen, bool training,
                    bool lse_required) {
  const TensorArg q("q", q_t), k("k", k_t), v("v", v_t), out("out", out_t), lse("lse", lse_t);
  const TensorArg cu_q("cu_seqlens_q", cu_q_t), cu_k("cu_seqlens_k", cu_k_t);
  const TensorArg seqused("seqused_k", seqused_t), block_table("block_table", block_table_t);

  q.require();
  dev = device_of(q);
  check_compute_dtype(q, dev);
  const DType dt = dtype_of(q.t());
  const bool varlen = cu_q.present();
  const bool paged = block_table.present();
  if (!varlen && (require_varlen || q.t().ndim == 3)) {
    fail_arg("cu_seqlens_q: required for varlen q of shape (total_q, heads, head_dim) (int32 (batch + 1,) "
             "cumulative lengths), got none; fixed-length q is (batch, seqlen, heads, head_dim), got ",
             shape_string(q.t()));
  }
  p.dtype = dt;

  check_data(q, dev, dt).ndim(varlen ? 3 : 4);
  check_data(k, dev, dt);
  check_data(v, dev, dt);
  check_data(out, dev, dt);
  const int qd = varlen ? 2 : 3;
  p.head_dim = static_cast<int32_t>(q.size(qd));
  p.nheads = static_cast<int32_t>(std::min<int64_t>(q.size(qd - 1), kMaxInt32));
  const int64_t hk = k.t().ndim >= 2 ? k.size(k.t().ndim - 2) : 0;
  check_head_dims("q", q.size(qd - 1), hk, q.size(qd));
  p.nheads_k = static_cast<int32_t>(hk);
  p.head_ratio = p.nheads / p.nheads_k;

  if (varlen) {
    cu_q.check_descriptor().same_device(dev).dtype(DType::kInt32).ndim(1).contiguous();
    if (cu_q.size(0) < 1) fail_arg("cu_seqlens_q: expected shape (batch + 1,), got ", shape_string(cu_q.t()));
    p.batch = static_cast<int32_t>(std::min<int64_t>(cu_q.size(0) - 1, kMaxInt32));
    p.total_q = q.size(0);
    if (max_seqlen_q < 0) fail_arg("max_seqlen_q: expected >= 0, got ", max_seqlen_q);
    if (max_seqlen_k < 0) fail_arg("max_seqlen_k: expected >= 0, got ", max_seqlen_k);
    check_int32_range("max_seqlen_q", max_seqlen_q);
    check_int32_range("max_seqlen_k", max_seqlen_k);
    p.seqlen_q = max_seqlen_q;
    p.seqlen_k = max_seqlen_k;
  } else {
    if (cu_k.present()) fail_arg("cu_seqlens_k: given without cu_seqlens_q; varlen needs both");
    p.batch = static_cast<int32_t>(std::min<int64_t>(q.size(0), kMaxInt32));
    p.seqlen_q = q.size(1);
    p.total_q = q.size(0) * q.size(1);
    check_int32_range("q", p.seqlen_q);
  }
  check_int32_range("q", p.total_q);
  out.shape(varlen ? std::initializer_list<int64_t>{p.total_q, p.nheads, p.head_dim}
                   : std::initializer_list<int64_t>{p.batch, p.seqlen_q, p.nheads, p.head_dim});

  if (paged) {
    if (cu_k.present()) {
      fail_arg("cu_seqlens_k: not used with block_table (paged K/V); give seqused_k for the key lengths");
    }
    fill_paged(p, k, block_table, dev);
    k.shape({p.num_pages, p.page_size, p.nheads_k, p.head_dim});
    if (varlen && !seqused.present()) {
      fail_arg("seqused_k: required with block_table in a varlen call (the key length of each sequence)");
    }
  } else if (varlen) {
    cu_k.require();
    check_metadata_tensor(cu_k, dev, static_cast<int64_t>(p.batch) + 1);
    k.ndim(3).shape({-1, p.nheads_k, p.head_dim});
    p.total_k = k.size(0);
    check_int32_range("k", p.total_k);
    p.cu_seqlens_k = static_cast<const int32_t*>(cu_k.t().data);
  } else {
    k.ndim(4).shape({p.batch, -1, p.nheads_k, p.head_dim});
    p.seqlen_k = k.size(1);
    p.total_k = p.batch * p.seqlen_k;
    check_int32_range("k", p.seqlen_k);
  }
  check_same_shape(v, k);
  p.batch_k = p.batch;

  if (varlen) {
    check_metadata_tensor(cu_q, dev, static_cast<int64_t>(p.batch) + 1);
    p.cu_seqlens_q = static_cast<const int32_t*>(cu_q.t().data);
  }
  if (seqused.present()) {
    check_metadata_tensor(seqused, dev, p.batch);
    p.seqused_k = static_cast<const int32_t*>(seqused.t().data);
  }

  p.q = q.t().data;
  strides_bshd(q, varlen, &p.q_batch_stride, &p.q_row_stride, &p.q_head_stride);
  p.out = out.t().data;
  strides_bshd(out, varlen, &p.o_batch_stride, &p.o_row_stride, &p.o_head_stride);
  if (paged || !varlen) {
    set_kv_pointers(p, k, v);
  } else {
    p.k = k.t().data;
    p.v = v.t().data;
    strides_bshd(k, true, &p.k_batch_stride, &p.k_row_stride, &p.k_head_stride);
    strides_bshd(v, true, &p.v_batch_stride, &p.v_row_stride, &p.v_head_stride);
  }
  fill_lse(p, lse, dev, varlen, lse_required);
  fill_options(p, opt, dev, training);
}

}  // namespace

Validated<FwdParams> validate_fwd(const flashattn_fwd_args* args, bool require_varlen) {
  if (!args) fail_arg("args: expected a flashattn_fwd_args pointer, got NULL");
  check_struct_size("flashattn_fwd_args", args->struct_size, sizeof(flashattn_fwd_args), args);
  Validated<FwdParams> r;
  r.params = zeroed_fwd();
  fill_attention(r.params, r.device, args->q, args->k, args->v, args->out, args->lse, args->cu_seqlens_q,
                 args->cu_seqlens_k, args->seqused_k, args->block_table, args->max_seqlen_q, args->max_seqlen_k,
                 args->opt, require_varlen, /*training=*/true, /*lse_required=*/false);
  r.check_metadata = args->opt.check_metadata || env_check_mode();
  return r;
}

Validated<BwdParams> validate_bwd(const flashattn_bwd_args* args, bool require_varlen) {
  if (!args) fail_arg("args: expected a flashattn_bwd_args pointer, got NULL");
  check_struct_size("flashattn_bwd_args", args->struct_size, sizeof(flashattn_bwd_args), args);
  Validated<BwdParams> r;
  std::memset(&r.params, 0, sizeof(BwdParams));
  static_cast<FwdParams&>(r.params) = zeroed_fwd();
  BwdParams& p = r.params;
  fill_attention(p, r.device, args->q, args->k, args->v, args->out, args->lse, args->cu_seqlens_q,
                 args->cu_seqlens_k, flashattn_tensor{}, flashattn_tensor{}, args->max_seqlen_q,
                 args->max_seqlen_k, args->opt, require_varlen, /*training=*/true, /*lse_required=*/true);
  const bool varlen = p.cu_seqlens_q != nullptr;
  const TensorArg q("q", args->q), k("k", args->k), v("v", args->v), out("out", args->out);
  const TensorArg dout("dout", args->dout), dq("dq", args->dq), dk("dk", args->dk), dv("dv", args->dv);
  check_like(dout, out, r.device, p.dtype);
  check_like(dq, q, r.device, p.dtype);
  check_like(dk, k, r.device, p.dtype);
  check_like(dv, v, r.device, p.dtype);
  p.dout = dout.t().data;
  strides_bshd(dout, varlen, &p.do_batch_stride, &p.do_row_stride, &p.do_head_stride);
  p.dq = dq.t().data;
  strides_bshd(dq, varlen, &p.dq_batch_stride, &p.dq_row_stride, &p.dq_head_stride);
  p.dk = dk.t().data;
  strides_bshd(dk, varlen, &p.dk_batch_stride, &p.dk_row_stride, &p.dk_head_stride);
  p.dv = dv.t().data;
  strides_bshd(dv, varlen, &p.dv_batch_stride, &p.dv_row_stride, &p.dv_head_stride);
  const TensorArg dsinks("dsinks", args->dsinks);
  if (p.sinks) {
    dsinks.require().same_device(r.device).dtype(DType::kFP32).shape({p.nheads}).contiguous();
    p.dsinks = static_cast<float*>(dsinks.t().data);
  } else if (dsinks.present()) {
    fail_arg("dsinks: given without sinks (the gradient of the sink logits needs opt.sinks)");
  }
  p.deterministic = args->opt.deterministic ? 1 : 0;
  if (args->opt.num_splits > 1) fail_arg("num_splits: split-KV is a forward option, got ", args->opt.num_splits);
  r.check_metadata = args->opt.check_metadata || env_check_mode();
  return r;
}

Validated<FwdParams> validate_kvcache(const flashattn_kvcache_args* args) {
  if (!args) fail_arg("args: expected a flashattn_kvcache_args pointer, got NULL");
  check_struct_size("flashattn_kvcache_args", args->struct_size, sizeof(flashattn_kvcache_args), args);
  Validated<FwdParams> r;
  r.params = zeroed_fwd();
  FwdParams& p = r.params;
  const TensorArg q("q", args->q), kc("k_cache", args->k_cache), vc("v_cache", args->v_cache);
  const TensorArg kn("k_new", args->k_new), vn("v_new", args->v_new), out("out", args->out);
  const TensorArg seqlens("cache_seqlens", args->cache_seqlens), bidx("cache_batch_idx", args->cache_batch_idx);
  const TensorArg leftpad("cache_leftpad", args->cache_leftpad), block_table("block_table", args->block_table);
  const TensorArg cos("rotary_cos", args->rotary_cos), sin("rotary_sin", args->rotary_sin);

  q.require();
  Device& dev = r.device;
  dev = device_of(q);
  check_compute_dtype(q, dev);
  const DType dt = dtype_of(q.t());
  p.dtype = dt;
  check_data(q, dev, dt).ndim(4);
  check_data(kc, dev, dt).ndim(4);
  check_data(vc, dev, dt).ndim(4);
  check_data(out, dev, dt);
  p.batch = static_cast<int32_t>(std::min<int64_t>(q.size(0), kMaxInt32));
  p.seqlen_q = q.size(1);
  p.total_q = q.size(0) * q.size(1);
  check_int32_range("q", p.seqlen_q);
  check_head_dims("q", q.size(2), kc.size(2), q.size(3));
  p.nheads = static_cast<int32_t>(q.size(2));
  p.nheads_k = static_cast<int32_t>(kc.size(2));
  p.head_ratio = p.nheads / p.nheads_k;
  p.head_dim = static_cast<int32_t>(q.size(3));
  out.shape({p.batch, p.seqlen_q, p.nheads, p.head_dim});
  p.q = q.t().data;
  strides_bshd(q, false, &p.q_batch_stride, &p.q_row_stride, &p.q_head_stride);
  p.out = out.t().data;
  strides_bshd(out, false, &p.o_batch_stride, &p.o_row_stride, &p.o_head_stride);

  if (block_table.present()) {
    if (bidx.present()) fail_arg("cache_batch_idx: not supported with block_table (paged K/V)");
    if (leftpad.present()) fail_arg("cache_leftpad: not supported with block_table (paged K/V)");
    fill_paged(p, kc, block_table, dev);
    kc.shape({p.num_pages, p.page_size, p.nheads_k, p.head_dim});
    p.batch_k = p.batch;
  } else {
    kc.shape({-1, -1, p.nheads_k, p.head_dim});
    p.batch_k = static_cast<int32_t>(std::min<int64_t>(kc.size(0), kMaxInt32));
    p.seqlen_k = kc.size(1);
    check_int32_range("k_cache", p.seqlen_k);
    if (!bidx.present() && kc.size(0) < p.batch) {
      fail_arg("k_cache: expected at least ", p.batch, " cache rows (the batch of q) without cache_batch_idx, got ",
               kc.size(0));
    }
  }
  vc.shape({kc.size(0), kc.size(1), kc.size(2), kc.size(3)});
  set_kv_pointers(p, kc, vc);

  if (seqlens.present()) {
    check_metadata_tensor(seqlens, dev, p.batch);
    p.cache_seqlens = static_cast<const int32_t*>(seqlens.t().data);
  }
  if (bidx.present()) {
    check_metadata_tensor(bidx, dev, p.batch);
    p.cache_batch_idx = static_cast<const int32_t*>(bidx.t().data);
  }
  if (leftpad.present()) {
    check_metadata_tensor(leftpad, dev, p.batch);
    if (!seqlens.present()) fail_arg("cache_seqlens: required with cache_leftpad");
    p.leftpad_k = static_cast<const int32_t*>(leftpad.t().data);
  }

  if (kn.present() != vn.present()) {
    fail_arg(kn.present() ? "v_new" : "k_new", ": k_new and v_new must be given together");
  }
  if (kn.present()) {
    if (!seqlens.present()) fail_arg("cache_seqlens: required when appending k_new/v_new");
    check_data(kn, dev, dt).ndim(4).shape({p.batch, -1, p.nheads_k, p.head_dim});
    check_data(vn, dev, dt).ndim(4).shape({p.batch, kn.size(1), p.nheads_k, p.head_dim});
    p.seqlen_new = kn.size(1);
    if (p.seqlen_new > p.seqlen_k) {
      fail_arg("k_new: expected at most ", p.seqlen_k, " new tokens (the cache capacity), got ", p.seqlen_new);
    }
    p.k_new = kn.t().data;
    p.v_new = vn.t().data;
    p.knew_batch_stride = kn.stride(0);
    p.knew_row_stride = kn.stride(1);
    p.knew_head_stride = kn.stride(2);
    p.vnew_batch_stride = vn.stride(0);
    p.vnew_row_stride = vn.stride(1);
    p.vnew_head_stride = vn.stride(2);
  }

  if (cos.present() != sin.present()) {
    fail_arg(cos.present() ? "rotary_sin" : "rotary_cos", ": rotary_cos and rotary_sin must be given together");
  }
  if (cos.present()) {
    cos.check_descriptor().same_device(dev).dtype(dt).ndim(2).contiguous();
    sin.check_descriptor().same_device(dev).dtype(dt).shape({cos.size(0), cos.size(1)}).contiguous();
    const int64_t rotary_dim = 2 * cos.size(1);
    if (rotary_dim < 2 || rotary_dim > p.head_dim) {
      fail_arg("rotary_cos: expected shape (seqlen_ro, rotary_dim / 2) with 2 <= rotary_dim <= head_dim (",
               p.head_dim, "), got ", shape_string(cos.t()));
    }
    if (cos.size(0) < p.seqlen_k) {
      fail_arg("rotary_cos: expected at least ", p.seqlen_k, " positions (the cache capacity), got ", cos.size(0));
    }
    if (!seqlens.present()) fail_arg("cache_seqlens: required with rotary embedding (it gives the positions)");
    p.rotary_cos = cos.t().data;
    p.rotary_sin = sin.t().data;
    p.rotary_dim = static_cast<int32_t>(rotary_dim);
    p.rotary_interleaved = args->rotary_interleaved ? 1 : 0;
    p.seqlen_ro = cos.size(0);
  }

  fill_lse(p, TensorArg("lse", args->lse), dev, /*varlen=*/false, /*required=*/false);
  fill_options(p, args->opt, dev, /*training=*/false);
  r.check_metadata = args->opt.check_metadata || env_check_mode();
  return r;
}

Validated<CombineParams> validate_combine(const flashattn_combine_args* args) {
  if (!args) fail_arg("args: expected a flashattn_combine_args pointer, got NULL");
  check_struct_size("flashattn_combine_args", args->struct_size, sizeof(flashattn_combine_args), args);
  Validated<CombineParams> r;
  CombineParams& c = r.params;
  std::memset(&c, 0, sizeof(c));
  const TensorArg op("out_partial", args->out_partial), lp("lse_partial", args->lse_partial);
  const TensorArg out("out", args->out), lse("lse", args->lse), sinks("sinks", args->sinks);
  op.require();
  r.device = device_of(op);
  const Device& dev = r.device;
  op.same_device(dev).dtype(DType::kFP32).ndim(5).last_dim_contiguous();
  c.num_splits = static_cast<int32_t>(std::min<int64_t>(op.size(0), kMaxInt32));
  c.batch = static_cast<int32_t>(std::min<int64_t>(op.size(1), kMaxInt32));
  c.seqlen_q = op.size(2);
  c.nheads = static_cast<int32_t>(std::min<int64_t>(op.size(3), kMaxInt32));
  c.head_dim = static_cast<int32_t>(std::min<int64_t>(op.size(4), kMaxInt32));
  if (c.num_splits < 1 || c.num_splits > kMaxSplits) {
    fail_arg("out_partial: expected 1 to ", kMaxSplits, " splits in dim 0, got ", op.size(0));
  }
  lp.require().same_device(dev).dtype(DType::kFP32).shape({c.num_splits, c.batch, c.nheads, c.seqlen_q});
  lp.last_dim_contiguous();
  out.require().same_device(dev).dtype_in({DType::kFP32, DType::kFP16, DType::kBF16});
  out.shape({c.batch, c.seqlen_q, c.nheads, c.head_dim}).last_dim_contiguous();
  c.out_dtype = dtype_of(out.t());
  c.out_partial = static_cast<const float*>(op.t().data);
  c.op_split_stride = op.stride(0);
  c.op_batch_stride = op.stride(1);
  c.op_row_stride = op.stride(2);
  c.op_head_stride = op.stride(3);
  c.lse_partial = static_cast<const float*>(lp.t().data);
  c.lp_split_stride = lp.stride(0);
  c.lp_batch_stride = lp.stride(1);
  c.lp_head_stride = lp.stride(2);
  c.lp_row_stride = lp.stride(3);
  c.out = out.t().data;
  c.o_batch_stride = out.stride(0);
  c.o_row_stride = out.stride(1);
  c.o_head_stride = out.stride(2);
  if (lse.present()) {
    lse.check_descriptor().same_device(dev).dtype(DType::kFP32).shape({c.batch, c.nheads, c.seqlen_q});
    lse.last_dim_contiguous();
    c.lse = static_cast<float*>(lse.t().data);
    c.lse_batch_stride = lse.stride(0);
    c.lse_head_stride = lse.stride(1);
    c.lse_row_stride = lse.stride(2);
  }
  if (sinks.present()) {
    sinks.check_descriptor().same_device(dev).dtype(DType::kFP32).shape({c.nheads}).contiguous();
    c.sinks = static_cast<const float*>(sinks.t().data);
  }
  return r;
}

void check_metadata(const FwdParams& p) {
  auto bad = [](const char* name, int64_t idx, const auto&... rest) {
    fail(FLASHATTN_STATUS_BAD_METADATA, name, "[", idx, "]: ", rest...);
  };
  // Cumulative lengths: non-decreasing, inside the packed tensor, no sequence over its max_seqlen.
  auto check_cu = [&](const char* name, const int32_t* cu, int64_t total, int64_t max_len) {
    if (cu[0] < 0) bad(name, 0, "expected >= 0, got ", cu[0]);
    for (int64_t b = 0; b < p.batch; ++b) {
      if (cu[b + 1] < cu[b]) bad(name, b + 1, "expected >= ", name, "[", b, "] = ", cu[b], ", got ", cu[b + 1]);
      if (cu[b + 1] > total) bad(name, b + 1, "expected <= ", total, " (rows of the packed tensor), got ", cu[b + 1]);
      if (cu[b + 1] - cu[b] > max_len) {
        bad(name, b + 1, "sequence ", b, " has ", cu[b + 1] - cu[b], " tokens, more than the max_seqlen ", max_len);
      }
    }
  };
  if (p.cu_seqlens_q) check_cu("cu_seqlens_q", p.cu_seqlens_q, p.total_q, p.seqlen_q);
  if (p.cu_seqlens_k && !p.block_table) check_cu("cu_seqlens_k", p.cu_seqlens_k, p.total_k, p.seqlen_k);

  for (int64_t b = 0; b < p.batch; ++b) {
    // Capacity of sequence b's key storage before seqused_k / cache_seqlens narrow it.
    int64_t capacity = p.seqlen_k;
    if (p.cu_seqlens_k && !p.block_table) capacity = p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b];
    if (p.cache_batch_idx && (p.cache_batch_idx[b] < 0 || p.cache_batch_idx[b] >= p.batch_k)) {
      bad("cache_batch_idx", b, "expected a cache row in [0, ", p.batch_k, "), got ", p.cache_batch_idx[b]);
    }
    int64_t used = capacity;
    if (p.cache_seqlens) {
      const int64_t cs = p.cache_seqlens[b];
      if (cs < 0 || cs + p.seqlen_new > capacity) {
        bad("cache_seqlens", b, "expected 0 <= cache_seqlens + ", p.seqlen_new, " new tokens <= ", capacity,
            " (the cache capacity), got ", cs);
      }
      used = cs + p.seqlen_new;
    }
    if (p.seqused_k) {
      const int64_t su = p.seqused_k[b];
      if (su < 0 || su > capacity) bad("seqused_k", b, "expected a key count in [0, ", capacity, "], got ", su);
      used = su;
    }
    if (p.leftpad_k) {
      const int64_t lp = p.leftpad_k[b];
      const int64_t limit = p.cache_seqlens ? p.cache_seqlens[b] : used;
      if (lp < 0 || lp > limit) bad("cache_leftpad", b, "expected a value in [0, ", limit, "], got ", lp);
    }
    if (p.block_table) {
      const int64_t pages = (used + p.page_size - 1) / p.page_size;
      for (int64_t i = 0; i < pages; ++i) {
        const int64_t page = p.block_table[b * p.block_table_batch_stride + i];
        if (page < 0 || page >= p.num_pages) {
          fail(FLASHATTN_STATUS_BAD_METADATA, "block_table[", b, "][", i, "]: expected a page in [0, ", p.num_pages,
               "), got ", page);
        }
      }
    }
  }
}

void check_device_metadata(const FwdParams& p, void* stream) {
  // Host copies of every metadata array the kernels would read, then the same checks as on the CPU.
  FwdParams h = p;
  std::vector<std::vector<int32_t>> keep;
  auto fetch = [&](const int32_t*& ptr, int64_t count) {
    if (!ptr || count <= 0) return;
    keep.emplace_back(static_cast<size_t>(count));
    cuda::copy_metadata_to_host(ptr, count, keep.back().data(), stream);
    ptr = keep.back().data();
  };
  fetch(h.cu_seqlens_q, h.batch + 1);
  fetch(h.cu_seqlens_k, h.batch + 1);
  fetch(h.seqused_k, h.batch);
  fetch(h.cache_seqlens, h.batch);
  fetch(h.cache_batch_idx, h.batch);
  fetch(h.leftpad_k, h.batch);
  if (h.block_table && h.batch > 0) {
    fetch(h.block_table, (h.batch - 1) * h.block_table_batch_stride + h.max_pages_per_seq);
  }
  check_metadata(h);
}

}  // namespace flashattn
