"""vllm_flash_attn compatible functions (vllm_flash_attn.flash_attn_interface), forward only.

Signatures match the vLLM fork (note max_seqlen_q precedes cu_seqlens_q in flash_attn_varlen_func).
Unlike the fork, an argument this library cannot honour raises instead of being silently ignored: the
FA3-only arguments (q_v, scheduler_metadata, q/k/v_descale) raise on FA2 if ANY is given, dropout and
return_attn_probs raise (the fork compiles dropout out), and fa_version=3 raises until the Hopper path exists.
"""

from . import _lib as L
from . import interface as I
from ._lib import FlashAttnInvalidArgument, FlashAttnNotSupported

__all__ = ["flash_attn_varlen_func", "flash_attn_with_kvcache", "is_fa_version_supported",
           "fa_version_unsupported_reason", "get_scheduler_metadata", "DEFAULT_FA_VERSION"]

DEFAULT_FA_VERSION = 2


def fa_version_unsupported_reason(fa_version, device=None):
    """None when ``fa_version`` can run on ``device`` (default: the current CUDA device), else why not."""
    if fa_version not in (2, 3):
        return "Unsupported FA version: %r (flashattn implements the FA2 interface)" % (fa_version,)
    if fa_version == 3:
        return "FA3 (the Hopper sm90 path) is not available in this flashattn build; use fa_version=2"
    try:
        info = L.lib().build_info()
    except ImportError as e:
        return str(e)
    dev = _device_of(device)
    if dev is None or dev[0] == "cpu":
        return None
    if not info["cuda_enabled"]:
        return "this flashattn build has no CUDA kernels (CPU backend only)"
    try:
        import torch
        major, minor = torch.cuda.get_device_capability(dev[1])
    except Exception as e:  # no CUDA runtime / no device
        return "cannot query the CUDA device: %s" % (e,)
    if major * 10 + minor < 75:
        return "flashattn needs compute capability >= 7.5 (got %d.%d)" % (major, minor)
    return None


def _device_of(device):
    if device is None:
        try:
            import torch
            if torch.cuda.is_available():
                return ("cuda", torch.cuda.current_device())
        except ImportError:
            pass
        return None
    if isinstance(device, int):
        return ("cuda", device)
    s = str(device)
    if s.startswith("cuda"):
        idx = getattr(device, "index", None)
        if idx is None and ":" in s:
            idx = int(s.split(":")[1])
        return ("cuda", 0 if idx is None else idx)
    return ("cpu", 0)


def is_fa_version_supported(fa_version, device=None):
    return fa_version_unsupported_reason(fa_version, device) is None


def _check_version(fa_version):
    reason = fa_version_unsupported_reason(fa_version, "cpu")  # device-independent part
    if reason is not None:
        raise FlashAttnNotSupported("fa_version=%r: %s" % (fa_version, reason))


def _reject(**kw):
    given = [k for k, v in kw.items() if v is not None]
    if given:
        raise FlashAttnNotSupported("%s: FA3-only argument(s) not supported by flashattn's FA2 path"
                                    % ", ".join(given))


def flash_attn_varlen_func(q, k, v, max_seqlen_q, cu_seqlens_q, max_seqlen_k, cu_seqlens_k=None, seqused_k=None,
                           q_v=None, dropout_p=0.0, softmax_scale=None, causal=False, window_size=None, softcap=0.0,
                           alibi_slopes=None, deterministic=False, return_attn_probs=False, block_table=None,
                           return_softmax_lse=False, out=None, scheduler_metadata=None, q_descale=None,
                           k_descale=None, v_descale=None, fa_version=DEFAULT_FA_VERSION, *, sinks=None):
    """Varlen attention, forward only. k/v: (total_k, hk, d) with cu_seqlens_k, or paged
    (num_blocks, block_size, hk, d) with block_table and seqused_k. ``out`` is written in place.
    Returns out, or (out, softmax_lse (h, total_q)) with return_softmax_lse."""
    _check_version(fa_version)
    _reject(q_v=q_v, scheduler_metadata=scheduler_metadata, q_descale=q_descale, k_descale=k_descale,
            v_descale=v_descale)
    if dropout_p:
        raise FlashAttnNotSupported("dropout_p=%r: the vLLM interface is inference-only (no dropout)" % (dropout_p,))
    if return_attn_probs:
        raise FlashAttnNotSupported("return_attn_probs: attention probabilities are not returned by flashattn")
    if cu_seqlens_k is None and seqused_k is None:
        raise FlashAttnInvalidArgument("cu_seqlens_k, seqused_k: one of them must be given")
    if block_table is not None and seqused_k is None:
        raise FlashAttnInvalidArgument("block_table: paged K/V requires seqused_k")
    if block_table is not None:
        cu_seqlens_k = None  # paged keys are located through block_table; their counts are seqused_k
    # `deterministic` is accepted: the forward is always deterministic.
    scale = I._scale(softmax_scale, q.shape[-1])
    wl, wr = I._window(window_size)
    if I._is_torch(q):
        args = (q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, None,
                [max_seqlen_q, max_seqlen_k, int(causal), wl, wr, 0, 0], [scale, float(softcap), 0.0])
        if out is not None:
            lse = I._ops.varlen_attention_out(*args, out)
        else:
            out, lse = I._ops.varlen_attention(*args)
    else:
        out, lse = I.F.forward(q, k, v, out=out, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
                               seqused_k=seqused_k, block_table=block_table, max_seqlen_q=max_seqlen_q,
                               max_seqlen_k=max_seqlen_k, softmax_scale=scale, causal=causal, window_size=(wl, wr),
                               softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks)
    return (out, lse) if return_softmax_lse else out


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, block_table=None,
                            softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0, return_softmax_lse=False, *,
                            out=None, scheduler_metadata=None, q_descale=None, k_descale=None, v_descale=None,
                            fa_version=DEFAULT_FA_VERSION, sinks=None):
    """KV-cache attention, forward only; k/v appended in place; ``out`` written in place.
    Returns out, or (out, softmax_lse (b, h, sq))."""
    _check_version(fa_version)
    _reject(scheduler_metadata=scheduler_metadata, q_descale=q_descale, k_descale=k_descale, v_descale=v_descale)
    if window_size is None:
        window_size = (-1, -1)
    return I._kvcache(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx,
                      cache_leftpad, block_table, softmax_scale, causal, window_size, softcap, rotary_interleaved,
                      alibi_slopes, num_splits, return_softmax_lse, sinks, out)


def get_scheduler_metadata(*args, **kwargs):
    """FA3-only ahead-of-time scheduling; flashattn's split decisions need no metadata (graph-safe)."""
    raise FlashAttnNotSupported("get_scheduler_metadata: FA3-only; not supported by flashattn's FA2 path")
