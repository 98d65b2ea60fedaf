"""torch integration: the library calls registered as torch.library custom ops.

Written against the public torch.library API of torch >= 2.4 (custom_op, register_fake, register_autograd),
so torch.compile(fullgraph=True) traces through flashattn with no graph break and torch.library.opcheck
passes. The ops are functional (outputs are fresh tensors) except ``varlen_fwd_out`` and ``fwd_kvcache``,
which declare exactly what they mutate. Everything device-dependent (stream, workspace, layout fixes)
happens inside the op implementations, where tensors are real; the fake functions only describe shapes.

Scalar options travel as two lists (``SymInt[] ints``, ``float[] floats``) instead of one schema argument
each: torch's custom-op autograd path walks the schema once per argument (quadratic in the argument
count), which with ~20 arguments cost more than the attention call itself on small problems.
  fwd / varlen_fwd ints:  [causal, window_left, window_right, num_splits, deterministic]
                          (varlen_fwd prepends max_seqlen_q, max_seqlen_k)
  bwd ints:               [max_seqlen_q, max_seqlen_k, causal, window_left, window_right, deterministic]
  fwd_kvcache ints:       [causal, window_left, window_right, rotary_interleaved, num_splits]
  floats:                 [softmax_scale, softcap, dropout_p] (fwd_kvcache: [softmax_scale, softcap])
"""

import torch

from . import _lib as L
from . import functional as F

_NS = "flashattn::"


def _rng_args(rng_state, q):
    """Dropout seed/offset: on CUDA the kernel reads the device tensor (no sync, graph-capturable);
    on the CPU the two int64s are read here (host memory, no sync involved)."""
    if rng_state is None:
        return None, 0, 0
    if q.is_cuda:
        return rng_state, 0, 0
    seed, offset = rng_state.tolist()
    return None, seed, offset


def _forward(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, rng_state,
             max_seqlen_q, max_seqlen_k, causal, wl, wr, num_splits, floats, out=None):
    rng, seed, offset = _rng_args(rng_state, q)
    scale, softcap, dropout_p = floats
    return F.forward(q, k, v, out=out, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, seqused_k=seqused_k,
                     block_table=block_table, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
                     softmax_scale=scale, causal=bool(causal), window_size=(wl, wr), softcap=softcap,
                     alibi_slopes=alibi_slopes, sinks=sinks, dropout_p=dropout_p, dropout_seed=seed,
                     dropout_offset=offset, rng_state=rng, num_splits=num_splits)


# ---- dense (batch, seqlen, heads, dim) forward ------------------------------------------------------
@torch.library.custom_op(_NS + "fwd", mutates_args=(),
                         schema="(Tensor q, Tensor k, Tensor v, Tensor? alibi_slopes, Tensor? sinks, "
                                "Tensor? rng_state, SymInt[] ints, float[] floats) -> (Tensor, Tensor)")
def fwd(q, k, v, alibi_slopes, sinks, rng_state, ints, floats):
    return _dense_impl(q, k, v, alibi_slopes, sinks, rng_state, ints, floats)


@fwd.register_fake
def _fwd_fake(q, k, v, alibi_slopes, sinks, rng_state, ints, floats):
    return q.new_empty(q.shape), q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32)


# ---- varlen (total_tokens, heads, dim) forward, optionally paged ------------------------------------
_VARLEN_ARGS = ("Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor? cu_seqlens_k, Tensor? seqused_k, "
                "Tensor? block_table, Tensor? alibi_slopes, Tensor? sinks, Tensor? rng_state, SymInt[] ints, "
                "float[] floats")


@torch.library.custom_op(_NS + "varlen_fwd", mutates_args=(), schema="(" + _VARLEN_ARGS + ") -> (Tensor, Tensor)")
def varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, rng_state, ints,
               floats):
    return _varlen_impl(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks,
                        rng_state, ints, floats)


@varlen_fwd.register_fake
def _varlen_fwd_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, rng_state,
                     ints, floats):
    return q.new_empty(q.shape), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


@torch.library.custom_op(_NS + "varlen_fwd_out", mutates_args=("out",),
                         schema="(" + _VARLEN_ARGS + ", Tensor(a!) out) -> Tensor")
def varlen_fwd_out(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, rng_state,
                   ints, floats, out):
    _, lse = _varlen_impl(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks,
                          rng_state, ints, floats, out=out)
    return lse


@varlen_fwd_out.register_fake
def _varlen_fwd_out_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks,
                         rng_state, ints, floats, out):
    return q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


# ---- backward ------------------------------------------------------------------------------------------
@torch.library.custom_op(
    _NS + "bwd", mutates_args=(),
    schema="(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? cu_seqlens_q, "
           "Tensor? cu_seqlens_k, Tensor? alibi_slopes, Tensor? sinks, Tensor? rng_state, SymInt[] ints, "
           "float[] floats) -> (Tensor, Tensor, Tensor, Tensor)")
def bwd(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes, sinks, rng_state, ints, floats):
    msq, msk, causal, wl, wr, deterministic = ints
    scale, softcap, dropout_p = floats
    rng, seed, offset = _rng_args(rng_state, q)
    dq, dk, dv, dsinks = F.backward(
        dout, q, k, v, out, lse, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, max_seqlen_q=msq,
        max_seqlen_k=msk, softmax_scale=scale, causal=bool(causal), window_size=(wl, wr), softcap=softcap,
        alibi_slopes=alibi_slopes, sinks=sinks, dropout_p=dropout_p, dropout_seed=seed, dropout_offset=offset,
        rng_state=rng, deterministic=bool(deterministic))
    if dsinks is None:
        # A custom op cannot return None; an empty tensor stands for "no sinks".
        dsinks = q.new_empty((0,), dtype=torch.float32)
    return dq, dk, dv, dsinks


@bwd.register_fake
def _bwd_fake(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes, sinks, rng_state, ints, floats):
    n = sinks.shape[0] if sinks is not None else 0
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            q.new_empty((n,), dtype=torch.float32))


def _deterministic(flag):
    return bool(flag) or torch.are_deterministic_algorithms_enabled()


def _fwd_setup(ctx, inputs, output):
    q, k, v, alibi_slopes, sinks, rng_state, ints, floats = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, alibi_slopes, sinks, rng_state)
    ctx.ints, ctx.floats = ints, floats
    ctx.mark_non_differentiable(lse)


def _fwd_backward(ctx, dout, _dlse):
    q, k, v, out, lse, alibi_slopes, sinks, rng_state = ctx.saved_tensors
    causal, wl, wr, _num_splits, det = ctx.ints
    dq, dk, dv, dsinks = torch.ops.flashattn.bwd(
        dout, q, k, v, out, lse, None, None, alibi_slopes, sinks, rng_state,
        [0, 0, causal, wl, wr, int(_deterministic(det))], ctx.floats)
    return dq, dk, dv, None, dsinks if sinks is not None else None, None, None, None


def _varlen_setup(ctx, inputs, output):
    (q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, rng_state, ints,
     floats) = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes, sinks, rng_state)
    ctx.paged = block_table is not None or seqused_k is not None
    ctx.ints, ctx.floats = ints, floats
    ctx.mark_non_differentiable(lse)


def _varlen_backward(ctx, dout, _dlse):
    q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes, sinks, rng_state = ctx.saved_tensors
    if ctx.paged:
        raise L.FlashAttnNotSupported(
            "flashattn: backward of attention with block_table / seqused_k (paged K/V) is not supported",
            L.STATUS_NOT_SUPPORTED)
    msq, msk, causal, wl, wr, _num_splits, det = ctx.ints
    dq, dk, dv, dsinks = torch.ops.flashattn.bwd(
        dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes, sinks, rng_state,
        [msq, msk, causal, wl, wr, int(_deterministic(det))], ctx.floats)
    return (dq, dk, dv, None, None, None, None, None, dsinks if sinks is not None else None, None, None, None)


torch.library.register_autograd(_NS + "fwd", _fwd_backward, setup_context=_fwd_setup)
torch.library.register_autograd(_NS + "varlen_fwd", _varlen_backward, setup_context=_varlen_setup)


# ---- KV cache (inference; appends in place) ------------------------------------------------------------
@torch.library.custom_op(
    _NS + "fwd_kvcache", mutates_args=("k_cache", "v_cache", "out"),
    schema="(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor? k, Tensor? v, Tensor? rotary_cos, "
           "Tensor? rotary_sin, Tensor? cache_seqlens, Tensor? cache_batch_idx, Tensor? cache_leftpad, "
           "Tensor? block_table, Tensor? alibi_slopes, Tensor? sinks, int[] ints, float[] floats, "
           "Tensor(c!) out) -> Tensor")
def fwd_kvcache(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx, cache_leftpad,
                block_table, alibi_slopes, sinks, ints, floats, out):
    return _kvcache_impl(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx,
                         cache_leftpad, block_table, alibi_slopes, sinks, ints, floats, out)


def _kvcache_impl(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx, cache_leftpad,
                  block_table, alibi_slopes, sinks, ints, floats, out):
    causal, wl, wr, rotary_interleaved, num_splits = ints
    scale, softcap = floats
    _, lse = F.forward_kvcache(
        q, k_cache, v_cache, k, v, cache_seqlens=cache_seqlens, cache_batch_idx=cache_batch_idx,
        cache_leftpad=cache_leftpad, block_table=block_table, rotary_cos=rotary_cos, rotary_sin=rotary_sin,
        rotary_interleaved=bool(rotary_interleaved), softmax_scale=scale, causal=bool(causal),
        window_size=(wl, wr), softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks, num_splits=num_splits,
        out=out)
    return lse


@fwd_kvcache.register_fake
def _fwd_kvcache_fake(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx,
                      cache_leftpad, block_table, alibi_slopes, sinks, ints, floats, out):
    return q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32)


# ---- entry points used by the public functions ---------------------------------------------------------
# The ops above carry their own autograd formulas (so torch.ops.flashattn.* are differentiable and opcheck
# verifies them). On the hot path the public functions avoid two generic costs of that machinery:
# - in eager mode on plain CPU/CUDA tensors they call the implementations directly: the dispatcher round
#   trips (Python autograd kernel -> redispatch -> Python backend kernel, ~8 arguments converted each
#   time) cost about as much as the whole binding. While torch.compile traces, for tensor subclasses
#   (FakeTensor, DTensor, ...) and for meta tensors the ops are called, so tracing and subclasses work;
# - for gradients they use thin autograd.Functions (same formulas, same backward op) instead of the
#   custom-op autograd wrapper, which re-walks the schema once per argument on every call.
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or torch._dynamo.is_compiling
_bump_version = torch.autograd.graph.increment_version


def _direct(q):
    return type(q) is torch.Tensor and (q.is_cuda or q.is_cpu) and not _is_compiling()


def _dense_call(q, k, v, alibi_slopes, sinks, rng_state, ints, floats):
    if _direct(q):
        return _dense_impl(q, k, v, alibi_slopes, sinks, rng_state, ints, floats)
    return torch.ops.flashattn.fwd(q, k, v, alibi_slopes, sinks, rng_state, ints, floats)


def _dense_impl(q, k, v, alibi_slopes, sinks, rng_state, ints, floats):
    causal, wl, wr, num_splits, _deterministic = ints
    return _forward(q, k, v, None, None, None, None, alibi_slopes, sinks, rng_state, 0, 0, causal, wl, wr,
                    num_splits, floats)


def _varlen_impl(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, rng_state, ints,
                 floats, out=None):
    msq, msk, causal, wl, wr, num_splits, _deterministic = ints
    return _forward(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, rng_state,
                    msq, msk, causal, wl, wr, num_splits, floats, out=out)


def _varlen_call(*args):
    if _direct(args[0]):
        return _varlen_impl(*args)
    return torch.ops.flashattn.varlen_fwd(*args)


class _DenseFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, alibi_slopes, sinks, rng_state, ints, floats):
        out, lse = _dense_call(q, k, v, alibi_slopes, sinks, rng_state, ints, floats)
        _fwd_setup(ctx, (q, k, v, alibi_slopes, sinks, rng_state, ints, floats), (out, lse))
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        return _fwd_backward(ctx, dout, dlse)


class _VarlenFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, rng_state,
                ints, floats):
        args = (q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, rng_state, ints,
                floats)
        out, lse = _varlen_call(*args)
        _varlen_setup(ctx, args, (out, lse))
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        return _varlen_backward(ctx, dout, dlse)


def _needs_grad(*ts):
    if not torch.is_grad_enabled():
        return False
    for t in ts:
        if t is not None and t.requires_grad:
            return True
    return False


def dense_attention(q, k, v, alibi_slopes, sinks, rng_state, ints, floats):
    if _needs_grad(q, k, v, sinks):
        return _DenseFn.apply(q, k, v, alibi_slopes, sinks, rng_state, ints, floats)
    return _dense_call(q, k, v, alibi_slopes, sinks, rng_state, ints, floats)


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, rng_state,
                     ints, floats):
    args = (q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, rng_state, ints,
            floats)
    if _needs_grad(q, k, v, sinks):
        return _VarlenFn.apply(*args)
    return _varlen_call(*args)


def varlen_attention_out(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks,
                         rng_state, ints, floats, out):
    """Forward into a caller-provided ``out`` (vLLM); returns lse."""
    args = (q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, rng_state, ints,
            floats)
    if _direct(q) and not _needs_grad(out):
        _, lse = _varlen_impl(*args, out=out)
        _bump_version(out)  # what the op's declared mutation would do: autograd sees `out` changed
        return lse
    return torch.ops.flashattn.varlen_fwd_out(*args, out)


def kvcache_attention(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx,
                      cache_leftpad, block_table, alibi_slopes, sinks, ints, floats, out):
    """KV-cache forward (appends k/v in place, writes out); returns lse."""
    args = (q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx, cache_leftpad,
            block_table, alibi_slopes, sinks, ints, floats, out)
    if _direct(q) and not _needs_grad(k_cache, v_cache, out):
        lse = _kvcache_impl(*args)
        if k is not None:
            _bump_version(k_cache)
            _bump_version(v_cache)
        _bump_version(out)
        return lse
    return torch.ops.flashattn.fwd_kvcache(*args)
