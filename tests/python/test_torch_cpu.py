"""torch glue on CPU tensors: autograd, custom-op registration (opcheck), torch.compile, dropout RNG.

Skipped when torch is not installed (CI has no torch); runs anywhere torch is (GPU host included).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import flashattn  # noqa: E402
from flashattn import vllm  # noqa: E402
from flashattn.bert_padding import pad_input, unpad_input  # noqa: E402
from flashattn.layers.rotary import apply_rotary_emb  # noqa: E402

import reference as R  # noqa: E402

FWD_RTOL, GRAD_RTOL = 1e-5, 1e-4


def rel_err(x, ref):
    x = x.detach().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    return np.abs(x - ref).max() / max(np.abs(ref).max(), 1e-30)


def rand(*shape, dtype=torch.float32, grad=False):
    return torch.randn(*shape, dtype=dtype).requires_grad_(grad)


def npy(t):
    return t.detach().numpy()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("extra", ["plain", "sinks", "softcap_alibi", "window"])
def test_autograd_matches_reference(causal, extra):
    b, sq, sk, h, hk, d = 2, 13, 19, 6, 2, 24
    q, k, v = rand(b, sq, h, d, grad=True), rand(b, sk, hk, d, grad=True), rand(b, sk, hk, d, grad=True)
    kw = {}
    sinks = alibi = None
    if extra == "sinks":
        sinks = torch.randn(h, requires_grad=True)
        kw["sinks"] = sinks
    elif extra == "softcap_alibi":
        kw["softcap"] = 4.0
        alibi = torch.rand(h) * 0.3 + 0.05
        kw["alibi_slopes"] = alibi
    elif extra == "window":
        kw["window_size"] = (6, 2)
    out = flashattn.flash_attn_func(q, k, v, causal=causal, **kw)
    dout = torch.randn_like(out)
    out.backward(dout)
    ref = R.attention(npy(q), npy(k), npy(v), causal=causal, window=kw.get("window_size", (-1, -1)),
                      softcap=kw.get("softcap", 0.0), alibi=None if alibi is None else npy(alibi),
                      sinks=None if sinks is None else npy(sinks), dout=npy(dout))
    assert rel_err(out, ref["out"]) <= FWD_RTOL
    for name, t in (("dq", q), ("dk", k), ("dv", v)):
        assert rel_err(t.grad, ref[name]) <= GRAD_RTOL, name
    if sinks is not None:
        assert rel_err(sinks.grad, ref["dsinks"]) <= GRAD_RTOL


def test_qkvpacked_grad_flows_into_packed_tensor():
    qkv = rand(2, 11, 3, 4, 16, grad=True)
    out = flashattn.flash_attn_qkvpacked_func(qkv, causal=True)
    dout = torch.randn_like(out)
    out.backward(dout)
    q, k, v = (npy(qkv[:, :, i]) for i in range(3))
    ref = R.attention(q, k, v, causal=True, dout=npy(dout))
    for i, name in enumerate(("dq", "dk", "dv")):
        assert rel_err(qkv.grad[:, :, i], ref[name]) <= GRAD_RTOL


def test_varlen_autograd():
    lens = [4, 0, 9, 3]
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lens)]), dtype=torch.int32)
    h, d = 4, 32
    q, k, v = (rand(int(cu[-1]), h, d, grad=True) for _ in range(3))
    out, lse, _ = flashattn.flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), causal=True,
                                                   return_attn_probs=True)
    assert lse.shape == (h, int(cu[-1]))
    dout = torch.randn_like(out)
    out.backward(dout)
    ref = R.attention_varlen(npy(q), npy(k), npy(v), npy(cu), npy(cu), causal=True, dout=npy(dout))
    assert rel_err(out, ref["out"]) <= FWD_RTOL
    for name, t in (("dq", q), ("dk", k), ("dv", v)):
        assert rel_err(t.grad, ref[name]) <= GRAD_RTOL, name


def test_opcheck_fwd_and_bwd():
    q, k, v = rand(2, 7, 4, 16, grad=True), rand(2, 9, 2, 16, grad=True), rand(2, 9, 2, 16, grad=True)
    ints, floats = [1, -1, -1, 0, 0], [0.25, 0.0, 0.0]
    torch.library.opcheck(torch.ops.flashattn.fwd.default, (q, k, v, None, None, None, ints, floats))
    sinks = torch.randn(4, requires_grad=True)
    alibi = torch.rand(4) * 0.2
    torch.library.opcheck(torch.ops.flashattn.fwd.default, (q, k, v, alibi, sinks, None, ints, [0.25, 2.0, 0.0]))
    # dropout: the (seed, offset) pair is an input, so the op is a pure function of its inputs
    rng_state = torch.tensor([5, 7], dtype=torch.int64)
    torch.library.opcheck(torch.ops.flashattn.fwd.default, (q, k, v, None, None, rng_state, ints, [0.25, 0.0, 0.3]))
    cu = torch.tensor([0, 3, 10], dtype=torch.int32)
    qv, kv_, vv = rand(10, 4, 16, grad=True), rand(10, 2, 16, grad=True), rand(10, 2, 16, grad=True)
    torch.library.opcheck(torch.ops.flashattn.varlen_fwd.default,
                          (qv, kv_, vv, cu, cu, None, None, None, sinks, None, [7, 7] + ints, floats))
    out, lse = torch.ops.flashattn.fwd(q.detach(), k.detach(), v.detach(), None, None, None, ints, floats)
    dout = torch.randn_like(out)
    torch.library.opcheck(torch.ops.flashattn.bwd.default,
                          (dout, q.detach(), k.detach(), v.detach(), out, lse, None, None, None, None, None,
                           [0, 0, 1, -1, -1, 0], floats))


def test_opcheck_mutating_ops():
    b, h, d = 2, 4, 16
    q = rand(b, 1, h, d)
    kc, vc = rand(b, 12, 2, d), rand(b, 12, 2, d)
    kn, vn = rand(b, 1, 2, d), rand(b, 1, 2, d)
    seqlens = torch.tensor([3, 7], dtype=torch.int32)
    out = torch.empty_like(q)
    torch.library.opcheck(torch.ops.flashattn.fwd_kvcache.default,
                          (q, kc, vc, kn, vn, None, None, seqlens, None, None, None, None, None, [1, -1, -1, 1, 0],
                           [0.25, 0.0], out))
    out = torch.empty(2, 4, 16)
    qv, kv_, vv = rand(2, 4, 16), rand(5, 2, 16), rand(5, 2, 16)
    torch.library.opcheck(torch.ops.flashattn.varlen_fwd_out.default,
                          (qv, kv_, vv, torch.tensor([0, 1, 2], dtype=torch.int32),
                           torch.tensor([0, 2, 5], dtype=torch.int32), None, None, None, None, None,
                           [1, 3, 1, -1, -1, 0, 0], [0.25, 0.0, 0.0], out))


def test_torch_compile_fullgraph_forward_backward():
    q, k, v = rand(2, 8, 4, 32, grad=True), rand(2, 8, 4, 32, grad=True), rand(2, 8, 4, 32, grad=True)

    def f(q, k, v):
        return flashattn.flash_attn_func(q, k, v, causal=True).sum() * 2

    eager = f(q, k, v)
    eager.backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v)
    compiled.backward()
    assert torch.allclose(compiled, eager)
    for g, t in zip(grads, (q, k, v)):
        assert torch.allclose(g, t.grad)


def test_torch_compile_fullgraph_varlen_and_kvcache():
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    q, k, v = rand(12, 2, 16), rand(12, 2, 16), rand(12, 2, 16)

    def f(q, k, v, cu):
        return flashattn.flash_attn_varlen_func(q, k, v, cu, cu, 7, 7, causal=True)

    torch._dynamo.reset()
    got = torch.compile(f, fullgraph=True)(q, k, v, cu)
    assert torch.equal(got, f(q, k, v, cu))

    kc, vc = rand(2, 10, 2, 16), rand(2, 10, 2, 16)
    kc2, vc2 = kc.clone(), vc.clone()
    qd, kn, vn = rand(2, 1, 2, 16), rand(2, 1, 2, 16), rand(2, 1, 2, 16)
    seqlens = torch.tensor([4, 9], dtype=torch.int32)

    def g(q, kc, vc, kn, vn, s):
        return flashattn.flash_attn_with_kvcache(q, kc, vc, kn, vn, cache_seqlens=s, causal=True)

    torch._dynamo.reset()
    got = torch.compile(g, fullgraph=True)(qd, kc, vc, kn, vn, seqlens)
    ref = g(qd, kc2, vc2, kn, vn, seqlens)
    assert torch.equal(got, ref)
    assert torch.equal(kc, kc2) and torch.equal(vc, vc2)  # the in-place append survives compilation
    assert torch.equal(kc[0, 4], kn[0, 0]) and torch.equal(vc[1, 9], vn[1, 0])


def test_dropout_uses_torch_generator_and_backward_regenerates_mask():
    b, s, h, d, p = 2, 17, 3, 16, 0.2
    q, k, v = rand(b, s, h, d, grad=True), rand(b, s, h, d, grad=True), rand(b, s, h, d, grad=True)
    torch.manual_seed(1234)
    out1 = flashattn.flash_attn_func(q, k, v, dropout_p=p)
    torch.manual_seed(1234)
    out2 = flashattn.flash_attn_func(q, k, v, dropout_p=p)
    assert torch.equal(out1, out2)
    out3 = flashattn.flash_attn_func(q, k, v, dropout_p=p)  # generator advanced: a new mask
    assert not torch.equal(out1, out3)
    g = torch.Generator().manual_seed(99)
    out4 = flashattn.flash_attn_func(q, k, v, dropout_p=p, generator=g)
    # The (seed, offset) pair is what torch.randint draws from the same generator state.
    seed, offset = torch.randint(-2 ** 62, 2 ** 62, (2,), generator=torch.Generator().manual_seed(99)).tolist()
    dout = torch.randn_like(out4)
    out4.backward(dout)
    ref = R.attention(npy(q), npy(k), npy(v), dropout_p=p, seed=seed, offset=offset, dout=npy(dout))
    assert rel_err(out4, ref["out"]) <= FWD_RTOL
    for name, t in (("dq", q), ("dk", k), ("dv", v)):
        assert rel_err(t.grad, ref[name]) <= GRAD_RTOL, name


def test_kvcache_and_vllm_out_on_torch():
    b, h, d = 2, 4, 16
    q = rand(b, 3, h, d)
    kc, vc = rand(b, 20, 2, d), rand(b, 20, 2, d)
    kn, vn = rand(b, 3, 2, d), rand(b, 3, 2, d)
    seqlens = torch.tensor([0, 11], dtype=torch.int32)
    ref_out, ref_lse, ref_kc, ref_vc = R.kvcache_attention(npy(q), npy(kc), npy(vc), npy(kn), npy(vn), npy(seqlens),
                                                           causal=True)
    out = torch.full_like(q, float("nan"))
    res, lse = vllm.flash_attn_with_kvcache(q, kc, vc, kn, vn, cache_seqlens=seqlens, causal=True, out=out,
                                            return_softmax_lse=True)
    assert res is out
    assert rel_err(out, ref_out) <= FWD_RTOL
    assert rel_err(kc, ref_kc) <= 1e-6 and rel_err(vc, ref_vc) == 0
    assert np.allclose(npy(lse), ref_lse, rtol=1e-5, atol=1e-5)
    with pytest.raises(flashattn.FlashAttnNotSupported):
        vllm.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens, q_descale=torch.ones(1))
    with pytest.raises(flashattn.FlashAttnNotSupported):
        vllm.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens, fa_version=3)


def test_errors_from_torch_path():
    q = rand(2, 5, 4, 16)
    with pytest.raises(flashattn.FlashAttnInvalidArgument, match="float64"):
        flashattn.flash_attn_func(q.double(), q.double(), q.double())
    with pytest.raises(flashattn.FlashAttnInvalidArgument):
        flashattn.flash_attn_func(q, rand(2, 5, 3, 16), rand(2, 5, 3, 16))
    with pytest.raises(flashattn.FlashAttnInvalidArgument):
        flashattn.flash_attn_func(q, q.half(), q)


def test_bert_padding_and_rotary_torch():
    b, s, h, d = 3, 6, 2, 8
    x = torch.randn(b, s, h, d, requires_grad=True)
    mask = torch.tensor([[1] * 6, [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    xu, idx, cu, maxlen, used = unpad_input(x, mask)
    assert cu.tolist() == [0, 6, 8, 12] and maxlen == 6 and used.tolist() == [6, 2, 4]
    back = pad_input(xu, idx, b, s)
    assert torch.equal(back, x * mask[..., None, None])
    back.sum().backward()
    assert torch.equal(x.grad, mask[..., None, None].float().expand_as(x))

    ang = torch.rand(10, 2) * 6
    cos, sin = ang.cos(), ang.sin()
    xr = torch.randn(b, s, h, d)
    for interleaved in (False, True):
        y = apply_rotary_emb(xr, cos, sin, interleaved=interleaved, seqlen_offsets=torch.tensor([0, 1, 4]))
        ref = np.stack([R.rotary(npy(xr[i]), npy(cos), npy(sin), np.arange(s) + off, interleaved)
                        for i, off in enumerate((0, 1, 4))])
        assert np.abs(npy(y) - ref).max() < 1e-5
    # varlen form: positions restart at each sequence
    xv = torch.randn(12, h, d)
    yv = apply_rotary_emb(xv, cos, sin, cu_seqlens=cu, max_seqlen=6)
    pos = np.concatenate([np.arange(n) for n in (6, 2, 4)])
    assert np.abs(npy(yv) - R.rotary(npy(xv), npy(cos), npy(sin), pos, False)).max() < 1e-5
