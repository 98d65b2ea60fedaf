"""Padded batch <-> varlen (packed tokens) conversion, as flash_attn.bert_padding (2.7+).

Works on torch tensors (differentiable: plain indexing and index_put) and on numpy arrays.
"""

__all__ = ["unpad_input", "pad_input"]


def _is_torch(x):
    import sys
    t = sys.modules.get("torch")
    return t is not None and isinstance(x, t.Tensor)


def unpad_input(hidden_states, attention_mask, unused_mask=None):
    """Remove padding tokens.

    hidden_states: (batch, seqlen, ...); attention_mask: (batch, seqlen) bool/int, 1 = real token;
    unused_mask (optional, same shape): tokens that are allocated but not attended to (kept in the
    output, counted in cu_seqlens, not in seqused).
    Returns (hidden_states (total, ...), indices (total,) into the flattened (batch*seqlen) axis,
    cu_seqlens int32 (batch + 1,), max_seqlen_in_batch (int), seqused int32 (batch,)).
    """
    if _is_torch(hidden_states):
        import torch
        all_masks = attention_mask.bool()
        if unused_mask is not None:
            all_masks = all_masks | unused_mask.bool()
        seqlens = all_masks.sum(dim=-1, dtype=torch.int32)
        used_seqlens = attention_mask.bool().sum(dim=-1, dtype=torch.int32)
        indices = torch.nonzero(all_masks.flatten(), as_tuple=False).flatten()
        max_seqlen = int(seqlens.max().item()) if seqlens.numel() else 0
        cu_seqlens = torch.nn.functional.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
        flat = hidden_states.reshape((-1,) + tuple(hidden_states.shape[2:]))
        return flat[indices], indices, cu_seqlens, max_seqlen, used_seqlens
    import numpy as np
    mask = np.asarray(attention_mask).astype(bool)
    all_masks = mask | np.asarray(unused_mask).astype(bool) if unused_mask is not None else mask
    seqlens = all_masks.sum(axis=-1).astype(np.int32)
    used = mask.sum(axis=-1).astype(np.int32)
    indices = np.flatnonzero(all_masks.reshape(-1))
    cu = np.zeros(len(seqlens) + 1, dtype=np.int32)
    np.cumsum(seqlens, out=cu[1:])
    flat = np.asarray(hidden_states).reshape((-1,) + tuple(hidden_states.shape[2:]))
    return flat[indices], indices, cu, int(seqlens.max()) if len(seqlens) else 0, used


def pad_input(hidden_states, indices, batch, seqlen):
    """Inverse of unpad_input: (total, ...) -> (batch, seqlen, ...), zeros at padding positions."""
    rest = tuple(hidden_states.shape[1:])
    if _is_torch(hidden_states):
        import torch
        out = torch.zeros((batch * seqlen,) + rest, dtype=hidden_states.dtype, device=hidden_states.device)
        out = out.index_put((indices,), hidden_states)  # out-of-place: differentiable w.r.t. hidden_states
        return out.reshape((batch, seqlen) + rest)
    import numpy as np
    out = np.zeros((batch * seqlen,) + rest, dtype=hidden_states.dtype)
    out[np.asarray(indices)] = hidden_states
    return out.reshape((batch, seqlen) + rest)
