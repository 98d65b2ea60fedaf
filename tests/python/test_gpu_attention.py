"""GPU suite (marker gpu; the GPU test host: torch + CUDA). Every function against a torch fp32 reference
with the FA rule: max|out - ref| <= 2 * max|lowprec - ref| + 1e-5 (forward), 3x + 1e-4 (gradients), where
lowprec is the same math in the input dtype. Also opcheck, torch.compile(fullgraph=True), CUDA graph capture
of decode, streams, layout fixes and cross-backend checks against the CPU backend.

Run: pytest -m gpu tests/python   (FLASHATTN_LIBRARY=/path/libflashattn.so to test a build tree)
"""

import math

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():  # pragma: no cover - CPU machines
    pytest.skip("no CUDA device", allow_module_level=True)

import flashattn  # noqa: E402
from flashattn import functional as F  # noqa: E402
from flashattn import vllm  # noqa: E402

pytestmark = pytest.mark.gpu
DEV = "cuda"
DTYPES = [torch.float16, torch.bfloat16]


# ---- torch reference ------------------------------------------------------------------------------
def attn_ref(q, k, v, causal=False, window=(-1, -1), softcap=0.0, alibi=None, sinks=None, scale=None,
             upcast=True, key_lens=None, query_lens=None, sink_probs=None):
    """Dense BSHD reference. upcast=True: fp32 math ("truth"); False: the input dtype at every step.
    sink_probs: a list that receives the sink's probability per (b, h, row) when sinks are given."""
    dt = q.dtype
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    k = k.repeat_interleave(h // hk, dim=2)
    v = v.repeat_interleave(h // hk, dim=2)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = torch.einsum("bqhd,bkhd->bhqk", q * scale, k)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(sq, device=q.device)[:, None]
    j = torch.arange(sk, device=q.device)[None, :]
    if key_lens is None:
        key_lens = torch.full((b,), sk, device=q.device)
    if query_lens is None:
        query_lens = torch.full((b,), sq, device=q.device)
    kl = key_lens.view(b, 1, 1, 1).long()
    ql = query_lens.view(b, 1, 1, 1).long()
    diag = i + kl - ql  # bottom-right alignment per sequence
    if alibi is not None:
        sl = alibi.view(b if alibi.dim() == 2 else 1, h, 1, 1).float()
        s = s.float() - sl * (diag - j).abs()
        s = s.to(q.dtype)
    vis = j < kl
    wl, wr = window
    if causal:
        wr = 0
    if wl >= 0:
        vis = vis & (j >= diag - wl)
    if wr >= 0:
        vis = vis & (j <= diag + wr)
    vis = vis.expand(b, h, sq, sk)
    # Rows that see no key (and have no sink) are output 0; keep their scores finite so neither the
    # softmax nor its gradient produces NaN, and zero their probabilities afterwards.
    empty = ~vis.any(dim=-1, keepdim=True) if sinks is None else torch.zeros_like(vis[..., :1])
    s = s.masked_fill(~vis & ~empty, float("-inf"))
    if sinks is not None:
        sink_col = sinks.view(1, h, 1, 1).to(s.dtype).expand(b, h, sq, 1)
        s = torch.cat([s, sink_col], dim=-1)
    p = torch.softmax(s.float(), dim=-1).to(s.dtype)
    if sinks is not None:
        if sink_probs is not None:
            sink_probs.append(p[..., -1].detach().float())
        p = p[..., :-1]
    p = p.masked_fill(empty, 0.0)
    out = torch.einsum("bhqk,bkhd->bqhd", p, v)
    out = out.masked_fill((i.view(1, sq, 1, 1) >= query_lens.view(b, 1, 1, 1)), 0.0)
    return out.to(dt) if not upcast else out


def check_fa_rule(out, ref, low, factor=2.0, atol=1e-5, what="out"):
    assert torch.isfinite(out).all(), "%s has non-finite values" % what
    err = (out.float() - ref).abs().max().item()
    budget = factor * (low.float() - ref).abs().max().item() + atol
    assert err <= budget, "%s: error %.3g > FA budget %.3g" % (what, err, budget)


def rand(*shape, dtype=torch.float16, grad=False):
    return torch.randn(*shape, device=DEV, dtype=dtype).requires_grad_(grad)


def poison(t):
    return t.fill_(float("nan"))


HEAD_DIMS = [32, 64, 59, 96, 128, 256]
SEQLENS = [(1, 239), (113, 203), (128, 217), (256, 512), (512, 256), (1023, 1024), (3, 799)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("sq,sk", SEQLENS)
@pytest.mark.parametrize("causal", [False, True])
def test_flash_attn_func_fwd(dtype, d, sq, sk, causal):
    b, h, hk = 2, 6, 2
    q, k, v = rand(b, sq, h, d, dtype=dtype), rand(b, sk, hk, d, dtype=dtype), rand(b, sk, hk, d, dtype=dtype)
    out, lse, _ = flashattn.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)
    ref = attn_ref(q, k, v, causal=causal)
    low = attn_ref(q, k, v, causal=causal, upcast=False)
    check_fa_rule(out, ref, low)
    assert lse.shape == (b, h, sq) and lse.dtype == torch.float32


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("d", [64, 59, 128])
@pytest.mark.parametrize("option", ["plain", "causal", "window", "softcap", "alibi", "sinks", "gqa_causal"])
def test_flash_attn_func_bwd(dtype, d, option):
    b, sq, sk, h = 2, 131, 197, 4
    hk = 1 if option == "gqa_causal" else h
    q, k, v = (rand(b, s, n, d, dtype=dtype, grad=True) for s, n in ((sq, h), (sk, hk), (sk, hk)))
    kw = {"causal": option in ("causal", "gqa_causal")}
    if option == "window":
        kw["window_size"] = (37, 5)
    if option == "softcap":
        kw["softcap"] = 30.0
    if option == "alibi":
        kw["alibi_slopes"] = torch.rand(b, h, device=DEV) * 0.3
    sinks = torch.randn(h, device=DEV, requires_grad=True) if option == "sinks" else None
    out = flashattn.flash_attn_func(q, k, v, sinks=sinks, **kw)
    ref_kw = dict(causal=kw["causal"], window=kw.get("window_size", (-1, -1)), softcap=kw.get("softcap", 0.0),
                  alibi=kw.get("alibi_slopes"))
    p_sink = []
    ref = attn_ref(q, k, v, sinks=sinks, sink_probs=p_sink, **ref_kw)
    low = attn_ref(q, k, v, sinks=sinks, upcast=False, **ref_kw)
    check_fa_rule(out, ref, low)
    dout = torch.randn_like(out)
    inputs = [q, k, v] + ([sinks] if sinks is not None else [])
    g = torch.autograd.grad(out, inputs, dout)
    g_ref = torch.autograd.grad(ref, inputs, dout.float())
    g_low = torch.autograd.grad(low, inputs, dout)
    for name, a, r, lo in zip(("dq", "dk", "dv", "dsinks"), g, g_ref, g_low):
        atol = 1e-4
        if name == "dsinks":
            # dsinks = -sum_i P_sink,i * (dO_i . O_i) uses the O the forward stored, whose rounding (unit
            # roundoff u) moves it by about u * sqrt(sum_i P_sink,i^2 * sum_d (dO_id O_id)^2): one scalar per
            # head, so the low twin's error can be small by luck (as tests/gpu/test_bwd_gpu.cpp).
            u = 2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11
            terms = ((dout.float() * ref.detach()) ** 2).sum(-1).transpose(1, 2)  # (b, h, sq)
            scale = (p_sink[0] ** 2 * terms).sum(dim=(0, 2)).sqrt().max().item()
            atol += 3 * u * scale
        check_fa_rule(a, r, lo, factor=3.0, atol=atol, what=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
def test_varlen_forward_edge_lengths(dtype):
    """Empty query / key sequences, decode rows and sq > sk in one batch; output poisoned first."""
    lens_q = [1, 0, 129, 64, 7, 300]
    lens_k = [300, 5, 129, 1, 0, 77]
    h, hk, d = 8, 2, 128
    cu_q = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32, device=DEV)
    cu_k = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32, device=DEV)
    q = rand(int(cu_q[-1]), h, d, dtype=dtype)
    k, v = rand(int(cu_k[-1]), hk, d, dtype=dtype), rand(int(cu_k[-1]), hk, d, dtype=dtype)
    out = poison(torch.empty_like(q))
    res, lse = vllm.flash_attn_varlen_func(q, k, v, max(lens_q), cu_q, max(lens_k), cu_seqlens_k=cu_k, causal=True,
                                           out=out, return_softmax_lse=True)
    assert res is out and lse.shape == (h, int(cu_q[-1]))
    for bi in range(len(lens_q)):
        qs, qe, ks, ke = int(cu_q[bi]), int(cu_q[bi + 1]), int(cu_k[bi]), int(cu_k[bi + 1])
        if qe == qs:
            continue
        args = [t[None] for t in (q[qs:qe], k[ks:ke], v[ks:ke])]
        check_fa_rule(out[qs:qe][None], attn_ref(*args, causal=True), attn_ref(*args, causal=True, upcast=False),
                      what="seq %d" % bi)
        visible = torch.arange(qe - qs, device=DEV) + (ke - ks) - (qe - qs) >= 0  # rows that see a key
        assert torch.isinf(lse[:, qs:qe][:, ~visible]).all() and torch.isfinite(lse[:, qs:qe][:, visible]).all()
    qkv = rand(2 * 77, 3, h, d, dtype=dtype)
    cu = torch.tensor([0, 77, 154], dtype=torch.int32, device=DEV)
    a = flashattn.flash_attn_varlen_qkvpacked_func(qkv, cu, 77, causal=True)
    b = flashattn.flash_attn_qkvpacked_func(qkv.view(2, 77, 3, h, d), causal=True)
    assert torch.equal(a.view(2, 77, h, d), b)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
def test_varlen_backward(dtype):
    lens_q = [1, 0, 129, 64, 7]
    lens_k = [300, 5, 129, 1, 0]
    h, d = 4, 128
    cu_q = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32, device=DEV)
    cu_k = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32, device=DEV)
    q = rand(int(cu_q[-1]), h, d, dtype=dtype, grad=True)
    k = rand(int(cu_k[-1]), h, d, dtype=dtype, grad=True)
    v = rand(int(cu_k[-1]), h, d, dtype=dtype, grad=True)
    out = flashattn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), causal=True)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    for bi in range(len(lens_q)):
        qs, qe, ks, ke = int(cu_q[bi]), int(cu_q[bi + 1]), int(cu_k[bi]), int(cu_k[bi + 1])
        if qe == qs:
            continue
        args = [t[None] for t in (q[qs:qe], k[ks:ke], v[ks:ke])]
        ref = attn_ref(*args, causal=True)
        low = attn_ref(*args, causal=True, upcast=False)
        check_fa_rule(out[qs:qe][None], ref, low, what="out[%d]" % bi)
        if ke > ks:
            gr = torch.autograd.grad(ref, args, dout[qs:qe][None].float(), allow_unused=True)
            gl = torch.autograd.grad(low, args, dout[qs:qe][None], allow_unused=True)
            sl = (slice(qs, qe), slice(ks, ke), slice(ks, ke))
            for name, a, r, lo, s in zip(("dq", "dk", "dv"), grads, gr, gl, sl):
                check_fa_rule(a[s][None], r, lo, 3.0, 1e-4, "%s[%d]" % (name, bi))


@pytest.mark.parametrize("page_size", [None, 16, 7])
@pytest.mark.parametrize("rotary", [False, True])
def test_kvcache_decode_and_append(page_size, rotary):
    dtype = torch.bfloat16
    b, h, hk, d, s_cache, s_new = 3, 8, 2, 128, 512, 1
    q = rand(b, 1, h, d, dtype=dtype)
    k_new, v_new = rand(b, s_new, hk, d, dtype=dtype), rand(b, s_new, hk, d, dtype=dtype)
    seqlens = torch.tensor([0, 100, 510], dtype=torch.int32, device=DEV)
    dense_k, dense_v = rand(b, s_cache, hk, d, dtype=dtype), rand(b, s_cache, hk, d, dtype=dtype)
    cos = sin = None
    if rotary:
        ang = torch.rand(s_cache + 16, 32, device=DEV) * 6.28
        cos, sin = ang.cos().to(dtype), ang.sin().to(dtype)
    if page_size:
        pages = -(-s_cache // page_size)
        perm = torch.randperm(b * pages + 5, device=DEV)
        bt = perm[: b * pages].view(b, pages).int()
        kc = rand(b * pages + 5, page_size, hk, d, dtype=dtype)
        vc = rand(b * pages + 5, page_size, hk, d, dtype=dtype)
        flat = lambda t: t[bt.long()].reshape(b, pages * page_size, hk, d)[:, :s_cache]  # noqa: E731
        for bi in range(b):  # write the dense cache into the pages
            for p in range(pages):
                n = min(page_size, s_cache - p * page_size)
                kc[bt[bi, p], :n] = dense_k[bi, p * page_size:p * page_size + n]
                vc[bt[bi, p], :n] = dense_v[bi, p * page_size:p * page_size + n]
    else:
        bt = None
        kc, vc = dense_k.clone(), dense_v.clone()
        flat = lambda t: t  # noqa: E731
    out = flashattn.flash_attn_with_kvcache(q, kc, vc, k_new, v_new, rotary_cos=cos, rotary_sin=sin,
                                            cache_seqlens=seqlens, block_table=bt, causal=True)
    # reference: append (rotated) into a dense copy, attend over cache_seqlens + s_new keys
    from flashattn.layers.rotary import apply_rotary_emb
    rk = dense_k.clone()
    rv = dense_v.clone()
    kn = apply_rotary_emb(k_new, cos, sin, interleaved=True, seqlen_offsets=seqlens) if rotary else k_new
    qr = apply_rotary_emb(q, cos, sin, interleaved=True, seqlen_offsets=seqlens) if rotary else q
    for bi in range(b):
        rk[bi, seqlens[bi]:seqlens[bi] + s_new] = kn[bi]
        rv[bi, seqlens[bi]:seqlens[bi] + s_new] = v_new[bi]
    key_lens = seqlens + s_new
    ref = attn_ref(qr, rk, rv, causal=True, key_lens=key_lens)
    low = attn_ref(qr, rk, rv, causal=True, key_lens=key_lens, upcast=False)
    check_fa_rule(out, ref, low)
    for bi in range(b):
        got_v = flat(vc)[bi, seqlens[bi]:seqlens[bi] + s_new]
        assert torch.equal(got_v, v_new[bi])
        got_k = flat(kc)[bi, seqlens[bi]:seqlens[bi] + s_new]
        assert (got_k.float() - kn[bi].float()).abs().max() <= 2e-2


def test_vllm_paged_varlen_out_and_lse():
    dtype = torch.float16
    h, hk, d, page = 16, 2, 128, 16
    q_lens, kv_lens = [1, 5, 129], [1328, 18, 463]
    b = 3
    pages = max(-(-n // page) for n in kv_lens)
    num_blocks = 2048
    kc, vc = rand(num_blocks, page, hk, d, dtype=dtype), rand(num_blocks, page, hk, d, dtype=dtype)
    bt = torch.randint(0, num_blocks, (b, pages), dtype=torch.int32, device=DEV)
    cu_q = torch.tensor([0, 1, 6, 135], dtype=torch.int32, device=DEV)
    q = rand(135, h, d, dtype=dtype)
    seqused = torch.tensor(kv_lens, dtype=torch.int32, device=DEV)
    out = poison(torch.empty_like(q))
    res, lse = vllm.flash_attn_varlen_func(q, kc, vc, 129, cu_q, max(kv_lens), seqused_k=seqused, block_table=bt,
                                           causal=True, softcap=50.0, out=out, return_softmax_lse=True)
    assert res is out and lse.shape == (h, 135)
    for bi in range(b):
        k = kc[bt[bi].long()].reshape(-1, hk, d)[: kv_lens[bi]][None]
        v = vc[bt[bi].long()].reshape(-1, hk, d)[: kv_lens[bi]][None]
        qs = q[cu_q[bi]:cu_q[bi + 1]][None]
        ref = attn_ref(qs, k, v, causal=True, softcap=50.0)
        low = attn_ref(qs, k, v, causal=True, softcap=50.0, upcast=False)
        check_fa_rule(out[cu_q[bi]:cu_q[bi + 1]][None], ref, low, what="seq %d" % bi)


def test_opcheck_cuda_forward_only():
    """Schema, fake tensor and aot_dispatch checks of the forward ops on CUDA (no gradients involved)."""
    q, k, v = (rand(2, 64, 4, 64) for _ in range(3))
    torch.library.opcheck(torch.ops.flashattn.fwd.default,
                          (q, k, v, None, torch.randn(4, device=DEV), None, [1, -1, -1, 0, 0], [0.125, 0.0, 0.0]))
    cu = torch.tensor([0, 50, 128], dtype=torch.int32, device=DEV)
    qv, kv_, vv = (rand(128, 4, 64) for _ in range(3))
    torch.library.opcheck(torch.ops.flashattn.varlen_fwd.default,
                          (qv, kv_, vv, cu, cu, None, None, None, None, None, [78, 78, 1, -1, -1, 0, 0],
                           [0.125, 0.0, 0.0]))


def test_torch_compile_fullgraph_cuda_forward_only():
    q, k, v = (rand(2, 256, 8, 64, dtype=torch.bfloat16) for _ in range(3))

    def f(q, k, v):
        return flashattn.flash_attn_func(q, k, v, causal=True, softcap=20.0) * 2

    torch._dynamo.reset()
    assert torch.equal(torch.compile(f, fullgraph=True)(q, k, v), f(q, k, v))


def test_cuda_graph_capture_varlen_forward_into_out():
    """The forward run call allocates nothing and never syncs: capture it, replay with new data."""
    dtype = torch.bfloat16
    h, d = 8, 128
    cu = torch.tensor([0, 100, 101, 356], dtype=torch.int32, device=DEV)
    q, k, v = (rand(356, h, d, dtype=dtype) for _ in range(3))
    out = torch.empty_like(q)

    def step():
        vllm.flash_attn_varlen_func(q, k, v, 255, cu, 255, cu_seqlens_k=cu, causal=True, out=out)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    for it in range(3):
        for t in (q, k, v):
            t.copy_(torch.randn_like(t))
        g.replay()
        torch.cuda.synchronize()
        eager = flashattn.flash_attn_varlen_func(q, k, v, cu, cu, 255, 255, causal=True)
        assert torch.equal(out, eager), "replay %d differs from eager" % it


def test_opcheck_cuda():
    q, k, v = (rand(2, 64, 4, 64, grad=True) for _ in range(3))
    torch.library.opcheck(torch.ops.flashattn.fwd.default,
                          (q, k, v, None, None, None, [1, -1, -1, 0, 0], [0.125, 0.0, 0.0]))
    kc, vc = rand(2, 128, 4, 64), rand(2, 128, 4, 64)
    seqlens = torch.tensor([5, 77], dtype=torch.int32, device=DEV)
    torch.library.opcheck(torch.ops.flashattn.fwd_kvcache.default,
                          (q[:, :1].detach(), kc, vc, k[:, :1].detach(), v[:, :1].detach(), None, None, seqlens, None,
                           None, None, None, None, [1, -1, -1, 1, 0], [0.125, 0.0], torch.empty_like(q[:, :1])))


def test_torch_compile_fullgraph_cuda():
    q, k, v = (rand(2, 256, 8, 64, dtype=torch.bfloat16, grad=True) for _ in range(3))

    def f(q, k, v):
        return flashattn.flash_attn_func(q, k, v, causal=True) * 2

    torch._dynamo.reset()
    cf = torch.compile(f, fullgraph=True)
    out = cf(q, k, v)
    ref = f(q, k, v)
    assert torch.equal(out, ref)
    g = torch.autograd.grad(out.sum(), (q, k, v))
    gr = torch.autograd.grad(ref.sum(), (q, k, v))
    for a, r in zip(g, gr):
        assert torch.equal(a, r)


def test_cuda_graph_capture_kvcache_decode():
    dtype = torch.float16
    b, h, hk, d, s_cache = 4, 16, 4, 128, 1024
    kc, vc = rand(b, s_cache, hk, d, dtype=dtype), rand(b, s_cache, hk, d, dtype=dtype)
    q = rand(b, 1, h, d, dtype=dtype)
    k_new, v_new = rand(b, 1, hk, d, dtype=dtype), rand(b, 1, hk, d, dtype=dtype)
    seqlens = torch.tensor([10, 500, 1000, 1], dtype=torch.int32, device=DEV)
    out = torch.empty_like(q)

    def step():
        vllm.flash_attn_with_kvcache(q, kc, vc, k_new, v_new, cache_seqlens=seqlens, causal=True, out=out)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up outside capture (allocator pools, lazy init)
        step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    for it in range(3):
        q.copy_(torch.randn_like(q))
        k_new.copy_(torch.randn_like(k_new))
        v_new.copy_(torch.randn_like(v_new))
        seqlens.add_(1)
        kc_ref, vc_ref = kc.clone(), vc.clone()
        g.replay()
        torch.cuda.synchronize()
        eager = flashattn.flash_attn_with_kvcache(q, kc_ref, vc_ref, k_new, v_new, cache_seqlens=seqlens,
                                                  causal=True)
        assert torch.equal(out, eager), "replay %d differs from eager" % it
        assert torch.equal(kc, kc_ref) and torch.equal(vc, vc_ref)


def test_side_stream_and_misaligned_inputs():
    q, k, v = (rand(2, 100, 4, 64) for _ in range(3))
    ref = flashattn.flash_attn_func(q, k, v, causal=True)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        q2, k2, v2 = q.clone(), k.clone(), v.clone()
        out = flashattn.flash_attn_func(q2, k2, v2, causal=True)
    s.synchronize()
    assert torch.equal(out, ref)
    # base offset by one element (2 bytes: not 16-byte aligned) and a non-multiple-of-8 row stride
    buf = torch.randn(2 * 100 * 4 * 64 + 1, device=DEV, dtype=torch.float16)
    qm = buf[1:].view(2, 100, 4, 64)
    wide = torch.randn(2, 100, 4, 67, device=DEV, dtype=torch.float16)
    km = wide[..., :64]
    got = flashattn.flash_attn_func(qm, km, v, causal=True)
    assert torch.equal(got, flashattn.flash_attn_func(qm.clone(), km.contiguous(), v, causal=True))


def test_gpu_matches_cpu_backend():
    """Same function on both backends: small fp16 shapes, the CPU result (fp32 accumulate) as a tight check."""
    for sq, sk, d in ((17, 33, 64), (64, 64, 128), (1, 77, 40)):
        q, k, v = rand(2, sq, 4, d), rand(2, sk, 2, d), rand(2, sk, 2, d)
        sinks = torch.randn(4, device=DEV)
        g = flashattn.flash_attn_func(q, k, v, causal=True, sinks=sinks, softcap=10.0)
        c = flashattn.flash_attn_func(q.cpu(), k.cpu(), v.cpu(), causal=True, sinks=sinks.cpu(), softcap=10.0)
        assert (g.cpu().float() - c.float()).abs().max().item() <= 2e-3


def test_dropout_on_cuda_raises_or_matches_cpu_mask():
    q, k, v = (rand(2, 64, 4, 64) for _ in range(3))
    try:
        out, _ = F.forward(q, k, v, dropout_p=0.17, rng_state=torch.tensor([123, 456], device=DEV))
    except flashattn.FlashAttnError as e:
        # Until GPU dropout lands the library must say so (never a silent no-dropout result).
        assert e.status in (2, 3), str(e)
        with pytest.raises(flashattn.FlashAttnError):
            flashattn.flash_attn_func(q, k, v, dropout_p=0.17)
        return
    cpu, _ = F.forward(q.cpu(), k.cpu(), v.cpu(), dropout_p=0.17, dropout_seed=123, dropout_offset=456)
    assert (out.cpu().float() - cpu.float()).abs().max().item() <= 2e-3  # tile-independent mask
    torch.manual_seed(0)
    a = flashattn.flash_attn_func(q, k, v, dropout_p=0.17)
    torch.manual_seed(0)
    b = flashattn.flash_attn_func(q, k, v, dropout_p=0.17)
    assert torch.equal(a, b)


def test_cpu_tensors_with_bad_head_ratio_raise_in_a_cuda_build():
    """CPU fp32 tensors through a CUDA-enabled library, 4 query heads over 3 kv heads: a clear error naming
    the heads, not a crash. Run in a child process so a crash fails this test alone."""
    import subprocess
    import sys
    code = (
        "import torch, flashattn\n"
        "q = torch.randn(1, 8, 4, 32); k = torch.randn(1, 8, 3, 32)\n"
        "try:\n"
        "    flashattn.flash_attn_func(q, k, k)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, "child exited with %d: %s" % (r.returncode, r.stderr[-2000:])
    assert "head" in r.stdout, r.stdout
