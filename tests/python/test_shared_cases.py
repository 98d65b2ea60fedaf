"""The shared edge-case table (tests/cases.json, also used by the C++ tests) through the Python package:
numpy inputs on the CPU backend vs the fp64 reference. Every case runs in fp32 (numpy has no bf16), so the
tolerance is the fp32 one; the dtype axis is covered by the C++ and GPU suites."""

import json
import os

import numpy as np
import pytest

import flashattn
from flashattn import functional as F

import reference as R

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cases.json")


def _cases():
    if not os.path.exists(_PATH):
        return []
    with open(_PATH) as f:
        data = json.load(f)
    cases = data if isinstance(data, list) else data.get("cases", [])
    return [c for c in cases if isinstance(c, dict) and "name" in c]


CASES = _cases()
RTOL = 1e-5
GRAD_RTOL = 1e-4


def _check(x, ref, rtol, what):
    x = np.asarray(x, np.float64)
    assert np.all(np.isfinite(x)), "%s: non-finite values" % what
    scale = max(np.abs(ref).max() if ref.size else 0.0, 1e-30)
    if ref.size:
        err = np.abs(x - ref).max() / scale
        assert err <= rtol or np.abs(ref).max() == 0 and np.abs(x).max() == 0, "%s: rel err %.3g" % (what, err)


def _check_lse(lse, ref):
    lse = np.asarray(lse, np.float64)
    assert np.array_equal(np.isposinf(lse), np.isposinf(ref)), "LSE +inf pattern differs"
    fin = np.isfinite(ref)
    if fin.any():
        assert np.abs(lse[fin] - ref[fin]).max() <= 1e-5 * max(1.0, np.abs(ref[fin]).max())


def _common(case, rng):
    h = int(case.get("nheads", 4))
    hk = int(case.get("nheads_k", h))
    d = int(case["head_dim"])
    b = int(case.get("batch", 2))
    alibi = None
    if case.get("alibi"):
        alibi = rng.uniform(0.05, 0.6, size=(b, h) if case["alibi"] == "bh" else (h,)).astype(np.float32)
    sinks = rng.standard_normal(h).astype(np.float32) if case.get("sinks") else None
    kw = dict(causal=bool(case.get("causal", False)), window=tuple(case.get("window", (-1, -1))),
              softcap=float(case.get("softcap", 0.0)), scale=case.get("scale"))
    return b, h, hk, d, alibi, sinks, kw


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _dropout(case, rng):
    p = float(case.get("dropout_p", 0.0))
    seed = int(case.get("dropout_seed", rng.integers(0, 2 ** 62)))
    offset = int(case.get("dropout_offset", rng.integers(0, 2 ** 32)))
    return p, seed, offset


def _opts(kw, alibi, sinks, p, seed, offset):
    return dict(softmax_scale=kw["scale"], causal=kw["causal"], window_size=kw["window"], softcap=kw["softcap"],
                alibi_slopes=alibi, sinks=sinks, dropout_p=p, dropout_seed=seed, dropout_offset=offset)


def _run_dense(case, rng, grads):
    b, h, hk, d, alibi, sinks, kw = _common(case, rng)
    sq, sk = int(case["seqlen_q"]), int(case["seqlen_k"])
    q, k, v = _rand(rng, b, sq, h, d), _rand(rng, b, sk, hk, d), _rand(rng, b, sk, hk, d)
    p, seed, offset = _dropout(case, rng)
    opts = _opts(kw, alibi, sinks, p, seed, offset)
    out, lse = F.forward(q, k, v, num_splits=int(case.get("num_splits", 0)), **opts)
    dout = _rand(rng, b, sq, h, d) if grads else None
    ref = R.attention(q, k, v, kw["scale"], kw["causal"], kw["window"], kw["softcap"], alibi, sinks, p, seed, offset,
                      dout)
    _check(out, ref["out"], RTOL, "out")
    _check_lse(lse, ref["lse"])
    if grads:
        dq, dk, dv, ds = F.backward(dout, q, k, v, out, lse, **opts)
        for name, x in (("dq", dq), ("dk", dk), ("dv", dv)):
            _check(x, ref[name], GRAD_RTOL, name)
        if sinks is not None:
            _check(ds, ref["dsinks"], GRAD_RTOL, "dsinks")


def _run_varlen(case, rng, grads):
    b_unused, h, hk, d, alibi, sinks, kw = _common(case, rng)
    lq, lk = list(case["seqlens_q"]), list(case["seqlens_k"])
    b = len(lq)
    if alibi is not None and alibi.ndim == 2:
        alibi = rng.uniform(0.05, 0.6, size=(b, h)).astype(np.float32)
    cu_q = np.concatenate([[0], np.cumsum(lq)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lk)]).astype(np.int32)
    q = _rand(rng, int(cu_q[-1]), h, d)
    k, v = _rand(rng, int(cu_k[-1]), hk, d), _rand(rng, int(cu_k[-1]), hk, d)
    p, seed, offset = _dropout(case, rng)
    opts = _opts(kw, alibi, sinks, p, seed, offset)
    mq, mk = max(lq + [0]), max(lk + [0])
    page = case.get("page_size")
    if page:
        page = int(page)
        pages = max(1, -(-mk // page))
        num_pages = b * pages + 3
        kp, vp = _rand(rng, num_pages, page, hk, d), _rand(rng, num_pages, page, hk, d)
        bt = rng.permutation(num_pages)[: b * pages].reshape(b, pages).astype(np.int32)
        for i in range(b):  # scatter the dense keys of sequence i into its pages
            for t in range(lk[i]):
                kp[bt[i, t // page], t % page] = k[cu_k[i] + t]
                vp[bt[i, t // page], t % page] = v[cu_k[i] + t]
        out, lse = F.forward(q, kp, vp, cu_seqlens_q=cu_q, seqused_k=np.array(lk, np.int32), block_table=bt,
                             max_seqlen_q=mq, max_seqlen_k=pages * page, **opts)
    else:
        out, lse = F.forward(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=mq, max_seqlen_k=mk, **opts)
    dout = _rand(rng, *q.shape) if grads else None
    ref = R.attention_varlen(q, k, v, cu_q, cu_k, kw["scale"], kw["causal"], kw["window"], kw["softcap"], alibi,
                             sinks, p, seed, offset, dout)
    _check(out, ref["out"], RTOL, "out")
    _check_lse(lse, ref["lse"])
    if grads:
        dq, dk, dv, ds = F.backward(dout, q, k, v, out, lse, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=mq,
                                    max_seqlen_k=mk, **opts)
        for name, x in (("dq", dq), ("dk", dk), ("dv", dv)):
            _check(x, ref[name], GRAD_RTOL, name)
        if sinks is not None:
            _check(ds, ref["dsinks"], GRAD_RTOL, "dsinks")


def _run_kvcache(case, rng):
    b, h, hk, d, alibi, sinks, kw = _common(case, rng)
    sq = int(case["seqlen_q"])
    s_new = int(case.get("seqlen_new", 0))
    cache_len = int(case.get("cache_len", case["seqlen_k"]))
    seqlens = np.array(case.get("cache_seqlens", [int(case["seqlen_k"]) - s_new] * b), np.int32)
    leftpad = np.array(case["leftpad"], np.int32) if "leftpad" in case else None
    page = case.get("page_size")
    bt = idx = None
    if page:
        page = int(page)
        pages = -(-cache_len // page)
        num_pages = b * pages + 2
        kc, vc = _rand(rng, num_pages, page, hk, d), _rand(rng, num_pages, page, hk, d)
        bt = rng.permutation(num_pages)[: b * pages].reshape(b, pages).astype(np.int32)
        capacity = pages * page
    else:
        rows = b + 2 if case.get("batch_idx") else b
        kc, vc = _rand(rng, rows, cache_len, hk, d), _rand(rng, rows, cache_len, hk, d)
        if case.get("batch_idx"):
            idx = rng.permutation(rows)[:b].astype(np.int32)
        capacity = cache_len
    q = _rand(rng, b, sq, h, d)
    kn = _rand(rng, b, s_new, hk, d) if s_new else None
    vn = _rand(rng, b, s_new, hk, d) if s_new else None
    cos = sin = None
    if case.get("rotary_dim"):
        ang = rng.uniform(0, 2 * np.pi, size=(capacity, int(case["rotary_dim"]) // 2))
        cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    inter = bool(case.get("rotary_interleaved", False))
    ref_out, ref_lse, ref_kc, ref_vc = R.kvcache_attention(
        q, kc, vc, kn, vn, seqlens, idx, leftpad, bt, cos, sin, inter, kw["scale"], kw["causal"], kw["window"],
        kw["softcap"], alibi, sinks)
    kc2, vc2 = kc.copy(), vc.copy()
    out, lse = F.forward_kvcache(q, kc2, vc2, kn, vn, cache_seqlens=seqlens, cache_batch_idx=idx,
                                 cache_leftpad=leftpad, block_table=bt, rotary_cos=cos, rotary_sin=sin,
                                 rotary_interleaved=inter, softmax_scale=kw["scale"], causal=kw["causal"],
                                 window_size=kw["window"], softcap=kw["softcap"], alibi_slopes=alibi, sinks=sinks,
                                 num_splits=int(case.get("num_splits", 0)))
    _check(out, ref_out, RTOL, "out")
    _check_lse(lse, ref_lse)
    np.testing.assert_allclose(kc2, ref_kc, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(vc2, ref_vc.astype(np.float32))


@pytest.mark.skipif(not CASES, reason="tests/cases.json not present")
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case, rng):
    op = case.get("op", "fwd")
    if op == "fwd":
        _run_dense(case, rng, grads=False)
    elif op == "bwd":
        _run_dense(case, rng, grads=True)
    elif op == "varlen":
        _run_varlen(case, rng, grads=False)
    elif op == "varlen_bwd":
        _run_varlen(case, rng, grads=True)
    elif op == "kvcache":
        _run_kvcache(case, rng)
    else:
        pytest.skip("op %r is not exercised by the Python suite" % op)


def test_cases_file_is_read():
    """The table exists in this repository and the Python suite actually runs it."""
    assert os.path.exists(_PATH) and len(CASES) > 0
