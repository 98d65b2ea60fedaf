"""Rotary position embedding, as flash_attn.layers.rotary.apply_rotary_emb (plain array math).

Same convention as the KV-cache kernels (docs/semantics.md): cos/sin are (seqlen_ro, rotary_dim / 2);
interleaved rotates pairs (2r, 2r+1) (GPT-J), otherwise (r, r + rotary_dim/2) (GPT-NeoX); dims past
rotary_dim pass through. Differentiable for torch tensors (built from ordinary ops).
"""

__all__ = ["apply_rotary_emb"]


def _is_torch(x):
    import sys
    t = sys.modules.get("torch")
    return t is not None and isinstance(x, t.Tensor)


def _positions_torch(torch, x, seqlen_offsets, cu_seqlens, max_seqlen):
    dev = x.device
    if cu_seqlens is None:
        b, s = x.shape[0], x.shape[1]
        pos = torch.arange(s, device=dev).unsqueeze(0).expand(b, s)
        if isinstance(seqlen_offsets, int):
            return pos + seqlen_offsets
        return pos + seqlen_offsets.to(dev).long().unsqueeze(1)
    total = x.shape[0]
    cu = cu_seqlens.to(dev).long()
    tok = torch.arange(total, device=dev)
    seq = torch.searchsorted(cu[1:], tok, right=True)  # sequence of each token
    pos = tok - cu[seq]
    if isinstance(seqlen_offsets, int):
        return pos + seqlen_offsets
    return pos + seqlen_offsets.to(dev).long()[seq]


def _positions_numpy(np, x, seqlen_offsets, cu_seqlens):
    if cu_seqlens is None:
        b, s = x.shape[0], x.shape[1]
        pos = np.broadcast_to(np.arange(s)[None, :], (b, s))
        off = np.asarray(seqlen_offsets).astype(np.int64)
        return pos + (off[:, None] if off.ndim else off)
    cu = np.asarray(cu_seqlens).astype(np.int64)
    tok = np.arange(x.shape[0])
    seq = np.searchsorted(cu[1:], tok, side="right")
    pos = tok - cu[seq]
    off = np.asarray(seqlen_offsets).astype(np.int64)
    return pos + (off[seq] if off.ndim else off)


def apply_rotary_emb(x, cos, sin, interleaved=False, inplace=False, seqlen_offsets=0, cu_seqlens=None,
                     max_seqlen=None):
    """x: (batch, seqlen, nheads, headdim), or (total, nheads, headdim) with cu_seqlens (batch + 1,).
    cos, sin: (seqlen_ro, rotary_dim / 2). seqlen_offsets: int or (batch,) (e.g. KV-cache lengths).
    Returns x with its first rotary_dim features rotated (written into x when inplace=True)."""
    rd2 = cos.shape[-1]
    rd = 2 * rd2
    if rd > x.shape[-1]:
        raise ValueError("rotary_dim (%d) must be <= headdim (%d)" % (rd, x.shape[-1]))
    if _is_torch(x):
        import torch
        pos = _positions_torch(torch, x, seqlen_offsets, cu_seqlens, max_seqlen)
        if int(pos.max()) >= cos.shape[0] if pos.numel() else False:
            raise ValueError("rotary: positions reach %d but cos/sin have %d rows" % (int(pos.max()), cos.shape[0]))
        c = cos[pos].unsqueeze(-2).to(torch.float32)  # (..., 1, rd2), broadcast over heads
        s_ = sin[pos].unsqueeze(-2).to(torch.float32)
        xr = x[..., :rd].to(torch.float32)
        if interleaved:
            x1, x2 = xr[..., 0::2], xr[..., 1::2]
        else:
            x1, x2 = xr[..., :rd2], xr[..., rd2:]
        y1 = x1 * c - x2 * s_
        y2 = x1 * s_ + x2 * c
        rot = torch.stack((y1, y2), dim=-1).flatten(-2) if interleaved else torch.cat((y1, y2), dim=-1)
        rot = rot.to(x.dtype)
        if inplace:
            x[..., :rd] = rot
            return x
        return torch.cat((rot, x[..., rd:]), dim=-1)
    import numpy as np
    xa = np.asarray(x)
    pos = _positions_numpy(np, xa, seqlen_offsets, cu_seqlens)
    c = np.asarray(cos)[pos][..., None, :].astype(np.float64)
    s_ = np.asarray(sin)[pos][..., None, :].astype(np.float64)
    xr = xa[..., :rd].astype(np.float64)
    if interleaved:
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
    else:
        x1, x2 = xr[..., :rd2], xr[..., rd2:]
    y1 = x1 * c - x2 * s_
    y2 = x1 * s_ + x2 * c
    rot = np.stack((y1, y2), axis=-1).reshape(xr.shape) if interleaved else np.concatenate((y1, y2), axis=-1)
    rot = rot.astype(xa.dtype)
    if inplace:
        xa[..., :rd] = rot
        return xa
    return np.concatenate((rot, xa[..., rd:]), axis=-1)
