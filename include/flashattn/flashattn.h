/*
 * flashattn: exact, fast, memory-efficient attention. Stable C ABI.
 *
 * This header depends on nothing but <stddef.h>/<stdint.h>: no CUDA, no C++.
 *
 * Conventions
 * - Every argument struct starts with `struct_size`; fill it (and the defaults) with the matching
 *   flashattn_*_init() function, then set the fields you need. The library reads only the first
 *   struct_size bytes, so a program built against an older header keeps working with a newer library.
 * - Tensors are described by flashattn_tensor (DLPack-compatible fields). Strides are in elements,
 *   int64, and every stride is honoured; only the last dimension must be contiguous (stride 1).
 *   An absent optional tensor has data == NULL (flashattn_tensor_none()).
 * - Each operation has a workspace-size query and a run call. Run calls take a caller-provided
 *   workspace and a stream (a cudaStream_t cast to void*, NULL = default stream; ignored on the CPU).
 *   Run calls never allocate device memory and never synchronise the host with the device, so they
 *   can be captured in a CUDA graph.
 * - Every call returns a flashattn_status. On error, flashattn_last_error() returns a message for the
 *   calling thread that names the argument, the expected and the given value.
 * - Layout: q/k/v/out are (batch, seqlen, heads, head_dim) ("BSHD"); varlen packs tokens as
 *   (total_tokens, heads, head_dim) with int32 cu_seqlens of shape (batch + 1).
 * - LSE is fp32, natural log: (batch, heads, seqlen_q), or (heads, total_q) for varlen.
 *   Rows that see no key at all get output 0 and LSE +inf (or LSE = sink when sinks are given).
 */
#ifndef FLASHATTN_FLASHATTN_H_
#define FLASHATTN_FLASHATTN_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define FLASHATTN_API __declspec(dllimport)
#elif defined(__GNUC__)
#define FLASHATTN_API __attribute__((visibility("default")))
#else
#define FLASHATTN_API
#endif

/* Bumped on every change that breaks binary compatibility; the shared library's SONAME carries it. */
#define FLASHATTN_ABI_VERSION 1
#define FLASHATTN_MAX_NDIM 6

typedef enum flashattn_status {
  FLASHATTN_STATUS_OK = 0,
  FLASHATTN_STATUS_INVALID_ARGUMENT = 1,  /* bad shape, dtype, stride, value or combination */
  FLASHATTN_STATUS_NOT_SUPPORTED = 2,     /* valid request this library cannot serve (GPU too old, ...) */
  FLASHATTN_STATUS_NOT_BUILT = 3,         /* the kernel exists but is not in this build (enable it) */
  FLASHATTN_STATUS_WORKSPACE_TOO_SMALL = 4,
  FLASHATTN_STATUS_DEVICE_ERROR = 5,      /* a CUDA runtime error */
  FLASHATTN_STATUS_BAD_METADATA = 6,      /* device-resident metadata failed the check mode */
  FLASHATTN_STATUS_INTERNAL = 7
} flashattn_status;

/* Values match DLPack's type codes where they exist; bits are implied. */
typedef enum flashattn_dtype {
  FLASHATTN_DTYPE_INVALID = 0,
  FLASHATTN_DTYPE_FP32 = 1,
  FLASHATTN_DTYPE_FP16 = 2,
  FLASHATTN_DTYPE_BF16 = 3,
  FLASHATTN_DTYPE_INT32 = 4,
  FLASHATTN_DTYPE_INT64 = 5
} flashattn_dtype;

/* Same values as DLPack's DLDeviceType. */
typedef enum flashattn_device_type {
  FLASHATTN_DEVICE_CPU = 1,
  FLASHATTN_DEVICE_CUDA = 2
} flashattn_device_type;

typedef struct flashattn_tensor {
  void* data;
  int32_t dtype;        /* flashattn_dtype */
  int32_t device_type;  /* flashattn_device_type */
  int32_t device_id;
  int32_t ndim;
  int64_t shape[FLASHATTN_MAX_NDIM];
  int64_t strides[FLASHATTN_MAX_NDIM]; /* in elements */
} flashattn_tensor;

/* Options shared by every attention operation. */
typedef struct flashattn_options {
  float softmax_scale;   /* <= 0 or NaN: 1/sqrt(head_dim) */
  int32_t causal;        /* bottom-right aligned: row i sees key j iff j <= i + seqlen_k - seqlen_q */
  int32_t window_left;   /* -1 = unbounded; row i sees keys in [i+sk-sq-left, i+sk-sq+right] */
  int32_t window_right;  /* -1 = unbounded; causal forces right = 0 */
  float softcap;         /* 0 = off; else s = softcap * tanh(scale * q.k / softcap) */
  flashattn_tensor alibi_slopes; /* optional fp32 (heads) or (batch, heads): bias -slope*|i+sk-sq-j| */
  flashattn_tensor sinks;        /* optional fp32 (heads): one logit per query head in the denominator */
  float dropout_p;       /* probability of dropping, in [0, 1); forward/backward training ops only */
  uint64_t dropout_seed;
  uint64_t dropout_offset;
  flashattn_tensor dropout_rng_state; /* optional int64 (2): {seed, offset} read on the device instead */
  int32_t deterministic;   /* backward: bitwise repeatable dq/dk/dv */
  int32_t num_splits;      /* forward: 0 = heuristic, 1 = no split-KV, n > 1 = exactly n splits (<= 256) */
  int32_t batch_invariant; /* forward: split decisions depend only on each sequence's own length */
  int32_t check_metadata;  /* validate device-resident metadata with a sync (also FLASHATTN_CHECK=1) */
} flashattn_options;

/* Forward; varlen when cu_seqlens_q is given (flashattn_varlen_fwd requires it). */
typedef struct flashattn_fwd_args {
  uint64_t struct_size;
  flashattn_tensor q;   /* (b, sq, h, d) | varlen (total_q, h, d) */
  flashattn_tensor k;   /* (b, sk, hk, d) | varlen (total_k, hk, d) | paged (num_pages, page_size, hk, d) */
  flashattn_tensor v;   /* same shape as k */
  flashattn_tensor out; /* required, shape of q, dtype of q */
  flashattn_tensor lse; /* optional fp32 (b, h, sq) | varlen (h, total_q) */
  flashattn_tensor cu_seqlens_q; /* varlen: int32 (b + 1) */
  flashattn_tensor cu_seqlens_k; /* varlen, not paged: int32 (b + 1) */
  flashattn_tensor seqused_k;    /* optional int32 (b): keys used per sequence; required when paged varlen */
  flashattn_tensor block_table;  /* optional int32 (b, max_pages_per_seq): paged K/V */
  int64_t max_seqlen_q;          /* varlen: upper bound of the per-sequence query length */
  int64_t max_seqlen_k;          /* varlen: upper bound of the per-sequence key length */
  flashattn_options opt;
} flashattn_fwd_args;

typedef struct flashattn_bwd_args {
  uint64_t struct_size;
  flashattn_tensor q, k, v, out; /* as in the forward */
  flashattn_tensor dout;         /* shape of out */
  flashattn_tensor lse;          /* required: the forward's LSE */
  flashattn_tensor dq, dk, dv;   /* outputs, shapes of q, k, v */
  flashattn_tensor dsinks;       /* output fp32 (h) when opt.sinks is given */
  flashattn_tensor cu_seqlens_q, cu_seqlens_k; /* varlen */
  int64_t max_seqlen_q, max_seqlen_k;
  flashattn_options opt;
} flashattn_bwd_args;

/* Forward over a KV cache (inference): optional in-place append of k_new/v_new at cache_seqlens,
 * with rotary embedding applied to q and k_new. Forward only; no dropout. */
typedef struct flashattn_kvcache_args {
  uint64_t struct_size;
  flashattn_tensor q;        /* (b, sq, h, d) */
  flashattn_tensor k_cache;  /* (b_cache, s_cache, hk, d) | paged (num_pages, page_size, hk, d); written when k_new */
  flashattn_tensor v_cache;
  flashattn_tensor k_new;    /* optional (b, s_new, hk, d) */
  flashattn_tensor v_new;
  flashattn_tensor out;      /* (b, sq, h, d) */
  flashattn_tensor lse;      /* optional fp32 (b, h, sq) */
  flashattn_tensor cache_seqlens;   /* int32 (b): tokens in the cache before the append (incl. left padding) */
  flashattn_tensor cache_batch_idx; /* optional int32 (b): cache row of each batch element; not with paging */
  flashattn_tensor cache_leftpad;   /* optional int32 (b): the cache of sequence b starts at this index */
  flashattn_tensor block_table;     /* optional int32 (b, max_pages_per_seq) */
  flashattn_tensor rotary_cos;      /* optional (seqlen_ro, rotary_dim / 2), dtype of q */
  flashattn_tensor rotary_sin;
  int32_t rotary_interleaved;       /* 1: pairs (0,1),(2,3)... (GPT-J); 0: (i, i + rotary_dim/2) (GPT-NeoX) */
  flashattn_options opt;
} flashattn_kvcache_args;

/* Merge of split-KV partial results: out = sum_s exp(lse_s - lse) * out_s, with an optional sink. */
typedef struct flashattn_combine_args {
  uint64_t struct_size;
  flashattn_tensor out_partial; /* fp32 (splits, b, sq, h, d) */
  flashattn_tensor lse_partial; /* fp32 (splits, b, h, sq) */
  flashattn_tensor out;         /* (b, sq, h, d), fp32/fp16/bf16 */
  flashattn_tensor lse;         /* optional fp32 (b, h, sq) */
  flashattn_tensor sinks;       /* optional fp32 (h) */
} flashattn_combine_args;

typedef enum flashattn_path {
  FLASHATTN_PATH_AUTO = 0,
  FLASHATTN_PATH_CPU = 1,
  FLASHATTN_PATH_SM75 = 2,
  FLASHATTN_PATH_SM80 = 3,
  FLASHATTN_PATH_SM90 = 4
} flashattn_path;

/* What a call with the given arguments would do. */
typedef struct flashattn_plan_info {
  uint64_t struct_size;
  int32_t path;        /* flashattn_path */
  int32_t block_m;     /* query tile rows (0 on the CPU: the backend's own blocking) */
  int32_t block_n;     /* key tile columns */
  int32_t num_warps;
  int32_t head_dim_rounded; /* kernel head dim the problem is padded to */
  int32_t num_splits;  /* split-KV splits chosen (1 = none) */
  uint64_t workspace_bytes;
  char kernel[128];    /* name of the chosen kernel instantiation */
} flashattn_plan_info;

typedef struct flashattn_build_info {
  uint64_t struct_size;
  char version[32];
  int32_t abi_version;
  int32_t cuda_enabled;       /* 1 when CUDA kernels are compiled in */
  int32_t cuda_runtime_version;
  char archs[64];             /* e.g. "80;90" */
  char dtypes[64];            /* e.g. "fp16;bf16" */
  char head_dims[128];        /* e.g. "32;64;96;128;160;192;224;256" */
  char features[256];         /* e.g. "fwd;bwd;kvcache;paged;splitkv;dropout" */
  int32_t num_kernels;        /* instantiations compiled in */
} flashattn_build_info;

FLASHATTN_API const char* flashattn_version(void);
FLASHATTN_API int32_t flashattn_abi_version(void);
FLASHATTN_API const char* flashattn_status_string(flashattn_status status);
/* Message of the last failed call on this thread ("" if none). Valid until the next call on this thread. */
FLASHATTN_API const char* flashattn_last_error(void);
FLASHATTN_API flashattn_status flashattn_build_info_get(flashattn_build_info* info);

/* CPU backend threads (0 = all hardware threads). Process-wide. */
FLASHATTN_API flashattn_status flashattn_set_num_threads(int32_t num_threads);
FLASHATTN_API int32_t flashattn_get_num_threads(void);

FLASHATTN_API flashattn_tensor flashattn_tensor_none(void);
FLASHATTN_API void flashattn_options_init(flashattn_options* opt);
FLASHATTN_API void flashattn_fwd_args_init(flashattn_fwd_args* args);
FLASHATTN_API void flashattn_bwd_args_init(flashattn_bwd_args* args);
FLASHATTN_API void flashattn_kvcache_args_init(flashattn_kvcache_args* args);
FLASHATTN_API void flashattn_combine_args_init(flashattn_combine_args* args);

/* Forward (dense or paged K/V). */
FLASHATTN_API flashattn_status flashattn_fwd_workspace_size(const flashattn_fwd_args* args, size_t* bytes);
FLASHATTN_API flashattn_status flashattn_fwd(const flashattn_fwd_args* args, void* workspace, size_t workspace_bytes,
                                             void* stream);
FLASHATTN_API flashattn_status flashattn_fwd_plan(const flashattn_fwd_args* args, flashattn_plan_info* info);
/* Same as flashattn_fwd, but cu_seqlens_q is required (clearer errors for varlen callers). */
FLASHATTN_API flashattn_status flashattn_varlen_fwd(const flashattn_fwd_args* args, void* workspace,
                                                    size_t workspace_bytes, void* stream);

/* Backward. */
FLASHATTN_API flashattn_status flashattn_bwd_workspace_size(const flashattn_bwd_args* args, size_t* bytes);
FLASHATTN_API flashattn_status flashattn_bwd(const flashattn_bwd_args* args, void* workspace, size_t workspace_bytes,
                                             void* stream);
FLASHATTN_API flashattn_status flashattn_bwd_plan(const flashattn_bwd_args* args, flashattn_plan_info* info);
FLASHATTN_API flashattn_status flashattn_varlen_bwd(const flashattn_bwd_args* args, void* workspace,
                                                    size_t workspace_bytes, void* stream);

/* Forward with KV cache. */
FLASHATTN_API flashattn_status flashattn_kvcache_workspace_size(const flashattn_kvcache_args* args, size_t* bytes);
FLASHATTN_API flashattn_status flashattn_fwd_kvcache(const flashattn_kvcache_args* args, void* workspace,
                                                     size_t workspace_bytes, void* stream);
FLASHATTN_API flashattn_status flashattn_kvcache_plan(const flashattn_kvcache_args* args, flashattn_plan_info* info);

/* Split-KV combine. */
FLASHATTN_API flashattn_status flashattn_combine(const flashattn_combine_args* args, void* stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLASHATTN_FLASHATTN_H_ */
