"""Low-level, framework-neutral calls of the flashattn library (no autograd).

``forward``, ``backward`` and ``forward_kvcache`` take numpy arrays (CPU backend) or torch tensors (CPU or
CUDA) and return new arrays of the same kind. They do what the C API needs and nothing more: fix layouts
(last dim contiguous; on CUDA 16-byte aligned bases, strides multiples of 8, head dim padded to a multiple
of 8), allocate outputs and workspace, and pass the current stream. Every library error is raised as a
FlashAttnError subclass carrying the library's message and status.

The torch custom ops (flashattn._ops) and the numpy path of the flash_attn-compatible functions are both
built on these, so there is one place where arguments meet the C ABI.
"""

import ctypes
import math

from . import _lib as L
from ._arrays import adapter_for
from ._lib import FlashAttnInvalidArgument

__all__ = ["forward", "backward", "forward_kvcache", "plan_forward", "build_info", "set_num_threads",
           "get_num_threads", "resolve_window", "default_scale"]

_c_size_t = ctypes.c_size_t
_byref = ctypes.byref


def build_info():
    """What the loaded library was built with: version, cuda_enabled, archs, dtypes, head dims, features."""
    return dict(L.lib().build_info())


def set_num_threads(n):
    lib = L.lib()
    st = lib.set_num_threads(int(n))
    if st:
        raise lib.error(st)


def get_num_threads():
    return int(L.lib().get_num_threads())


def default_scale(head_dim):
    return 1.0 / math.sqrt(head_dim)


def resolve_window(window_size):
    """(left, right) ints; None means unbounded on both sides (vllm's convention)."""
    if window_size is None:
        return -1, -1
    try:
        left, right = window_size
    except (TypeError, ValueError):
        raise FlashAttnInvalidArgument("window_size: expected a pair (left, right), got %r" % (window_size,))
    return int(left), int(right)


def _set_options(opt, ad, buf, base_off, softmax_scale, causal, window_left, window_right, softcap,
                 alibi_slopes, sinks, dropout_p, dropout_seed, dropout_offset, rng_state, deterministic,
                 num_splits, offs):
    opt.softmax_scale = softmax_scale
    opt.causal = 1 if causal else 0
    opt.window_left = window_left
    opt.window_right = window_right
    opt.softcap = softcap
    if alibi_slopes is not None:
        ad.pack(buf, offs.opt_alibi_slopes, "alibi_slopes", alibi_slopes)
    if sinks is not None:
        ad.pack(buf, offs.opt_sinks, "sinks", sinks)
    if dropout_p:
        opt.dropout_p = dropout_p
        if rng_state is not None:
            ad.pack(buf, offs.opt_dropout_rng_state, "dropout_rng_state", rng_state)
        else:
            opt.dropout_seed = int(dropout_seed) & 0xFFFFFFFFFFFFFFFF
            opt.dropout_offset = int(dropout_offset) & 0xFFFFFFFFFFFFFFFF
    opt.deterministic = 1 if deterministic else 0
    opt.num_splits = int(num_splits)


def _run(lib, size_fn, run_fn, args, ad, like):
    nbytes = _c_size_t(0)
    ref = _byref(args)
    st = size_fn(ref, _byref(nbytes))
    if st:
        raise lib.error(st)
    n = nbytes.value
    if n:
        ptr, keep = ad.workspace(n, like)
    else:
        ptr, keep = None, None
    st = run_fn(ref, ptr, n, ad.stream(like))
    if st:
        raise lib.error(st)
    return keep


def _meta(ad, t):
    return None if t is None else ad.conform_meta(t)


def _prepare_qkv(ad, q, k, v):
    """Conforming layouts and, on CUDA, head dims padded to a multiple of 8. Returns (q, k, v, d, d_run)."""
    q = ad.conform("q", q)
    k = ad.conform("k", k)
    v = ad.conform("v", v)
    d = q.shape[-1]
    mult = ad.head_dim_multiple(q)
    d_run = -(-d // mult) * mult
    if d_run != d:
        q, k, v = ad.pad_last(q, d_run), ad.pad_last(k, d_run), ad.pad_last(v, d_run)
    return q, k, v, d, d_run


def forward(q, k, v, *, out=None, cu_seqlens_q=None, cu_seqlens_k=None, seqused_k=None, block_table=None,
            max_seqlen_q=0, max_seqlen_k=0, softmax_scale=None, causal=False, window_size=(-1, -1),
            softcap=0.0, alibi_slopes=None, sinks=None, dropout_p=0.0, dropout_seed=0, dropout_offset=0,
            rng_state=None, num_splits=0, return_lse=True):
    """Attention forward. Varlen when cu_seqlens_q is given. Returns (out, lse).

    q (b, sq, h, d) | (total_q, h, d); k, v (b, sk, hk, d) | (total_k, hk, d) | paged
    (num_pages, page_size, hk, d) with block_table. lse is fp32 (b, h, sq) | (h, total_q), natural log.
    ``out`` (optional) is written in place. Dropout uses (dropout_seed, dropout_offset), or on CUDA the
    int64 (2,) device tensor ``rng_state`` holding them (read by the kernel, no host sync).
    """
    lib = L.lib()
    ad = adapter_for(q)
    q_orig_d = q.shape[-1]
    q, k, v, d, d_run = _prepare_qkv(ad, q, k, v)
    if softmax_scale is None:
        softmax_scale = default_scale(d)
    wl, wr = resolve_window(window_size)
    varlen = cu_seqlens_q is not None

    # The library writes into `out` directly only when it is laid out as the kernels need.
    out_tmp = out
    if out is None or d_run != q_orig_d or not ad.conforms(out):
        out_tmp = ad.empty_as(q.shape, q)
    if varlen:
        lse_shape = (q.shape[1], q.shape[0])
    else:
        lse_shape = (q.shape[0], q.shape[2], q.shape[1])
    lse = ad.empty(lse_shape, L.DTYPE_FP32, q) if return_lse else None

    args = L.FwdArgs.from_buffer_copy(lib.fwd_tmpl_bytes)
    o = L.FWD_OFF
    ad.pack(args, o.q, "q", q)
    ad.pack(args, o.k, "k", k)
    ad.pack(args, o.v, "v", v)
    ad.pack(args, o.out, "out", out_tmp)
    if lse is not None:
        ad.pack(args, o.lse, "lse", lse)
    if varlen:
        cu_seqlens_q = _meta(ad, cu_seqlens_q)
        ad.pack(args, o.cu_seqlens_q, "cu_seqlens_q", cu_seqlens_q)
    if cu_seqlens_k is not None:
        cu_seqlens_k = _meta(ad, cu_seqlens_k)
        ad.pack(args, o.cu_seqlens_k, "cu_seqlens_k", cu_seqlens_k)
    if seqused_k is not None:
        seqused_k = _meta(ad, seqused_k)
        ad.pack(args, o.seqused_k, "seqused_k", seqused_k)
    if block_table is not None:
        block_table = _meta(ad, block_table)
        ad.pack(args, o.block_table, "block_table", block_table)
    args.max_seqlen_q = int(max_seqlen_q)
    args.max_seqlen_k = int(max_seqlen_k)
    alibi_slopes = _meta(ad, alibi_slopes)
    sinks = _meta(ad, sinks)
    rng_state = _meta(ad, rng_state)
    _set_options(args.opt, ad, args, 0, softmax_scale, causal, wl, wr, softcap, alibi_slopes, sinks,
                 dropout_p, dropout_seed, dropout_offset, rng_state, False, num_splits, o)
    _run(lib, lib.fwd_workspace_size, lib.varlen_fwd if varlen else lib.fwd, args, ad, q)

    if out_tmp is not out:
        res = out_tmp[..., :q_orig_d] if d_run != q_orig_d else out_tmp
        if out is not None:
            ad.copy_(out, res)
        else:
            out = ad.contiguous(res) if d_run != q_orig_d else res
    return out, lse


def plan_forward(q, k, v, **kw):
    """What flashattn_fwd would do for these arguments (path, tiles, splits, workspace) as a dict."""
    lib = L.lib()
    ad = adapter_for(q)
    q, k, v, d, d_run = _prepare_qkv(ad, q, k, v)
    out = ad.empty_as(q.shape, q)
    args = L.FwdArgs.from_buffer_copy(lib.fwd_tmpl_bytes)
    o = L.FWD_OFF
    ad.pack(args, o.q, "q", q)
    ad.pack(args, o.k, "k", k)
    ad.pack(args, o.v, "v", v)
    ad.pack(args, o.out, "out", out)
    wl, wr = resolve_window(kw.get("window_size", (-1, -1)))
    scale = kw.get("softmax_scale") or default_scale(d)
    _set_options(args.opt, ad, args, 0, scale, kw.get("causal", False), wl, wr, kw.get("softcap", 0.0),
                 None, None, 0.0, 0, 0, None, False, kw.get("num_splits", 0), o)
    info = L.PlanInfo()
    info.struct_size = ctypes.sizeof(info)
    st = lib.fwd_plan(_byref(args), _byref(info))
    if st:
        raise lib.error(st)
    names = {0: "auto", 1: "cpu", 2: "sm75", 3: "sm80", 4: "sm90"}
    return {"path": names.get(info.path, str(info.path)), "block_m": info.block_m, "block_n": info.block_n,
            "num_warps": info.num_warps, "head_dim_rounded": info.head_dim_rounded,
            "num_splits": info.num_splits, "workspace_bytes": info.workspace_bytes,
            "kernel": info.kernel.decode()}


def backward(dout, q, k, v, out, lse, *, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=0,
             max_seqlen_k=0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
             alibi_slopes=None, sinks=None, dropout_p=0.0, dropout_seed=0, dropout_offset=0, rng_state=None,
             deterministic=False):
    """Gradients of ``forward``: returns (dq, dk, dv, dsinks); dsinks is None without sinks.

    Pass the forward's out and lse, and the same options (dropout seed/offset regenerate the same mask).
    """
    lib = L.lib()
    ad = adapter_for(q)
    d = q.shape[-1]
    q, k, v, d, d_run = _prepare_qkv(ad, q, k, v)
    out = ad.conform("out", out)
    dout = ad.conform("dout", dout)
    if d_run != d:
        out, dout = ad.pad_last(out, d_run), ad.pad_last(dout, d_run)
    if softmax_scale is None:
        softmax_scale = default_scale(d)
    wl, wr = resolve_window(window_size)
    varlen = cu_seqlens_q is not None
    dq = ad.empty_as(q.shape, q)
    dk = ad.empty_as(k.shape, k)
    dv = ad.empty_as(v.shape, v)
    sinks = _meta(ad, sinks)
    dsinks = ad.empty((sinks.shape[0],), L.DTYPE_FP32, q) if sinks is not None else None

    args = L.BwdArgs.from_buffer_copy(lib.bwd_tmpl_bytes)
    o = L.BWD_OFF
    ad.pack(args, o.q, "q", q)
    ad.pack(args, o.k, "k", k)
    ad.pack(args, o.v, "v", v)
    ad.pack(args, o.out, "out", out)
    ad.pack(args, o.dout, "dout", dout)
    lse = _meta(ad, lse)
    ad.pack(args, o.lse, "lse", lse)
    ad.pack(args, o.dq, "dq", dq)
    ad.pack(args, o.dk, "dk", dk)
    ad.pack(args, o.dv, "dv", dv)
    if dsinks is not None:
        ad.pack(args, o.dsinks, "dsinks", dsinks)
    if varlen:
        cu_seqlens_q = _meta(ad, cu_seqlens_q)
        ad.pack(args, o.cu_seqlens_q, "cu_seqlens_q", cu_seqlens_q)
    if cu_seqlens_k is not None:
        cu_seqlens_k = _meta(ad, cu_seqlens_k)
        ad.pack(args, o.cu_seqlens_k, "cu_seqlens_k", cu_seqlens_k)
    args.max_seqlen_q = int(max_seqlen_q)
    args.max_seqlen_k = int(max_seqlen_k)
    alibi_slopes = _meta(ad, alibi_slopes)
    rng_state = _meta(ad, rng_state)
    _set_options(args.opt, ad, args, 0, softmax_scale, causal, wl, wr, softcap, alibi_slopes, sinks,
                 dropout_p, dropout_seed, dropout_offset, rng_state, deterministic, 0, o)
    _run(lib, lib.bwd_workspace_size, lib.varlen_bwd if varlen else lib.bwd, args, ad, q)
    if d_run != d:
        dq = ad.contiguous(dq[..., :d])
        dk = ad.contiguous(dk[..., :d])
        dv = ad.contiguous(dv[..., :d])
    return dq, dk, dv, dsinks


def forward_kvcache(q, k_cache, v_cache, k=None, v=None, *, cache_seqlens=None, cache_batch_idx=None,
                    cache_leftpad=None, block_table=None, rotary_cos=None, rotary_sin=None,
                    rotary_interleaved=True, softmax_scale=None, causal=False, window_size=(-1, -1),
                    softcap=0.0, alibi_slopes=None, sinks=None, num_splits=0, out=None, return_lse=True):
    """Attention over a KV cache, appending k/v (new tokens) in place first. Returns (out, lse).

    k_cache/v_cache are updated in place when k/v are given; they must keep their identity, so when they
    are not laid out as the GPU kernels need, they are copied, updated, and copied back.
    """
    lib = L.lib()
    ad = adapter_for(q)
    d = q.shape[-1]
    mult = ad.head_dim_multiple(q)
    d_run = -(-d // mult) * mult
    if softmax_scale is None:
        softmax_scale = default_scale(d)
    wl, wr = resolve_window(window_size)

    q_run = ad.conform("q", q)
    kc_run = ad.conform("k_cache", k_cache)
    vc_run = ad.conform("v_cache", v_cache)
    k_run = ad.conform("k", k) if k is not None else None
    v_run = ad.conform("v", v) if v is not None else None
    if d_run != d:
        q_run = ad.pad_last(q_run, d_run)
        kc_run = ad.pad_last(kc_run, d_run)
        vc_run = ad.pad_last(vc_run, d_run)
        if k_run is not None:
            k_run = ad.pad_last(k_run, d_run)
        if v_run is not None:
            v_run = ad.pad_last(v_run, d_run)
    out_tmp = out
    if out is None or d_run != d or not ad.conforms(out):
        out_tmp = ad.empty_as(q_run.shape, q_run)
    lse = ad.empty((q.shape[0], q.shape[2], q.shape[1]), L.DTYPE_FP32, q) if return_lse else None

    args = L.KvcacheArgs.from_buffer_copy(lib.kvc_tmpl_bytes)
    o = L.KVC_OFF
    ad.pack(args, o.q, "q", q_run)
    ad.pack(args, o.k_cache, "k_cache", kc_run)
    ad.pack(args, o.v_cache, "v_cache", vc_run)
    if k_run is not None:
        ad.pack(args, o.k_new, "k", k_run)
    if v_run is not None:
        ad.pack(args, o.v_new, "v", v_run)
    ad.pack(args, o.out, "out", out_tmp)
    if lse is not None:
        ad.pack(args, o.lse, "lse", lse)
    keep = []  # the (possibly copied) metadata must stay alive until the call returns
    for name, t in (("cache_seqlens", cache_seqlens), ("cache_batch_idx", cache_batch_idx),
                    ("cache_leftpad", cache_leftpad), ("block_table", block_table),
                    ("rotary_cos", rotary_cos), ("rotary_sin", rotary_sin)):
        if t is not None:
            t = _meta(ad, t)
            keep.append(t)
            ad.pack(args, getattr(o, name), name, t)
    args.rotary_interleaved = 1 if rotary_interleaved else 0
    alibi_slopes = _meta(ad, alibi_slopes)
    sinks = _meta(ad, sinks)
    _set_options(args.opt, ad, args, 0, softmax_scale, causal, wl, wr, softcap, alibi_slopes, sinks,
                 0.0, 0, 0, None, False, num_splits, o)
    _run(lib, lib.kvcache_workspace_size, lib.fwd_kvcache, args, ad, q)
    del keep

    if k is not None:
        # The append went into a copy: write the updated caches back into the caller's tensors.
        if kc_run is not k_cache:
            ad.copy_(k_cache, kc_run[..., :d])
        if vc_run is not v_cache:
            ad.copy_(v_cache, vc_run[..., :d])
    if out_tmp is not out:
        res = out_tmp[..., :d] if d_run != d else out_tmp
        if out is not None:
            ad.copy_(out, res)
        else:
            out = ad.contiguous(res) if d_run != d else res
    return out, lse
