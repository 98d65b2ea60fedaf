"""flash_attn 2.x compatible functions (flash_attn.flash_attn_interface).

Same signatures, defaults and return conventions as flash_attn 2.x, plus keyword-only ``sinks=`` (fp32
(nheads,) attention-sink logits, gpt-oss style) and ``generator=`` (dropout randomness: a torch.Generator
for torch tensors, a numpy.random.Generator or an int seed for numpy arrays).

torch tensors go through the ``torch.ops.flashattn`` custom ops (autograd, torch.compile, CUDA streams);
numpy arrays run the forward on the CPU backend directly (no autograd: use flashattn.functional.backward).
"""

import math
import sys

from . import _lib as L
from . import functional as F
from ._lib import FlashAttnInvalidArgument, FlashAttnNotSupported

__all__ = [
    "flash_attn_func", "flash_attn_qkvpacked_func", "flash_attn_kvpacked_func", "flash_attn_varlen_func",
    "flash_attn_varlen_qkvpacked_func", "flash_attn_varlen_kvpacked_func", "flash_attn_with_kvcache",
]

_torch = None
_ops = None


def _is_torch(x):
    """True for torch tensors; never imports torch for numpy callers."""
    global _torch, _ops
    if _torch is None:
        t = sys.modules.get("torch")
        if t is None or not isinstance(x, t.Tensor):
            return False
        from . import _ops as ops  # registers the custom ops on first use
        _torch, _ops = t, ops
    return isinstance(x, _torch.Tensor)


def _scale(softmax_scale, d):
    return 1.0 / math.sqrt(d) if softmax_scale is None else float(softmax_scale)


def _window(window_size):
    return F.resolve_window(window_size)


def _check_dropout(dropout_p, softcap, return_attn_probs):
    if not 0.0 <= dropout_p < 1.0:
        raise FlashAttnInvalidArgument("dropout_p: expected a probability in [0, 1), got %r" % (dropout_p,))
    if return_attn_probs and dropout_p > 0.0:
        # flash_attn returns S_dmask (P with the dropped entries negated) here; flashattn does not produce
        # it, and returning None silently would break code that decodes the mask.
        raise FlashAttnNotSupported("return_attn_probs=True with dropout_p > 0: the attention-probability/"
                                    "dropout-mask output (S_dmask) is not supported by flashattn")


def _torch_rng_state(q, generator):
    """(seed, offset) drawn from torch's generator as an int64 (2,) tensor on q's device.

    On CUDA this is a device-side draw from the CUDA generator (philox seed/offset, no host sync, and
    capturable in a CUDA graph); the kernel reads the pair from device memory. On the CPU it comes from
    torch's default CPU generator (or ``generator``). Saved by autograd, so backward regenerates the mask.
    """
    lim = 2 ** 62
    return _torch.randint(-lim, lim, (2,), dtype=_torch.int64, device=q.device, generator=generator)


def _numpy_seed(generator):
    import numpy as np
    if generator is None:
        rng = np.random.default_rng()
    elif isinstance(generator, (int, np.integer)):
        rng = np.random.default_rng(int(generator))
    elif isinstance(generator, np.random.Generator):
        rng = generator
    else:
        raise FlashAttnInvalidArgument("generator: expected numpy.random.Generator or int seed for numpy "
                                       "inputs, got %s" % type(generator).__name__)
    seed, offset = rng.integers(0, 2 ** 63, size=2, dtype=np.int64)
    return int(seed), int(offset)


def _attn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, causal,
          window_size, softcap, alibi_slopes, deterministic, return_attn_probs, block_table, seqused_k, sinks,
          generator):
    _check_dropout(dropout_p, softcap, return_attn_probs)
    scale = _scale(softmax_scale, q.shape[-1])
    wl, wr = _window(window_size)
    if _is_torch(q):
        rng_state = _torch_rng_state(q, generator) if dropout_p > 0.0 else None
        floats = [scale, float(softcap), float(dropout_p)]
        if cu_seqlens_q is None:
            out, lse = _ops.dense_attention(q, k, v, alibi_slopes, sinks, rng_state,
                                            [int(causal), wl, wr, 0, int(deterministic)], floats)
        else:
            out, lse = _ops.varlen_attention(
                q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, rng_state,
                [max_seqlen_q, max_seqlen_k, int(causal), wl, wr, 0, int(deterministic)], floats)
    else:
        seed, offset = _numpy_seed(generator) if dropout_p > 0.0 else (0, 0)
        out, lse = F.forward(q, k, v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, seqused_k=seqused_k,
                             block_table=block_table, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
                             softmax_scale=scale, causal=causal, window_size=(wl, wr), softcap=softcap,
                             alibi_slopes=alibi_slopes, sinks=sinks, dropout_p=dropout_p, dropout_seed=seed,
                             dropout_offset=offset)
    if return_attn_probs:
        return out, lse, None
    return out


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                    alibi_slopes=None, deterministic=False, return_attn_probs=False, *, sinks=None,
                    generator=None):
    """Attention over (batch, seqlen, nheads, headdim) tensors.

    q: (b, sq, h, d); k, v: (b, sk, hk, d), h % hk == 0 (GQA/MQA). causal is bottom-right aligned; window
    (left, right), -1 = unbounded; softcap > 0 caps scores with tanh; alibi_slopes fp32 (h) or (b, h);
    sinks fp32 (h). Returns out (b, sq, h, d), or (out, softmax_lse (b, h, sq), None) with
    return_attn_probs.
    """
    return _attn(q, k, v, None, None, 0, 0, dropout_p, softmax_scale, causal, window_size, softcap,
                 alibi_slopes, deterministic, return_attn_probs, None, None, sinks, generator)


def _unbind(x, dim):
    if _is_torch(x):
        return x.unbind(dim)
    n = x.shape[dim]
    idx = [slice(None)] * x.ndim
    out = []
    for i in range(n):
        idx[dim] = i
        out.append(x[tuple(idx)])
    return tuple(out)


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False, *,
                              sinks=None, generator=None):
    """qkv: (b, s, 3, h, d). Returns as flash_attn_func."""
    if qkv.ndim != 5 or qkv.shape[2] != 3:
        raise FlashAttnInvalidArgument("qkv: expected shape (batch, seqlen, 3, nheads, headdim), got %s"
                                       % (tuple(qkv.shape),))
    q, k, v = _unbind(qkv, 2)
    return flash_attn_func(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                           deterministic, return_attn_probs, sinks=sinks, generator=generator)


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False, *,
                             sinks=None, generator=None):
    """q: (b, sq, h, d); kv: (b, sk, 2, hk, d). Returns as flash_attn_func."""
    if kv.ndim != 5 or kv.shape[2] != 2:
        raise FlashAttnInvalidArgument("kv: expected shape (batch, seqlen_k, 2, nheads_k, headdim), got %s"
                                       % (tuple(kv.shape),))
    k, v = _unbind(kv, 2)
    return flash_attn_func(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                           deterministic, return_attn_probs, sinks=sinks, generator=generator)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, block_table=None, *, sinks=None,
                           seqused_k=None, generator=None):
    """Variable-length attention over packed tokens.

    q: (total_q, h, d); k, v: (total_k, hk, d), or paged (num_pages, page_size, hk, d) with block_table
    (b, max_pages) and seqused_k (b,). cu_seqlens_q/k int32 (b + 1); max_seqlen_q/k host ints. Returns out
    (total_q, h, d), or (out, softmax_lse (h, total_q), None).
    """
    if block_table is not None and seqused_k is None:
        if cu_seqlens_k is None:
            raise FlashAttnInvalidArgument("block_table: paged K/V needs seqused_k or cu_seqlens_k")
        # flash_attn's paged varlen gives per-sequence key counts through cu_seqlens_k.
        seqused_k = cu_seqlens_k[1:] - cu_seqlens_k[:-1]
        cu_seqlens_k = None
    return _attn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 causal, window_size, softcap, alibi_slopes, deterministic, return_attn_probs, block_table,
                 seqused_k, sinks, generator)


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None,
                                     causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                                     deterministic=False, return_attn_probs=False, *, sinks=None, generator=None):
    """qkv: (total, 3, h, d). Returns as flash_attn_varlen_func."""
    if qkv.ndim != 4 or qkv.shape[1] != 3:
        raise FlashAttnInvalidArgument("qkv: expected shape (total_tokens, 3, nheads, headdim), got %s"
                                       % (tuple(qkv.shape),))
    q, k, v = _unbind(qkv, 1)
    return _attn(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p, softmax_scale, causal,
                 window_size, softcap, alibi_slopes, deterministic, return_attn_probs, None, None, sinks,
                 generator)


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                                    softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                                    alibi_slopes=None, deterministic=False, return_attn_probs=False, *, sinks=None,
                                    generator=None):
    """q: (total_q, h, d); kv: (total_k, 2, hk, d). Returns as flash_attn_varlen_func."""
    if kv.ndim != 4 or kv.shape[1] != 2:
        raise FlashAttnInvalidArgument("kv: expected shape (total_k, 2, nheads_k, headdim), got %s"
                                       % (tuple(kv.shape),))
    k, v = _unbind(kv, 1)
    return _attn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 causal, window_size, softcap, alibi_slopes, deterministic, return_attn_probs, None, None, sinks,
                 generator)


def _full_seqlens(q, k_cache, block_table, cache_seqlens):
    """flash_attn semantics: no cache_seqlens means the whole cache; an int is broadcast to (batch,)."""
    b = q.shape[0]
    if cache_seqlens is None:
        if block_table is not None:
            n = block_table.shape[1] * k_cache.shape[1]
        else:
            n = k_cache.shape[1]
        cache_seqlens = n
    if isinstance(cache_seqlens, int):
        if _is_torch(q):
            return _torch.full((b,), cache_seqlens, dtype=_torch.int32, device=q.device)
        import numpy as np
        return np.full((b,), cache_seqlens, dtype=np.int32)
    return cache_seqlens


def _kvcache(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx, cache_leftpad,
             block_table, softmax_scale, causal, window_size, softcap, rotary_interleaved, alibi_slopes,
             num_splits, return_softmax_lse, sinks, out):
    if (k is None) != (v is None):
        raise FlashAttnInvalidArgument("k, v: the new keys and values must be given together (got %s and %s)"
                                       % ("a tensor" if k is not None else "None",
                                          "a tensor" if v is not None else "None"))
    if (rotary_cos is None) != (rotary_sin is None):
        raise FlashAttnInvalidArgument("rotary_cos, rotary_sin: give both or neither")
    scale = _scale(softmax_scale, q.shape[-1])
    wl, wr = _window(window_size)
    cache_seqlens = _full_seqlens(q, k_cache, block_table, cache_seqlens)
    if _is_torch(q):
        if out is None:
            out = _torch.empty(q.shape, dtype=q.dtype, device=q.device)
        lse = _ops.kvcache_attention(
            q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx, cache_leftpad,
            block_table, alibi_slopes, sinks, [int(causal), wl, wr, int(bool(rotary_interleaved)), int(num_splits)],
            [scale, float(softcap)], out)
    else:
        out, lse = F.forward_kvcache(
            q, k_cache, v_cache, k, v, cache_seqlens=cache_seqlens, cache_batch_idx=cache_batch_idx,
            cache_leftpad=cache_leftpad, block_table=block_table, rotary_cos=rotary_cos, rotary_sin=rotary_sin,
            rotary_interleaved=rotary_interleaved, softmax_scale=scale, causal=causal, window_size=(wl, wr),
            softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks, num_splits=num_splits, out=out)
    return (out, lse) if return_softmax_lse else out


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, block_table=None,
                            softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0, return_softmax_lse=False, *,
                            sinks=None):
    """Inference attention over a KV cache (forward only), appending k/v in place at cache_seqlens.

    q: (b, sq, h, d); k_cache/v_cache: (b_cache, s_cache, hk, d) or paged (num_pages, page_size, hk, d)
    with block_table (b, max_pages); k/v: (b, s_new, hk, d); cache_seqlens int32 (b,) or int.
    Returns out (b, sq, h, d), or (out, softmax_lse (b, h, sq)).
    """
    return _kvcache(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx,
                    cache_leftpad, block_table, softmax_scale, causal, window_size, softcap, rotary_interleaved,
                    alibi_slopes, num_splits, return_softmax_lse, sinks, None)
