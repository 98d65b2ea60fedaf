"""torch integration: the library calls registered as torch.library custom ops.

Written against the public torch.library API of torch >= 2.4 (custom_op, register_fake, register_autograd),
so torch.compile(fullgraph=True) traces through flashattn with no graph break and torch.library.opcheck
passes. The ops are functional (outputs are fresh tensors) except ``fwd_out`` and ``fwd_kvcache``, which
declare exactly what they mutate. Everything device-dependent (stream, workspace, layout fixes) happens
inside the op implementations, where tensors are real; the fake (meta) functions only describe shapes.
"""

import torch

from . import functional as F

_LIB = "flashattn"

# Schemas are spelled out rather than inferred from annotations: inference differs across torch
# versions (string annotations, Optional handling), an explicit schema does not.
_FWD_COMMON = (
    "Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, Tensor? seqused_k, Tensor? block_table, "
    "SymInt max_seqlen_q, SymInt max_seqlen_k, float softmax_scale, bool causal, int window_left, "
    "int window_right, float softcap, Tensor? alibi_slopes, Tensor? sinks, float dropout_p, "
    "Tensor? rng_state, int num_splits")


def _rng_args(rng_state, q):
    """Dropout seed/offset: on CUDA the kernel reads the device tensor (no sync, graph-capturable);
    on the CPU the two int64s are read here (host memory, no sync involved)."""
    if rng_state is None:
        return None, 0, 0
    if q.is_cuda:
        return rng_state, 0, 0
    seed, offset = rng_state.tolist()
    return None, seed, offset


def _lse_shape(q, cu_seqlens_q):
    if cu_seqlens_q is not None:
        return (q.shape[1], q.shape[0])
    return (q.shape[0], q.shape[2], q.shape[1])


@torch.library.custom_op(_LIB + "::fwd", mutates_args=(),
                         schema="(Tensor q, Tensor k, Tensor v, " + _FWD_COMMON
                         + ", bool deterministic) -> (Tensor, Tensor)")
def fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, max_seqlen_q, max_seqlen_k,
        softmax_scale, causal, window_left, window_right, softcap, alibi_slopes, sinks, dropout_p, rng_state,
        num_splits, deterministic):
    # `deterministic` only matters to the backward; it is an input so the autograd formula sees it.
    rng, seed, offset = _rng_args(rng_state, q)
    out, lse = F.forward(q, k, v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, seqused_k=seqused_k,
                         block_table=block_table, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
                         softmax_scale=softmax_scale, causal=causal, window_size=(window_left, window_right),
                         softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks, dropout_p=dropout_p,
                         dropout_seed=seed, dropout_offset=offset, rng_state=rng, num_splits=num_splits)
    return out, lse


@fwd.register_fake
def _fwd_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, max_seqlen_q, max_seqlen_k,
              softmax_scale, causal, window_left, window_right, softcap, alibi_slopes, sinks, dropout_p,
              rng_state, num_splits, deterministic):
    out = q.new_empty(q.shape)
    lse = q.new_empty(_lse_shape(q, cu_seqlens_q), dtype=torch.float32)
    return out, lse


@torch.library.custom_op(_LIB + "::fwd_out", mutates_args=("out",),
                         schema="(Tensor q, Tensor k, Tensor v, " + _FWD_COMMON + ", Tensor(a!) out) -> Tensor")
def fwd_out(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, max_seqlen_q, max_seqlen_k,
            softmax_scale, causal, window_left, window_right, softcap, alibi_slopes, sinks, dropout_p, rng_state,
            num_splits, out):
    rng, seed, offset = _rng_args(rng_state, q)
    _, lse = F.forward(q, k, v, out=out, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
                       seqused_k=seqused_k, block_table=block_table, max_seqlen_q=max_seqlen_q,
                       max_seqlen_k=max_seqlen_k, softmax_scale=softmax_scale, causal=causal,
                       window_size=(window_left, window_right), softcap=softcap, alibi_slopes=alibi_slopes,
                       sinks=sinks, dropout_p=dropout_p, dropout_seed=seed, dropout_offset=offset,
                       rng_state=rng, num_splits=num_splits)
    return lse


@fwd_out.register_fake
def _fwd_out_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, max_seqlen_q, max_seqlen_k,
                  softmax_scale, causal, window_left, window_right, softcap, alibi_slopes, sinks, dropout_p,
                  rng_state, num_splits, out):
    return q.new_empty(_lse_shape(q, cu_seqlens_q), dtype=torch.float32)


@torch.library.custom_op(
    _LIB + "::bwd", mutates_args=(),
    schema="(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? cu_seqlens_q, "
           "Tensor? cu_seqlens_k, SymInt max_seqlen_q, SymInt max_seqlen_k, float softmax_scale, bool causal, "
           "int window_left, int window_right, float softcap, Tensor? alibi_slopes, Tensor? sinks, "
           "float dropout_p, Tensor? rng_state, bool deterministic) -> (Tensor, Tensor, Tensor, Tensor)")
def bwd(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
        window_left, window_right, softcap, alibi_slopes, sinks, dropout_p, rng_state, deterministic):
    rng, seed, offset = _rng_args(rng_state, q)
    dq, dk, dv, dsinks = F.backward(
        dout, q, k, v, out, lse, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
        max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, softmax_scale=softmax_scale, causal=causal,
        window_size=(window_left, window_right), softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks,
        dropout_p=dropout_p, dropout_seed=seed, dropout_offset=offset, rng_state=rng,
        deterministic=deterministic)
    if dsinks is None:
        # A custom op cannot return None; an empty tensor stands for "no sinks".
        dsinks = q.new_empty((0,), dtype=torch.float32)
    return dq, dk, dv, dsinks


@bwd.register_fake
def _bwd_fake(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
              causal, window_left, window_right, softcap, alibi_slopes, sinks, dropout_p, rng_state, deterministic):
    n = sinks.shape[0] if sinks is not None else 0
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            q.new_empty((n,), dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    (q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, max_seqlen_q, max_seqlen_k, softmax_scale,
     causal, window_left, window_right, softcap, alibi_slopes, sinks, dropout_p, rng_state, num_splits,
     deterministic) = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes, sinks, rng_state)
    ctx.paged = block_table is not None or seqused_k is not None
    ctx.scalars = (max_seqlen_q, max_seqlen_k, softmax_scale, causal, window_left, window_right, softcap,
                   dropout_p, deterministic)
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes, sinks, rng_state = ctx.saved_tensors
    if ctx.paged:
        raise F.L.FlashAttnNotSupported(
            "flashattn: backward of attention with block_table/seqused_k (paged KV) is not supported")
    max_seqlen_q, max_seqlen_k, softmax_scale, causal, wl, wr, softcap, dropout_p, deterministic = ctx.scalars
    dq, dk, dv, dsinks = torch.ops.flashattn.bwd(
        dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
        wl, wr, softcap, alibi_slopes, sinks, dropout_p, rng_state,
        deterministic or torch.are_deterministic_algorithms_enabled())
    return (dq, dk, dv, None, None, None, None, None, None, None, None, None, None, None, None,
            dsinks if sinks is not None else None, None, None, None, None)


torch.library.register_autograd(_LIB + "::fwd", _backward, setup_context=_setup_context)


@torch.library.custom_op(
    _LIB + "::fwd_kvcache", mutates_args=("k_cache", "v_cache", "out"),
    schema="(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor? k, Tensor? v, Tensor? rotary_cos, "
           "Tensor? rotary_sin, Tensor? cache_seqlens, Tensor? cache_batch_idx, Tensor? cache_leftpad, "
           "Tensor? block_table, float softmax_scale, bool causal, int window_left, int window_right, "
           "float softcap, bool rotary_interleaved, Tensor? alibi_slopes, Tensor? sinks, int num_splits, "
           "Tensor(c!) out) -> Tensor")
def fwd_kvcache(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx, cache_leftpad,
                block_table, softmax_scale, causal, window_left, window_right, softcap, rotary_interleaved,
                alibi_slopes, sinks, num_splits, out):
    _, lse = F.forward_kvcache(
        q, k_cache, v_cache, k, v, cache_seqlens=cache_seqlens, cache_batch_idx=cache_batch_idx,
        cache_leftpad=cache_leftpad, block_table=block_table, rotary_cos=rotary_cos, rotary_sin=rotary_sin,
        rotary_interleaved=rotary_interleaved, softmax_scale=softmax_scale, causal=causal,
        window_size=(window_left, window_right), softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks,
        num_splits=num_splits, out=out)
    return lse


@fwd_kvcache.register_fake
def _fwd_kvcache_fake(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx,
                      cache_leftpad, block_table, softmax_scale, causal, window_left, window_right, softcap,
                      rotary_interleaved, alibi_slopes, sinks, num_splits, out):
    return q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32)
