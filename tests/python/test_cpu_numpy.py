"""CPU backend through numpy arrays (no torch): every function against the fp64 reference."""

import os

import numpy as np
import pytest

import flashattn
from flashattn import functional as F
from flashattn import vllm
from flashattn.bert_padding import pad_input, unpad_input
from flashattn.layers.rotary import apply_rotary_emb

import reference as R

FWD_RTOL = 1e-5   # fp32 CPU vs fp64: max|out - ref| / max|ref| (design.md)
GRAD_RTOL = 1e-4  # gradients accumulate longer sums


def rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def rel_err(x, ref):
    ref = np.asarray(ref, np.float64)
    return np.abs(np.asarray(x, np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30)


def assert_close(x, ref, rtol, what):
    assert np.all(np.isfinite(x)), "%s has non-finite values" % what
    e = rel_err(x, ref)
    assert e <= rtol, "%s: relative error %.3g > %.3g" % (what, e, rtol)


def assert_lse(lse, ref):
    lse = np.asarray(lse, np.float64)
    inf = np.isinf(ref)
    assert np.array_equal(np.isinf(lse), inf), "LSE +inf pattern differs"
    if (~inf).any():
        assert np.abs(lse[~inf] - ref[~inf]).max() <= 1e-5 * max(1.0, np.abs(ref[~inf]).max())


# (b, sq, sk, h, hk, d): MHA, GQA, MQA, sq > sk, sq == 1 decode, odd head dims
SHAPES = [
    (2, 17, 23, 4, 4, 32),
    (1, 64, 64, 6, 2, 64),
    (2, 31, 9, 4, 1, 40),
    (3, 1, 57, 8, 2, 128),
    (1, 13, 13, 2, 2, 7),
]

OPTIONS = [
    dict(),
    dict(causal=True),
    dict(window_size=(5, 3)),
    dict(window_size=(4, 0), causal=False),
    dict(softcap=5.0),
    dict(alibi=True),
    dict(sinks=True),
    dict(causal=True, sinks=True, softcap=3.0, alibi=True),
]


def _opts(rng, b, h, o):
    kw = dict(causal=o.get("causal", False), window_size=o.get("window_size", (-1, -1)),
              softcap=o.get("softcap", 0.0))
    alibi = rng.uniform(0.05, 0.5, size=(b, h)).astype(np.float32) if o.get("alibi") else None
    sinks = rng.standard_normal(h).astype(np.float32) if o.get("sinks") else None
    return kw, alibi, sinks


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b%d_sq%d_sk%d_h%d_hk%d_d%d" % s)
@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: "-".join(sorted(o)) or "plain")
def test_forward_backward_fp32(rng, shape, opt):
    b, sq, sk, h, hk, d = shape
    q, k, v = rand(rng, b, sq, h, d), rand(rng, b, sk, hk, d), rand(rng, b, sk, hk, d)
    kw, alibi, sinks = _opts(rng, b, h, opt)
    out, lse, _ = flashattn.flash_attn_func(q, k, v, alibi_slopes=alibi, sinks=sinks, return_attn_probs=True, **kw)
    dout = rand(rng, b, sq, h, d)
    ref = R.attention(q, k, v, causal=kw["causal"], window=kw["window_size"], softcap=kw["softcap"], alibi=alibi,
                      sinks=sinks, dout=dout)
    assert out.shape == q.shape and out.dtype == np.float32
    assert lse.shape == (b, h, sq) and lse.dtype == np.float32
    assert_close(out, ref["out"], FWD_RTOL, "out")
    assert_lse(lse, ref["lse"])

    dq, dk, dv, dsinks = F.backward(dout, q, k, v, out, lse, causal=kw["causal"], window_size=kw["window_size"],
                                    softcap=kw["softcap"], alibi_slopes=alibi, sinks=sinks)
    for name, x in (("dq", dq), ("dk", dk), ("dv", dv)):
        assert x.shape == ref[name].shape
        assert_close(x, ref[name], GRAD_RTOL, name)
    if sinks is not None:
        assert_close(dsinks, ref["dsinks"], GRAD_RTOL, "dsinks")
    else:
        assert dsinks is None


def test_fully_masked_rows_are_zero_with_inf_lse(rng):
    # sq > sk with causal: the first sq - sk rows see no key at all.
    b, sq, sk, h, d = 2, 12, 5, 3, 16
    q, k, v = rand(rng, b, sq, h, d), rand(rng, b, sk, h, d), rand(rng, b, sk, h, d)
    out, lse, _ = flashattn.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert np.all(out[:, : sq - sk] == 0)
    assert np.all(np.isposinf(lse[:, :, : sq - sk]))
    assert np.abs(out[:, sq - sk:]).max() > 0
    # With sinks the LSE of an empty row is the sink itself.
    sinks = rand(rng, h)
    out, lse, _ = flashattn.flash_attn_func(q, k, v, causal=True, return_attn_probs=True, sinks=sinks)
    assert np.all(out[:, : sq - sk] == 0)
    np.testing.assert_allclose(lse[:, :, 0], np.broadcast_to(sinks, (b, h)), rtol=1e-6)
    dq, dk, dv, ds = F.backward(rand(rng, b, sq, h, d), q, k, v, out, lse, causal=True, sinks=sinks)
    assert np.all(np.isfinite(dq)) and np.all(dq[:, : sq - sk] == 0)


def test_scale_argument(rng):
    q, k, v = rand(rng, 1, 9, 2, 16), rand(rng, 1, 11, 2, 16), rand(rng, 1, 11, 2, 16)
    out = flashattn.flash_attn_func(q, k, v, softmax_scale=0.37)
    assert_close(out, R.attention(q, k, v, scale=0.37)["out"], FWD_RTOL, "out")


def test_fp16_fa_rule(rng):
    b, sq, sk, h, d = 2, 40, 70, 4, 64
    q, k, v = (rand(rng, b, s, h, d, dtype=np.float16) for s in (sq, sk, sk))
    out = flashattn.flash_attn_func(q, k, v, causal=True)
    assert out.dtype == np.float16
    ref = R.attention(q, k, v, causal=True)["out"]
    low = R.attention(q, k, v, causal=True, lowprec=np.float16)["out"]
    ok, err, budget = R.fa_rule_ok(out, ref, low)
    assert ok, "fp16 error %.3g exceeds FA budget %.3g" % (err, budget)


def test_strided_inputs(rng):
    # Only the last dim must be contiguous: a transposed (b, h, s, d) buffer viewed as (b, s, h, d).
    b, s, h, d = 2, 19, 3, 24
    base = rand(rng, 3, b, h, s, d)
    q, k, v = (base[i].transpose(0, 2, 1, 3) for i in range(3))
    assert not q.flags.c_contiguous
    out = flashattn.flash_attn_func(q, k, v, causal=True)
    assert_close(out, R.attention(q, k, v, causal=True)["out"], FWD_RTOL, "out")
    # last-dim stride != 1: copied by the binding
    qt = np.asfortranarray(np.ascontiguousarray(q))
    out2 = flashattn.flash_attn_func(qt, k, v, causal=True)
    np.testing.assert_array_equal(out2, out)


def test_packed_variants_match_unpacked(rng):
    b, s, h, d = 2, 21, 4, 32
    qkv = rand(rng, b, s, 3, h, d)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    ref = flashattn.flash_attn_func(q, k, v, causal=True)
    assert np.abs(ref).max() > 0
    np.testing.assert_array_equal(flashattn.flash_attn_qkvpacked_func(qkv, causal=True), ref)
    kv = np.ascontiguousarray(qkv[:, :, 1:])
    np.testing.assert_array_equal(flashattn.flash_attn_kvpacked_func(np.ascontiguousarray(q), kv, causal=True), ref)
    # varlen packed forms over the same sequences
    cu = np.arange(b + 1, dtype=np.int32) * s
    out = flashattn.flash_attn_varlen_qkvpacked_func(qkv.reshape(b * s, 3, h, d), cu, s, causal=True)
    np.testing.assert_allclose(out.reshape(b, s, h, d), ref, rtol=1e-6, atol=1e-6)
    out = flashattn.flash_attn_varlen_kvpacked_func(q.reshape(b * s, h, d), kv.reshape(b * s, 2, h, d), cu, cu, s, s,
                                                    causal=True)
    np.testing.assert_allclose(out.reshape(b, s, h, d), ref, rtol=1e-6, atol=1e-6)


def _varlen_inputs(rng, lens_q, lens_k, h, hk, d):
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    q = rand(rng, int(cu_q[-1]), h, d)
    k, v = rand(rng, int(cu_k[-1]), hk, d), rand(rng, int(cu_k[-1]), hk, d)
    return q, k, v, cu_q, cu_k


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("sinks", [False, True])
def test_varlen_forward_backward(rng, causal, sinks):
    # includes an empty query sequence, an empty key sequence and total_q < batch-ish tiny sequences
    lens_q = [5, 0, 17, 1, 9]
    lens_k = [7, 3, 17, 12, 0]
    h, hk, d = 6, 2, 48
    q, k, v, cu_q, cu_k = _varlen_inputs(rng, lens_q, lens_k, h, hk, d)
    s = rand(rng, h) if sinks else None
    out, lse, _ = flashattn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), causal=causal,
                                                   return_attn_probs=True, sinks=s)
    dout = rand(rng, *q.shape)
    ref = R.attention_varlen(q, k, v, cu_q, cu_k, causal=causal, sinks=s, dout=dout)
    assert lse.shape == (h, q.shape[0])
    assert_close(out, ref["out"], FWD_RTOL, "out")
    assert_lse(lse, ref["lse"])
    dq, dk, dv, ds = F.backward(dout, q, k, v, out, lse, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                                max_seqlen_q=max(lens_q), max_seqlen_k=max(lens_k), causal=causal, sinks=s)
    for name, x in (("dq", dq), ("dk", dk), ("dv", dv)):
        assert_close(x, ref[name], GRAD_RTOL, name)
    if sinks:
        assert_close(ds, ref["dsinks"], GRAD_RTOL, "dsinks")


def test_dropout_reproducible_and_matches_reference(rng):
    b, sq, sk, h, d, p = 2, 33, 45, 3, 32, 0.25
    q, k, v = rand(rng, b, sq, h, d), rand(rng, b, sk, h, d), rand(rng, b, sk, h, d)
    seed, offset = int(rng.integers(0, 2 ** 62)), int(rng.integers(0, 2 ** 40))
    out, lse = F.forward(q, k, v, dropout_p=p, dropout_seed=seed, dropout_offset=offset)
    out2, _ = F.forward(q, k, v, dropout_p=p, dropout_seed=seed, dropout_offset=offset)
    np.testing.assert_array_equal(out, out2)
    out3, _ = F.forward(q, k, v, dropout_p=p, dropout_seed=seed + 1, dropout_offset=offset)
    assert np.abs(out3 - out).max() > 1e-3, "a different seed must give a different mask"
    dout = rand(rng, b, sq, h, d)
    ref = R.attention(q, k, v, dropout_p=p, seed=seed, offset=offset, dout=dout)
    # the kept fraction of the reference mask is about 1 - p
    keep = R.dropout_keep(seed, offset, 0, 256, 256, p)
    assert abs(keep.mean() - (1 - p)) < 0.02
    assert_close(out, ref["out"], FWD_RTOL, "out (dropout)")
    assert_lse(lse, ref["lse"])
    dq, dk, dv, _ = F.backward(dout, q, k, v, out, lse, dropout_p=p, dropout_seed=seed, dropout_offset=offset)
    for name, x in (("dq", dq), ("dk", dk), ("dv", dv)):
        assert_close(x, ref[name], GRAD_RTOL, name + " (dropout)")


def test_dropout_numpy_generator(rng):
    q, k, v = rand(rng, 1, 16, 2, 16), rand(rng, 1, 16, 2, 16), rand(rng, 1, 16, 2, 16)
    a = flashattn.flash_attn_func(q, k, v, dropout_p=0.3, generator=np.random.default_rng(7))
    b = flashattn.flash_attn_func(q, k, v, dropout_p=0.3, generator=7)
    np.testing.assert_array_equal(a, b)
    c = flashattn.flash_attn_func(q, k, v, dropout_p=0.3, generator=8)
    assert np.abs(a - c).max() > 1e-3
    nodrop = flashattn.flash_attn_func(q, k, v)
    assert np.abs(a - nodrop).max() > 1e-3


@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("rotary", [None, "interleaved", "neox"])
def test_kvcache_append(rng, paged, rotary):
    b, sq, h, hk, d = 3, 2, 4, 2, 32
    s_cache, s_new = 42, 2  # a multiple of the page size 3: rotary tables cover the paged capacity
    cache_seqlens = np.array([5, 0, 31], dtype=np.int32)
    if paged:
        page = 3  # any page size is allowed
        pages_per_seq = -(-s_cache // page)
        num_pages = b * pages_per_seq + 4
        k_cache = rand(rng, num_pages, page, hk, d)
        v_cache = rand(rng, num_pages, page, hk, d)
        block_table = rng.permutation(num_pages)[: b * pages_per_seq].reshape(b, pages_per_seq).astype(np.int32)
    else:
        k_cache, v_cache = rand(rng, b, s_cache, hk, d), rand(rng, b, s_cache, hk, d)
        block_table = None
    q = rand(rng, b, sq, h, d)
    k_new, v_new = rand(rng, b, s_new, hk, d), rand(rng, b, s_new, hk, d)
    cos = sin = None
    if rotary:
        rd = 16
        ang = rng.uniform(0, 2 * np.pi, size=(s_cache, rd // 2))
        cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    ref_out, ref_lse, ref_kc, ref_vc = R.kvcache_attention(
        q, k_cache, v_cache, k_new, v_new, cache_seqlens, block_table=block_table, rotary_cos=cos, rotary_sin=sin,
        interleaved=rotary == "interleaved", causal=True)
    kc, vc = k_cache.copy(), v_cache.copy()
    out, lse = flashattn.flash_attn_with_kvcache(q, kc, vc, k_new, v_new, rotary_cos=cos, rotary_sin=sin,
                                                 cache_seqlens=cache_seqlens, block_table=block_table, causal=True,
                                                 rotary_interleaved=rotary == "interleaved", return_softmax_lse=True)
    assert_close(out, ref_out, FWD_RTOL, "out")
    assert_lse(lse, ref_lse)
    np.testing.assert_allclose(kc, ref_kc, rtol=1e-5, atol=1e-5)  # rotated k
    np.testing.assert_array_equal(vc, ref_vc.astype(np.float32))  # v copied exactly


def test_kvcache_batch_idx_leftpad_and_defaults(rng):
    b, h, d, s_cache = 2, 2, 16, 20
    k_cache, v_cache = rand(rng, 4, s_cache, h, d), rand(rng, 4, s_cache, h, d)
    q = rand(rng, b, 1, h, d)
    idx = np.array([3, 1], dtype=np.int32)
    leftpad = np.array([2, 0], dtype=np.int32)
    seqlens = np.array([9, 14], dtype=np.int32)
    out = flashattn.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=seqlens, cache_batch_idx=idx,
                                            cache_leftpad=leftpad)
    ref, _, _, _ = R.kvcache_attention(q, k_cache, v_cache, cache_seqlens=seqlens, cache_batch_idx=idx,
                                       cache_leftpad=leftpad)
    assert_close(out, ref, FWD_RTOL, "out")
    # no cache_seqlens: the whole cache; an int is broadcast
    out_full = flashattn.flash_attn_with_kvcache(q, k_cache[:b], v_cache[:b])
    ref_full, _, _, _ = R.kvcache_attention(q, k_cache[:b], v_cache[:b], cache_seqlens=[s_cache] * b)
    assert_close(out_full, ref_full, FWD_RTOL, "out (full cache)")
    out_int = flashattn.flash_attn_with_kvcache(q, k_cache[:b], v_cache[:b], cache_seqlens=7)
    ref_int, _, _, _ = R.kvcache_attention(q, k_cache[:b], v_cache[:b], cache_seqlens=[7] * b)
    assert_close(out_int, ref_int, FWD_RTOL, "out (int cache_seqlens)")


def test_vllm_varlen_paged_and_out(rng):
    h, hk, d, page = 4, 2, 32, 5
    lens_q, lens_k = [3, 1, 6], [11, 4, 6]
    b = len(lens_q)
    max_pages = 3
    num_pages = 12
    k_pages, v_pages = rand(rng, num_pages, page, hk, d), rand(rng, num_pages, page, hk, d)
    bt = rng.permutation(num_pages)[: b * max_pages].reshape(b, max_pages).astype(np.int32)
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    q = rand(rng, int(cu_q[-1]), h, d)
    seqused = np.array(lens_k, dtype=np.int32)
    out = np.full(q.shape, np.nan, dtype=np.float32)  # poisoned: every element must be written
    res, lse = vllm.flash_attn_varlen_func(q, k_pages, v_pages, max(lens_q), cu_q, max(lens_k), seqused_k=seqused,
                                           block_table=bt, causal=True, out=out, return_softmax_lse=True)
    assert res is out
    # reference: gather the pages into a dense varlen k/v
    ks = [np.concatenate([k_pages[bt[i, j]] for j in range(max_pages)])[: lens_k[i]] for i in range(b)]
    vs = [np.concatenate([v_pages[bt[i, j]] for j in range(max_pages)])[: lens_k[i]] for i in range(b)]
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    ref = R.attention_varlen(q, np.concatenate(ks), np.concatenate(vs), cu_q, cu_k, causal=True)
    assert_close(out, ref["out"], FWD_RTOL, "out")
    assert_lse(lse, ref["lse"])


def test_vllm_rejects_unsupported_arguments(rng):
    q, k, v, cu_q, cu_k = _varlen_inputs(rng, [3], [3], 2, 2, 16)
    base = dict(cu_seqlens_k=cu_k)
    with pytest.raises(flashattn.FlashAttnNotSupported, match="fa_version"):
        vllm.flash_attn_varlen_func(q, k, v, 3, cu_q, 3, fa_version=3, **base)
    # any ONE of the FA3-only arguments raises (the fork checks all four with `and`)
    for name in ("q_v", "scheduler_metadata", "q_descale", "k_descale", "v_descale"):
        with pytest.raises(flashattn.FlashAttnNotSupported, match=name):
            vllm.flash_attn_varlen_func(q, k, v, 3, cu_q, 3, **dict(base, **{name: np.ones(1, np.float32)}))
    with pytest.raises(flashattn.FlashAttnNotSupported, match="dropout"):
        vllm.flash_attn_varlen_func(q, k, v, 3, cu_q, 3, dropout_p=0.1, **base)
    with pytest.raises(flashattn.FlashAttnNotSupported):
        vllm.flash_attn_varlen_func(q, k, v, 3, cu_q, 3, return_attn_probs=True, **base)
    with pytest.raises(flashattn.FlashAttnInvalidArgument, match="seqused_k"):
        vllm.flash_attn_varlen_func(q, k, v, 3, cu_q, 3, block_table=np.zeros((1, 1), np.int32), **base)
    assert vllm.is_fa_version_supported(2, "cpu")
    assert not vllm.is_fa_version_supported(3, "cpu")
    assert "FA3" in vllm.fa_version_unsupported_reason(3, "cpu")


def test_errors_carry_the_library_message(rng):
    q, k, v = rand(rng, 2, 8, 4, 16), rand(rng, 2, 8, 3, 16), rand(rng, 2, 8, 3, 16)
    with pytest.raises(flashattn.FlashAttnInvalidArgument) as ei:  # 4 heads over 3 kv heads
        flashattn.flash_attn_func(q, k, v)
    assert ei.value.status == 1
    assert "head" in str(ei.value).lower()
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, RuntimeError)
    with pytest.raises(flashattn.FlashAttnInvalidArgument, match="k"):
        flashattn.flash_attn_func(q, rand(rng, 2, 8, 4, 8), rand(rng, 2, 8, 4, 16))
    with pytest.raises(flashattn.FlashAttnInvalidArgument, match="float64"):
        flashattn.flash_attn_func(q.astype(np.float64), k, v)
    with pytest.raises(flashattn.FlashAttnInvalidArgument, match="dropout_p"):
        flashattn.flash_attn_func(q, q, q, dropout_p=1.0)
    with pytest.raises(flashattn.FlashAttnNotSupported, match="return_attn_probs"):
        flashattn.flash_attn_func(q, q, q, dropout_p=0.1, return_attn_probs=True)
    with pytest.raises(flashattn.FlashAttnInvalidArgument, match="window_size"):
        flashattn.flash_attn_func(q, q, q, window_size=3)
    with pytest.raises(flashattn.FlashAttnInvalidArgument, match="qkv"):
        flashattn.flash_attn_qkvpacked_func(rand(rng, 2, 8, 2, 4, 16))
    with pytest.raises(flashattn.FlashAttnInvalidArgument, match="cu_seqlens"):
        flashattn.flash_attn_varlen_func(q[0], q[0], q[0], np.array([0, 5, 3], np.int32),
                                         np.array([0, 4, 8], np.int32), 5, 4)


def test_build_info_and_threads():
    info = flashattn.build_info()
    assert info["abi_version"] == 1 and info["version"]
    n = flashattn.get_num_threads()
    assert n >= 1
    flashattn.set_num_threads(1)
    assert flashattn.get_num_threads() == 1
    flashattn.set_num_threads(0)


def test_library_path_env_is_honoured(tmp_path):
    import subprocess
    import sys
    bad = tmp_path / "libnothere.so"
    code = "import flashattn, numpy as np; flashattn.flash_attn_func(*[np.ones((1,2,1,8),np.float32)]*3)"
    env = dict(os.environ, FLASHATTN_LIBRARY=str(bad), FLASHATTN_NO_TORCH="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "FLASHATTN_LIBRARY" in r.stderr and str(bad) in r.stderr


def test_bert_padding_roundtrip(rng):
    b, s, h, d = 3, 7, 2, 4
    x = rand(rng, b, s, h, d)
    mask = np.zeros((b, s), dtype=bool)
    lens = [7, 2, 4]
    for i, n in enumerate(lens):
        mask[i, :n] = True
    unused = np.zeros_like(mask)
    unused[1, 2:4] = True  # allocated but unused tokens of sequence 1
    xu, idx, cu, maxlen, used = unpad_input(x, mask, unused)
    assert list(cu) == [0, 7, 11, 15] and maxlen == 7 and list(used) == lens
    np.testing.assert_array_equal(xu[7:9], x[1, :2])
    back = pad_input(xu, idx, b, s)
    keep = (mask | unused)[..., None, None]
    np.testing.assert_array_equal(back, np.where(keep, x, 0))


@pytest.mark.parametrize("interleaved", [False, True])
def test_apply_rotary_emb_numpy(rng, interleaved):
    b, s, h, d, rd = 2, 6, 3, 16, 8
    x = rand(rng, b, s, h, d)
    ang = rng.uniform(0, 6.28, size=(20, rd // 2))
    cos, sin = np.cos(ang), np.sin(ang)
    offs = np.array([0, 5])
    y = apply_rotary_emb(x, cos, sin, interleaved=interleaved, seqlen_offsets=offs)
    for bi in range(b):
        ref = R.rotary(x[bi], cos, sin, np.arange(s) + offs[bi], interleaved)
        np.testing.assert_allclose(y[bi], ref, rtol=1e-5, atol=1e-6)
    assert np.abs(y[..., rd:] - x[..., rd:]).max() == 0
