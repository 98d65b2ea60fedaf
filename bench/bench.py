#!/usr/bin/env python3
"""flashattn against its peers, in one process, on one device (docs/performance.md is the method).

Suites
  fwd      standard grid + other shapes, forward            -> <gpu>-<yyyymmdd>-fwd.json
  bwd      the same, backward alone and fwd+bwd             -> <gpu>-<yyyymmdd>-bwd.json
  decode   q len 1/4, 32/8 heads, d128: K+V read bandwidth  -> <gpu>-<yyyymmdd>-decode.json
  cpu      flashattn CPU backend vs torch CPU SDPA          -> cpu-<model>-<yyyymmdd>-cpu.json

Peers (GPU): torch SDPA restricted to one backend (FLASH_ATTENTION = "fa2", CUDNN_ATTENTION = "cudnn",
EFFICIENT_ATTENTION = "efficient", MATH = "math", the latter for memory at shapes where it fits) and compiled
FlexAttention ("flex"). A peer that cannot run a configuration gets no record.

Usage: python bench/bench.py --suite fwd [--dtype bf16] [--quick] [--out bench/results/]
"""

import argparse
import contextlib
import importlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

GPU_PEERS = ["fa2", "cudnn", "efficient", "flex", "math"]
# Standard attention is run only where its S/P matrices (with autograd's saved copies) stay this small.
MATH_MAX_BYTES = 24e9


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Skips:
    """Collects why a peer did not run, and reports each distinct reason once (a peer missing an option is
    expected; a hundred identical lines are not informative)."""

    def __init__(self):
        self.seen = set()

    def __call__(self, impl, cfg_desc, err):
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        if (impl, reason) not in self.seen:
            self.seen.add((impl, reason))
            log(f"  no record: {impl} at {cfg_desc}: {reason}")


# ---- Timing -------------------------------------------------------------------------------------------------


class GpuTimer:
    """Median time of fn in ms, CUDA events around each call, with L2 emptied before every call.

    l2_flush="read" (default) empties L2 by reading a 256 MB buffer: the call starts with a cold L2 that holds
    no dirty lines. l2_flush="write" zeroes the buffer instead (what triton.testing.do_bench does): the call
    then also pays the write-back of up to a whole L2 of the flush's dirty lines (50 MB on an H100, about
    17 us at 3 TB/s), which the read ceiling (one multi-GB read) does not pay; it weighs on calls that take
    tens of microseconds, so it is kept only to reproduce earlier result files."""

    FLUSH_BYTES = 256 * 1024 * 1024
    MAX_RUNS = 1000

    def __init__(self, torch, quick, l2_flush="read"):
        if l2_flush not in ("read", "write"):
            raise ValueError(f"l2_flush must be 'read' or 'write', got {l2_flush!r}")
        self.torch = torch
        self.l2_flush = l2_flush
        self.warmup, self.rep = (10, 40) if quick else (25, 100)
        self.cache = torch.zeros(self.FLUSH_BYTES // 4, dtype=torch.float32, device="cuda")

    def flush(self):
        if self.l2_flush == "read":
            self.cache.amax()
        else:
            self.cache.zero_()

    def __call__(self, fn):
        torch = self.torch
        fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            fn()
        end.record()
        torch.cuda.synchronize()
        est = max(start.elapsed_time(end) / 5, 1e-3)
        n_warm = max(1, int(self.warmup / est))
        n = min(self.MAX_RUNS, max(5, int(self.rep / est)))
        for _ in range(n_warm):
            fn()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for s, e in events:
            self.flush()
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in events)


def graph_timer(torch, timer, fn):
    """Median replay time of fn captured in a CUDA graph (what serving engines run)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return timer(graph.replay)


def measure_timer_floor_ms(torch, timer):
    """Median time of one trivial kernel (torch.cuda._sleep(0)), eager and as a replayed graph: the part of
    every short call's time that is launch and timer, not work."""
    fn = lambda: torch.cuda._sleep(0)  # noqa: E731
    return {"eager": timer(fn), "graph": graph_timer(torch, timer, fn)}


def peak_memory(torch, fn):
    """Bytes fn allocates at its peak beyond what was live before it (torch.cuda.max_memory_allocated delta)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - base)


def cpu_time(fn, quick):
    """Median wall time in ms after a warm-up; at least 3 runs and about 1 s (quick: 0.3 s) of them."""
    fn()
    t0 = time.perf_counter()
    fn()
    est = time.perf_counter() - t0
    n = max(3, min(50, int((0.3 if quick else 1.0) / max(est, 1e-6))))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# ---- Ceilings -----------------------------------------------------------------------------------------------


def measure_matmul_tflops(torch, timer):
    n = 8192
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    ms = timer(lambda: a @ b)
    return 2.0 * n ** 3 / (ms * 1e-3) / 1e12


def measure_read_ceiling_tbps(torch, timer, gib=4):
    """Best read bandwidth of read-only reductions over a multi-GB bf16 tensor: the decode ceiling."""
    x = torch.empty(gib * (1 << 30) // 2, dtype=torch.bfloat16, device="cuda").normal_()
    nbytes = x.numel() * x.element_size()
    best = 0.0
    for fn in (lambda: x.sum(dtype=torch.float32), lambda: x.amax(), lambda: x.view(-1, 4096).sum(dim=0,
                                                                                                  dtype=torch.float32)):
        try:
            best = max(best, nbytes / (timer(fn) * 1e-3) / 1e12)
        except RuntimeError:
            pass
    x = None  # noqa: F841 -- free the 4 GiB before the suite
    torch.cuda.empty_cache()
    return best


# ---- Implementations ------------------------------------------------------------------------------------------


class Inputs:
    """One configuration's tensors: flashattn gets BSHD (its layout), SDPA backends get the same memory as
    (B, H, S, D) views (FA2's and CUTLASS's native layout, so no hidden copy), FlexAttention a contiguous
    BHSD copy (its usual input)."""

    def __init__(self, torch, cfg, device, requires_grad):
        dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[cfg["dtype"]]
        b, sq, sk, h, hk, d = (cfg[x] for x in ("batch", "seqlen_q", "seqlen_k", "nheads", "nheads_k", "headdim"))
        self.varlen = bool(cfg.get("seqlens"))
        if self.varlen:
            total = sum(cfg["seqlens"])
            shape_q, shape_k = (1, total, h, d), (1, total, hk, d)
        else:
            shape_q, shape_k = (b, sq, h, d), (b, sk, hk, d)
        mk = lambda shape: torch.randn(shape, dtype=dt, device=device).requires_grad_(requires_grad)  # noqa: E731
        self.q, self.k, self.v = mk(shape_q), mk(shape_k), mk(shape_k)
        self.dout = torch.randn(shape_q, dtype=dt, device=device)
        self.alibi = None
        if cfg.get("alibi"):
            self.alibi = torch.tensor([2.0 ** (-8.0 * (i + 1) / h) for i in range(h)], dtype=torch.float32,
                                      device=device)
        if self.varlen:
            lens = torch.tensor([0] + list(cfg["seqlens"]), dtype=torch.int32)
            self.cu_seqlens = torch.cumsum(lens, 0).to(torch.int32).to(device)
            self.max_seqlen = max(cfg["seqlens"])
            self.doc_ids = torch.repeat_interleave(torch.arange(len(cfg["seqlens"])), lens[1:].long()).to(device)


def build_flashattn(torch, cfg, inp):
    import flashattn
    window = tuple(cfg["window"]) if cfg.get("window") else (-1, -1)
    kw = dict(causal=cfg["causal"], window_size=window, softcap=cfg.get("softcap", 0.0), alibi_slopes=inp.alibi)
    if inp.varlen:
        q, k, v = (t.view(t.shape[1:]) for t in (inp.q, inp.k, inp.v))
        fwd = lambda: flashattn.flash_attn_varlen_func(q, k, v, inp.cu_seqlens, inp.cu_seqlens,  # noqa: E731
                                                       inp.max_seqlen, inp.max_seqlen, **kw)
        dout = inp.dout.view(inp.dout.shape[1:])
    else:
        fwd = lambda: flashattn.flash_attn_func(inp.q, inp.k, inp.v, **kw)  # noqa: E731
        dout = inp.dout
    path = None
    try:
        from flashattn.functional import plan_forward
        path = plan_forward(inp.q.detach(), inp.k.detach(), inp.v.detach(), causal=cfg["causal"],
                            window_size=window, softcap=cfg.get("softcap", 0.0))["path"]
    except Exception:  # the plan is informative only; its absence must not cost the record
        pass
    return fwd, (inp.q, inp.k, inp.v), dout, path, contextlib.nullcontext


SDPA_BACKENDS = {"fa2": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                 "math": "MATH", "torch_cpu": "FLASH_ATTENTION"}


def build_sdpa(torch, cfg, inp, impl):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    if inp.varlen or cfg.get("window") or cfg.get("softcap") or cfg.get("alibi"):
        raise NotImplementedError("option not offered by this SDPA backend")
    if cfg["seqlen_q"] != cfg["seqlen_k"] and cfg["causal"]:
        raise NotImplementedError("SDPA's causal mask is top-left aligned; ours is bottom-right")
    backend = getattr(SDPBackend, SDPA_BACKENDS[impl])
    if impl == "torch_cpu":
        # torch's CPU flash kernel gets its own contiguous (B, H, S, D) layout: no copy is timed on its side.
        q, k, v = (t.detach().transpose(1, 2).contiguous().requires_grad_(t.requires_grad)
                   for t in (inp.q, inp.k, inp.v))
        dout = inp.dout.transpose(1, 2).contiguous()
    else:
        q, k, v = (t.transpose(1, 2) for t in (inp.q, inp.k, inp.v))
        dout = inp.dout.transpose(1, 2)
    gqa = cfg["nheads"] != cfg["nheads_k"]
    kw = dict(is_causal=cfg["causal"])
    if gqa:
        kw["enable_gqa"] = True
    fwd = lambda: F.scaled_dot_product_attention(q, k, v, **kw)  # noqa: E731
    leaves = (inp.q, inp.k, inp.v) if impl != "torch_cpu" else (q, k, v)
    return fwd, leaves, dout, None, lambda: sdpa_kernel([backend])


_flex_compiled = None


def build_flex(torch, cfg, inp):
    global _flex_compiled
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    if _flex_compiled is None:
        import torch._dynamo
        # One compiled graph per shape and mask: the grid needs far more than dynamo's default cache.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 512)
        _flex_compiled = torch.compile(flex_attention, dynamic=False)
    causal, window = cfg["causal"], cfg.get("window")
    sq, sk = (sum(cfg["seqlens"]),) * 2 if inp.varlen else (cfg["seqlen_q"], cfg["seqlen_k"])
    off = sk - sq
    doc = inp.doc_ids if inp.varlen else None

    def mask_mod(b, h, q_idx, kv_idx):
        ok = kv_idx >= 0
        if causal:
            ok = ok & (q_idx + off >= kv_idx)
        if window and window[0] >= 0:
            ok = ok & (q_idx + off - kv_idx <= window[0])
        if window and window[1] >= 0 and not causal:
            ok = ok & (kv_idx - q_idx - off <= window[1])
        if doc is not None:
            ok = ok & (doc[q_idx] == doc[kv_idx])
        return ok

    need_mask = causal or bool(window) or doc is not None
    block_mask = create_block_mask(mask_mod, None, None, sq, sk, device=inp.q.device) if need_mask else None
    cap, slopes = cfg.get("softcap", 0.0), inp.alibi

    def score_mod(score, b, h, q_idx, kv_idx):
        if cap:
            score = cap * torch.tanh(score / cap)
        if slopes is not None:
            score = score - slopes[h] * torch.abs(q_idx + off - kv_idx)
        return score

    q, k, v = (t.detach().transpose(1, 2).contiguous().requires_grad_(t.requires_grad)
               for t in (inp.q, inp.k, inp.v))
    dout = inp.dout.transpose(1, 2).contiguous()
    kw = dict(block_mask=block_mask, enable_gqa=cfg["nheads"] != cfg["nheads_k"])
    if cap or slopes is not None:
        kw["score_mod"] = score_mod
    fwd = lambda: _flex_compiled(q, k, v, **kw)  # noqa: E731
    return fwd, (q, k, v), dout, None, contextlib.nullcontext


def build(torch, impl, cfg, inp):
    if impl == "flashattn":
        return build_flashattn(torch, cfg, inp)
    if impl == "flex":
        return build_flex(torch, cfg, inp)
    return build_sdpa(torch, cfg, inp, impl)


def math_fits(cfg):
    elem = 4 if cfg["dtype"] == "fp32" else 2
    return cfg["batch"] * cfg["nheads"] * cfg["seqlen_q"] * cfg["seqlen_k"] * elem * 4 <= MATH_MAX_BYTES


# ---- Compute suites (fwd, bwd, cpu) ---------------------------------------------------------------------------


def run_compute(torch, args, suite, configs, impls, device, rounds=1):
    """Times every impl on every configuration; records fwd (suite fwd) or bwd + fwd_bwd (suite bwd).
    rounds > 1 repeats the whole pass and keeps each record's fastest round, so configurations compared with
    each other are timed side by side, not minutes apart (GPU clocks drift with load and temperature)."""
    if rounds > 1:
        best = {}
        for _ in range(rounds):
            for rec in run_compute(torch, args, suite, configs, impls, device):
                key = (C.config_key(rec), rec["impl"], rec.get("variant"))
                if key not in best or rec["ms"] < best[key]["ms"]:
                    best[key] = rec
        return list(best.values())
    ops = ["fwd"] if suite in ("fwd", "cpu") else ["bwd", "fwd_bwd"]
    if suite == "cpu" and args.cpu_bwd:
        ops = ["fwd", "bwd"]
    on_gpu = device == "cuda"
    timer = GpuTimer(torch, args.quick, args.l2_flush) if on_gpu else None
    skip = Skips()
    records = []
    for cfg in configs:
        desc = C.describe(dict(cfg, op=suite))
        need_grad = any(op != "fwd" for op in ops)
        try:
            inp = Inputs(torch, cfg, device, need_grad)
        except RuntimeError as e:  # OOM on the largest shapes: no record for anyone
            skip("inputs", desc, e)
            continue
        for impl in impls:
            if impl == "math" and not math_fits(cfg):
                continue
            try:
                fwd, leaves, dout, path, ctx = build(torch, impl, cfg, inp)
                with ctx():
                    fwd()  # compiles (flex), surfaces "not supported" before any timing
                    out_cache = {}

                    def bwd_only():
                        torch.autograd.grad(out_cache["out"], leaves, dout, retain_graph=True)

                    def fwd_bwd():
                        torch.autograd.grad(fwd(), leaves, dout)

                    for op in ops:
                        if op == "fwd":
                            with torch.no_grad() if not need_grad else contextlib.nullcontext():
                                ms = timer(fwd) if on_gpu else cpu_time(fwd, args.quick)
                            mem = peak_memory(torch, fwd) if on_gpu else None
                        elif op == "bwd":
                            out_cache["out"] = fwd()
                            bwd_only()  # the first backward compiles (flex): keep it out of the estimate
                            ms = timer(bwd_only) if on_gpu else cpu_time(bwd_only, args.quick)
                            out_cache.clear()
                            mem = peak_memory(torch, fwd_bwd) if on_gpu else None
                        else:
                            fwd_bwd()
                            ms = timer(fwd_bwd) if on_gpu else cpu_time(fwd_bwd, args.quick)
                            mem = peak_memory(torch, fwd_bwd) if on_gpu else None
                        flops = C.config_flops(cfg, op)
                        rec = C.make_record(cfg, op, impl, ms, path=path if impl == "flashattn" else None,
                                            tflops=flops / (ms * 1e-3) / 1e12)
                        if mem is not None:
                            rec["peak_mem_bytes"] = mem
                        if not on_gpu:
                            rec["threads"] = torch.get_num_threads()
                            if impl == "flashattn":
                                rec["path"] = "cpu"
                        records.append(rec)
            except Exception as e:  # a peer that cannot run a configuration gets no record
                if impl == "flashattn" and type(e).__name__ == "FlashAttnNotBuilt":
                    log(f"  FLASHATTN NOT BUILT for {desc}: {e}")
                else:
                    skip(impl, desc, e)
            finally:
                if on_gpu:
                    torch.cuda.synchronize()
        del inp
        if on_gpu:
            torch.cuda.empty_cache()
    return records


# ---- Decode suite ---------------------------------------------------------------------------------------------


def run_decode(torch, args, dtype, ceiling, quick):
    import flashattn
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    timer = GpuTimer(torch, quick, args.l2_flush)
    skip = Skips()
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    page = 16
    records = []
    for cfg in C.decode_grid(dtype, quick):
        b, sq, L, h, hk, d = (cfg[x] for x in ("batch", "seqlen_q", "seqlen_k", "nheads", "nheads_k", "headdim"))
        desc = C.describe(dict(cfg, op="decode"))
        nbytes = C.kv_bytes(b, L, hk, d, 2)
        try:
            q, k, v, seqlens, kp, vp, table = C.decode_inputs(torch, b, sq, L, h, hk, d, dt, page)
        except RuntimeError as e:
            skip("inputs", desc, e)
            torch.cuda.empty_cache()
            continue
        # q len 4 (speculative decoding) runs without a mask for everyone: SDPA's causal mask is top-left
        # aligned, and the mask changes nothing about the bytes read.
        impls = [
            ("flashattn", page, lambda: flashattn.flash_attn_with_kvcache(q, kp, vp, cache_seqlens=seqlens,
                                                                         block_table=table), None),
            ("flashattn", None, lambda: flashattn.flash_attn_with_kvcache(q, k, v, cache_seqlens=seqlens), None),
        ]
        if args.compare_64row:
            def paged_64row():
                os.environ["FLASHATTN_DECODE_TILE"] = "0"
                try:
                    return flashattn.flash_attn_with_kvcache(q, kp, vp, cache_seqlens=seqlens, block_table=table)
                finally:
                    del os.environ["FLASHATTN_DECODE_TILE"]
            impls.append(("flashattn_64row", page, paged_64row, None))
        # A reference, not a peer: one torch reduction over exactly this point's K+V bytes (the dense K and V),
        # through the same timer: how far under the multi-GB read ceiling a single read of this size lands,
        # launch and timer included (a tuned kernel can beat torch's reduction by a little; nothing by much).
        same_bytes = torch.as_strided(k, (nbytes // k.element_size(),), (1,))  # dense K then V (C.decode_inputs)
        impls.append(("read", None, lambda: same_bytes.amax(), None))
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        for peer in ("fa2", "cudnn", "efficient"):
            impls.append((peer, None, lambda: F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True),
                          getattr(SDPBackend, SDPA_BACKENDS[peer])))
        path = None
        try:
            from flashattn.functional import plan_forward
            path = plan_forward(q, k, v)["path"]
        except Exception:  # informative only
            pass
        for impl, page_size, fn, backend in impls:
            name = impl + ("-paged" if page_size else "")
            ctx = (lambda: sdpa_kernel([backend])) if backend is not None else contextlib.nullcontext
            for graph in (False, True):
                try:
                    with ctx():
                        fn()
                        ms = graph_timer(torch, timer, fn) if graph else timer(fn)
                    tbps = nbytes / (ms * 1e-3) / 1e12
                    rec = C.make_record(cfg, "decode", impl, ms, path=path if impl == "flashattn" else None,
                                        page_size=page_size, tbps=tbps, graph=graph, kv_bytes=nbytes)
                    if ceiling:
                        rec["frac_of_read_ceiling"] = tbps / ceiling
                    records.append(rec)
                except Exception as e:  # no record for what cannot run (or cannot be captured)
                    skip(name + (" (graph)" if graph else ""), desc, e)
                    torch.cuda.synchronize()
        q = k = v = kp = vp = table = qt = kt = vt = impls = same_bytes = None  # free this point before the next
        torch.cuda.empty_cache()
    return records


# ---- Reporting ------------------------------------------------------------------------------------------------


def report(suite, records, ceiling=None):
    print(f"\n=== suite {suite}: {len(records)} records ===")
    if suite == "cpu":
        print("\n".join(C.format_table(records, ["torch_cpu"], unit="GFLOP/s", scale=1e3)))
        print("\n".join(C.summary_lines(records, ["torch_cpu"])))
        return
    if suite == "decode":
        paged = lambda r: r.get("page_size") is not None  # noqa: E731 -- the headline: paged flashattn
        for graph in (False, True):
            sub = [r for r in records if bool(r.get("graph")) == graph]
            print(f"\n-- {'CUDA-graph replay' if graph else 'eager, event-timed'} (TB/s of K+V read;"
                  f" read ceiling {ceiling or float('nan'):.2f} TB/s) --")
            print("\n".join(C.format_table(sub, ["fa2", "cudnn"], ours_filter=paged, unit="TB/s, paged flashattn")))
            refs = ["fa2", "cudnn", "efficient", "flashattn_64row", "read"]
            print("\n".join(C.summary_lines(sub, refs, ours_filter=paged)))
            if ceiling:
                fr = [r["tbps"] / ceiling for r in sub if r["impl"] == "flashattn" and paged(r)]
                big = [r["tbps"] / ceiling for r in sub if r["impl"] == "flashattn" and paged(r) and r["batch"] >= 8]
                if fr:
                    print(f"flashattn paged: {min(fr):.0%}..{max(fr):.0%} of the read ceiling"
                          + (f"; at B >= 8 worst {min(big):.0%}" if big else ""))
                bare = [r for r in sub if r["impl"] == "read" and r["batch"] >= 8]
                if bare:
                    worst = min(bare, key=lambda r: r["tbps"])
                    print(f"a bare read of the same bytes at B >= 8: worst {worst['tbps'] / ceiling:.0%} of the"
                          f" read ceiling ({C.describe(worst)})")
        return
    for op in sorted({r["op"] for r in records}):
        sub = [r for r in records if r["op"] == op]
        print(f"\n-- {op} --")
        print("\n".join(C.format_table(sub, ["fa2", "cudnn"])))
        grid = [r for r in sub if r.get("variant") == "plain"]
        print("standard grid + plain:")
        print("\n".join(C.summary_lines(grid, ["fa2", "cudnn", "efficient", "flex"])))
        other = [r for r in sub if r.get("variant") not in (None, "plain")]
        if other:
            print("other shapes (where the peer offers the option):")
            print("\n".join(C.summary_lines(other, ["fa2", "cudnn", "efficient", "flex"])))
            print("other shapes, flashattn TFLOP/s over its plain point (d128 8k causal):")
            print("\n".join(C.variant_ratio_lines(sub)))


# ---- Main -----------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="fwd", choices=["fwd", "bwd", "decode", "cpu", "all"],
                    help="all = fwd, bwd and decode on the GPU")
    ap.add_argument("--dtype", default="all", choices=["bf16", "fp16", "fp32", "all"],
                    help="GPU suites: bf16/fp16 (all = both); cpu suite: fp32/bf16 (all = both)")
    ap.add_argument("--quick", action="store_true", help="a small subset for smoke runs (< 2 minutes)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                    help="directory for the result files")
    ap.add_argument("--impls", default=None,
                    help="comma-separated subset of flashattn,fa2,cudnn,efficient,flex,math (default: all; "
                         "--quick leaves flex out: it compiles per shape)")
    ap.add_argument("--threads", type=int, default=0, help="cpu suite: threads for both (0 = all cores)")
    ap.add_argument("--cpu-bwd", action="store_true", help="cpu suite: time the backward too")
    ap.add_argument("--headdims", default=None,
                    help="fwd/bwd suites: comma-separated head dims of the standard grid instead of 64,128,256 "
                         "(nheads = 2048 // d); leaves out the other-shapes row, and the result file's name "
                         "says which head dims it holds")
    ap.add_argument("--rounds", type=int, default=1,
                    help="fwd/bwd suites: time the whole grid this many times and keep each record's fastest "
                         "round (every impl alike; the other-shapes row always takes 2)")
    ap.add_argument("--l2-flush", default="read", choices=["read", "write"],
                    help="how L2 is emptied before each timed call: read a 256 MB buffer (cold and clean), or "
                         "zero it (triton do_bench's way: the call also writes back the flush's dirty lines)")
    ap.add_argument("--no-write", action="store_true", help="print the tables only")
    ap.add_argument("--compare-64row", action="store_true",
                    help="decode suite: also time paged flashattn on the 64-row kernel (FLASHATTN_DECODE_TILE=0)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        sys.exit("bench.py needs torch (the GPU test host has torch 2.11); the C++ CLI flashattn-bench does not")
    try:
        importlib.import_module("flashattn")
    except ImportError:
        # A source checkout: the package lives in <repo>/python (the library is found by FLASHATTN_LIBRARY or
        # the package's own search).
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
    try:
        importlib.import_module("flashattn")
    except ImportError as e:
        sys.exit(f"bench.py: cannot import flashattn ({e}); install it (pip install -e .) or set PYTHONPATH=python")

    suites = ["fwd", "bwd", "decode"] if args.suite == "all" else [args.suite]
    written = []
    for suite in suites:
        if suite == "cpu":
            written += run_cpu_suite(torch, args)
        else:
            written += run_gpu_suite(torch, args, suite)
    for p in written:
        print(f"wrote {p}")


def run_cpu_suite(torch, args):
    import flashattn
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    flashattn.set_num_threads(threads)
    dtypes = ["fp32", "bf16"] if args.dtype == "all" else [args.dtype]
    if any(d not in ("fp32", "bf16") for d in dtypes):
        sys.exit("cpu suite: --dtype fp32, bf16 or all")
    impls = parse_impls(args, ["flashattn", "torch_cpu"])
    records = run_compute(torch, args, "cpu", list(C.cpu_grid(dtypes, args.quick)), impls, "cpu")
    machine = "CPU " + C.cpu_model()
    report("cpu", records)
    if args.no_write or not records:
        return []
    return [C.write_results(C.result_path(args.out, machine, "cpu"), machine, records,
                            threads=threads, quick=args.quick)]


def parse_impls(args, default):
    if not args.impls:
        return default
    chosen = [x.strip() for x in args.impls.split(",") if x.strip()]
    return [x for x in default if x in chosen]


def run_gpu_suite(torch, args, suite):
    if not torch.cuda.is_available():
        sys.exit(f"suite {suite} needs a CUDA GPU (try --suite cpu)")
    name = torch.cuda.get_device_name()
    timer = GpuTimer(torch, args.quick, args.l2_flush)
    matmul = measure_matmul_tflops(torch, timer)
    ceiling = measure_read_ceiling_tbps(torch, timer, gib=2 if args.quick else 4)
    log(f"{name}: bf16 8192^3 matmul {matmul:.0f} TFLOP/s, read ceiling {ceiling:.2f} TB/s")
    dtypes = ["bf16", "fp16"] if args.dtype == "all" else [args.dtype]
    file_suite = suite
    extra = {}
    if suite == "decode":
        records = []
        extra["timer_floor_ms"] = measure_timer_floor_ms(torch, timer)
        log(f"timer floor (one trivial kernel): eager {extra['timer_floor_ms']['eager'] * 1e3:.1f} us,"
            f" graph replay {extra['timer_floor_ms']['graph'] * 1e3:.1f} us")
        for dt in dtypes[:1] if args.quick else dtypes:
            records += run_decode(torch, args, dt, ceiling, args.quick)
    else:
        default = ["flashattn", "fa2", "cudnn", "efficient", "math"] + ([] if args.quick else ["flex"])
        impls = parse_impls(args, ["flashattn"] + GPU_PEERS) if args.impls else default
        if args.quick:
            dtypes = dtypes[:1]
        # The other-shapes row is judged against its plain point (d128 8k causal, also a grid point): the
        # row, plain point included, runs after the grid in two interleaved rounds.
        headdims = [int(d) for d in args.headdims.split(",")] if args.headdims else None
        other = [] if headdims else list(C.other_shapes(dtypes, args.quick))
        other_keys = {C.config_key(dict(c, op="")) for c in other}
        grid = [c for c in C.standard_grid(dtypes, args.quick, headdims)
                if C.config_key(dict(c, op="")) not in other_keys]
        records = run_compute(torch, args, suite, grid, impls, "cuda", rounds=max(1, args.rounds))
        if other:
            records += run_compute(torch, args, suite, other, impls, "cuda", rounds=2)
        if headdims:
            file_suite = f"{suite}-d" + "-d".join(str(d) for d in headdims)
    report(suite, records, ceiling)
    if args.no_write or not records:
        return []
    return [C.write_results(C.result_path(args.out, name, file_suite), name, records, read_ceiling_tbps=ceiling,
                            matmul_tflops=matmul, torch=torch.__version__, quick=args.quick,
                            l2_flush=args.l2_flush, **extra)]


if __name__ == "__main__":
    main()
