"""numpy fp64 reference of the attention function (docs/semantics.md), independent of the library.

Plain O(sq * sk) math per sequence and head, written from the spec: scores, softcap, ALiBi, window/causal
masks, sinks, dropout (Philox4x32-10 keep mask of docs/dropout.md, reimplemented here), LSE, and the
analytic backward. Also a "low precision" variant that rounds scores, P and the output to the input dtype
at each step, which gives the error budget of the FA rule for fp16 inputs.
"""

import numpy as np

# ---- Dropout mask: Philox4x32-10 keyed by (seed, offset), counter from (b, h, i, j) only --------------
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Vectorised Philox4x32-10 (Salmon et al. 2011). Counters: uint64 arrays holding 32-bit values."""
    c = [np.asarray(x, dtype=np.uint64) & _MASK32 for x in (c0, c1, c2, c3)]
    k0, k1 = int(k0) & 0xFFFFFFFF, int(k1) & 0xFFFFFFFF
    for _ in range(10):
        p0 = _M0 * c[0]
        p1 = _M1 * c[2]
        hi0, lo0 = p0 >> np.uint64(32), p0 & _MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & _MASK32
        c = [hi1 ^ c[1] ^ np.uint64(k0), lo1, hi0 ^ c[3] ^ np.uint64(k1), lo0]
        k0 = (k0 + _W0) & 0xFFFFFFFF
        k1 = (k1 + _W1) & 0xFFFFFFFF
    return c


def dropout_keep_threshold(p):
    t = int((1.0 - float(np.float32(p))) * 65536.0 + 0.5)
    return min(max(t, 1), 65536)


def dropout_keep(seed, offset, bh, sq, sk, p):
    """Boolean keep mask (sq, sk) of head-row bh = b * nheads + h: 16 random bits per (i, j)."""
    seed, offset = int(seed) & (2 ** 64 - 1), int(offset) & (2 ** 64 - 1)
    i = np.arange(sq, dtype=np.uint64)[:, None]
    j = np.arange(sk, dtype=np.uint64)[None, :]
    g = j // np.uint64(8)
    shape = (sq, sk)
    words = philox4x32_10(np.broadcast_to(g, shape), np.broadcast_to(i, shape), np.full(shape, bh, np.uint64),
                          np.full(shape, offset & 0xFFFFFFFF, np.uint64), seed & 0xFFFFFFFF,
                          (seed >> 32) ^ (offset >> 32))
    kk = (j % np.uint64(8)).astype(np.int64)
    w = np.choose(np.broadcast_to(kk >> 1, shape), words)
    u16 = (w >> (np.broadcast_to(kk & 1, shape).astype(np.uint64) * np.uint64(16))) & np.uint64(0xFFFF)
    return u16 < np.uint64(dropout_keep_threshold(p))


# ---- Forward / backward of one sequence -----------------------------------------------------------
def _visible(sq, sk, causal, window):
    wl, wr = window
    if causal:
        wr = 0
    i = np.arange(sq)[:, None]
    j = np.arange(sk)[None, :]
    diag = i + sk - sq
    vis = np.ones((sq, sk), dtype=bool)
    if wl >= 0:
        vis &= j >= diag - wl
    if wr >= 0:
        vis &= j <= diag + wr
    return vis


def _round(x, dtype):
    return x if dtype is None else x.astype(dtype).astype(np.float64)


def attention_seq(q, k, v, scale=None, causal=False, window=(-1, -1), softcap=0.0, alibi=None, sinks=None,
                  keep=None, dropout_p=0.0, dout=None, lowprec=None):
    """One sequence. q (sq, h, d), k/v (sk, hk, d); alibi (h,) slopes; sinks (h,); keep (h, sq, sk) bool.

    Returns dict with out (sq, h, d), lse (h, sq) and, when dout is given, dq, dk, dv, dsinks.
    lowprec: a numpy dtype to round scores, P and out to (the FA rule's low-precision error budget).
    """
    q = np.asarray(q, np.float64)
    k = np.asarray(k, np.float64)
    v = np.asarray(v, np.float64)
    sq, h, d = q.shape
    sk, hk = k.shape[0], k.shape[1]
    g = h // hk
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    vis = _visible(sq, sk, causal, window)
    out = np.zeros((sq, h, d))
    lse = np.full((h, sq), np.inf)
    grads = dout is not None
    if grads:
        dout = np.asarray(dout, np.float64)
        dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
        dsinks = np.zeros(h)
    i = np.arange(sq)[:, None]
    j = np.arange(sk)[None, :]
    for hh in range(h):
        kh = hh // g
        s_raw = _round(scale * (q[:, hh] @ k[:, kh].T), lowprec)
        if softcap > 0:
            t = np.tanh(s_raw / softcap)
            s = softcap * t
        else:
            s = s_raw
        if alibi is not None:
            s = s - float(alibi[hh]) * np.abs(i + sk - sq - j)
        s_m = np.where(vis, s, -np.inf)
        m = s_m.max(axis=1) if sk else np.full(sq, -np.inf)
        if sinks is not None:
            m = np.maximum(m, float(sinks[hh]))
        m_safe = np.where(np.isfinite(m), m, 0.0)
        e = np.where(vis, np.exp(s_m - m_safe[:, None]), 0.0)
        z = e.sum(axis=1)
        if sinks is not None:
            z = z + np.exp(float(sinks[hh]) - m_safe)
        has = z > 0
        p = np.where(has[:, None], e / np.where(has, z, 1.0)[:, None], 0.0)
        lse[hh] = np.where(has, m_safe + np.log(np.where(has, z, 1.0)), np.inf)
        p = _round(p, lowprec)
        dmask = np.ones((sq, sk))
        if keep is not None:
            dmask = keep[hh].astype(np.float64) / (1.0 - dropout_p)
        pd = p * dmask
        out[:, hh] = _round(pd @ v[:, kh], lowprec)
        if grads:
            do = dout[:, hh]
            dv[:, kh] += pd.T @ do
            dpd = do @ v[:, kh].T
            dp = dpd * dmask
            Di = (do * out[:, hh]).sum(axis=1)
            ds = p * (dp - Di[:, None])
            if sinks is not None:
                psink = np.where(has, np.exp(float(sinks[hh]) - m_safe) / np.where(has, z, 1.0), 0.0)
                dsinks[hh] = -(psink * Di).sum()
            if softcap > 0:
                ds = ds * (1.0 - t * t)
            dq[:, hh] = scale * ds @ k[:, kh]
            dk[:, kh] += scale * ds.T @ q[:, hh]
    res = {"out": out, "lse": lse}
    if grads:
        res.update(dq=dq, dk=dk, dv=dv, dsinks=dsinks)
    return res


def _alibi_row(alibi, b):
    if alibi is None:
        return None
    alibi = np.asarray(alibi)
    return alibi[b] if alibi.ndim == 2 else alibi


def attention(q, k, v, scale=None, causal=False, window=(-1, -1), softcap=0.0, alibi=None, sinks=None,
              dropout_p=0.0, seed=0, offset=0, dout=None, lowprec=None):
    """Batched BSHD: q (b, sq, h, d), k/v (b, sk, hk, d). lse (b, h, sq). Grads when dout is given."""
    b, sq, h, _ = q.shape
    sk = k.shape[1]
    res = {}
    parts = []
    for bi in range(b):
        keep = None
        if dropout_p > 0:
            keep = np.stack([dropout_keep(seed, offset, bi * h + hh, sq, sk, dropout_p) for hh in range(h)])
        parts.append(attention_seq(q[bi], k[bi], v[bi], scale, causal, window, softcap, _alibi_row(alibi, bi), sinks,
                                   keep, dropout_p, None if dout is None else dout[bi], lowprec))
    res["out"] = np.stack([p["out"] for p in parts])
    res["lse"] = np.stack([p["lse"] for p in parts])
    if dout is not None:
        for key in ("dq", "dk", "dv"):
            res[key] = np.stack([p[key] for p in parts])
        res["dsinks"] = np.sum([p["dsinks"] for p in parts], axis=0)
    return res


def attention_varlen(q, k, v, cu_q, cu_k, scale=None, causal=False, window=(-1, -1), softcap=0.0, alibi=None,
                     sinks=None, dropout_p=0.0, seed=0, offset=0, dout=None, seqused_k=None, lowprec=None):
    """Varlen THD: q (total_q, h, d), k/v (total_k, hk, d), cu_* (b + 1). lse (h, total_q)."""
    h = q.shape[1]
    out = np.zeros(q.shape)
    lse = np.full((h, q.shape[0]), np.inf)
    grads = dout is not None
    if grads:
        dq, dk, dv = np.zeros(q.shape), np.zeros(k.shape), np.zeros(v.shape)
        dsinks = np.zeros(h)
    for bi in range(len(cu_q) - 1):
        qs, qe = int(cu_q[bi]), int(cu_q[bi + 1])
        ks, ke = int(cu_k[bi]), int(cu_k[bi + 1])
        if seqused_k is not None:
            ke = ks + int(seqused_k[bi])
        sq, sk = qe - qs, ke - ks
        keep = None
        if dropout_p > 0:
            keep = np.stack([dropout_keep(seed, offset, bi * h + hh, sq, sk, dropout_p) for hh in range(h)])
        r = attention_seq(q[qs:qe], k[ks:ke], v[ks:ke], scale, causal, window, softcap, _alibi_row(alibi, bi), sinks,
                          keep, dropout_p, None if dout is None else dout[qs:qe], lowprec)
        out[qs:qe] = r["out"]
        lse[:, qs:qe] = r["lse"]
        if grads:
            dq[qs:qe] = r["dq"]
            dk[ks:ke] += r["dk"]
            dv[ks:ke] += r["dv"]
            dsinks += r["dsinks"]
    res = {"out": out, "lse": lse}
    if grads:
        res.update(dq=dq, dk=dk, dv=dv, dsinks=dsinks)
    return res


def rotary(x, cos, sin, pos, interleaved):
    """Rotate the first 2*cos.shape[1] features of x (n, h, d) at positions pos (n,)."""
    x = np.asarray(x, np.float64).copy()
    rd2 = cos.shape[1]
    pos = np.clip(np.asarray(pos), 0, cos.shape[0] - 1)  # past the table: its last row (docs/semantics.md)
    c = np.asarray(cos, np.float64)[pos][:, None, :]
    s = np.asarray(sin, np.float64)[pos][:, None, :]
    if interleaved:
        a, b = x[..., 0:2 * rd2:2].copy(), x[..., 1:2 * rd2:2].copy()
        x[..., 0:2 * rd2:2] = a * c - b * s
        x[..., 1:2 * rd2:2] = a * s + b * c
    else:
        a, b = x[..., :rd2].copy(), x[..., rd2:2 * rd2].copy()
        x[..., :rd2] = a * c - b * s
        x[..., rd2:2 * rd2] = a * s + b * c
    return x


def kvcache_attention(q, k_cache, v_cache, k_new=None, v_new=None, cache_seqlens=None, cache_batch_idx=None,
                      cache_leftpad=None, block_table=None, rotary_cos=None, rotary_sin=None, interleaved=True,
                      scale=None, causal=False, window=(-1, -1), softcap=0.0, alibi=None, sinks=None):
    """Reference of flash_attn_with_kvcache. Returns (out (b, sq, h, d), lse (b, h, sq), k_cache', v_cache')
    with the caches as they must look after the in-place append (copies; inputs untouched)."""
    kc = np.array(k_cache, np.float64)
    vc = np.array(v_cache, np.float64)
    b, sq, h, d = q.shape
    s_new = 0 if k_new is None else k_new.shape[1]
    outs, lses = [], []
    for bi in range(b):
        cs = int(cache_seqlens[bi])
        lp = 0 if cache_leftpad is None else int(cache_leftpad[bi])
        row = bi if cache_batch_idx is None else int(cache_batch_idx[bi])

        def locate(t):  # (array row, position) of logical cache position t
            if block_table is None:
                return row, t
            page = kc.shape[1]
            return int(block_table[bi][t // page]), t % page

        qb = np.asarray(q[bi], np.float64)
        if rotary_cos is not None:
            qpos = cs + np.arange(sq) if (causal or window[0] >= 0 or window[1] >= 0) else np.full(sq, cs)
            qb = rotary(qb, rotary_cos, rotary_sin, qpos, interleaved)
        if s_new:
            kn = np.asarray(k_new[bi], np.float64)
            if rotary_cos is not None:
                kn = rotary(kn, rotary_cos, rotary_sin, cs + np.arange(s_new), interleaved)
            for t in range(s_new):
                r, p = locate(cs + t)
                kc[r, p] = kn[t]
                vc[r, p] = v_new[bi][t]
        total = cs + s_new
        keys = np.stack([kc[locate(t)] for t in range(lp, total)]) if total > lp else np.zeros((0,) + kc.shape[2:])
        vals = np.stack([vc[locate(t)] for t in range(lp, total)]) if total > lp else np.zeros((0,) + vc.shape[2:])
        r = attention_seq(qb, keys, vals, scale, causal, window, softcap, _alibi_row(alibi, bi), sinks)
        outs.append(r["out"])
        lses.append(r["lse"])
    return np.stack(outs), np.stack(lses), kc, vc


def fa_rule_ok(out, ref, lowprec_out, factor=2.0, atol=1e-5):
    """The FA rule: max|out - ref| <= factor * max|lowprec - ref| + atol."""
    err = np.abs(np.asarray(out, np.float64) - ref).max()
    budget = factor * np.abs(np.asarray(lowprec_out, np.float64) - ref).max() + atol
    return err <= budget, err, budget
