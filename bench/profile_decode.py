#!/usr/bin/env python3
"""Kernel-level view of a decode step: every GPU kernel one call launches, with its grid, block and mean
duration (torch.profiler / Kineto trace), for flashattn (dense and paged) and torch SDPA's FLASH and CUDNN
backends on the same inputs. It answers "where does the decode time go" without ncu.

Usage: python bench/profile_decode.py [--batch 1 32] [--seqlen 8192] [--seqlen-q 1 4] [--page 16]
"""

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
import common as C  # noqa: E402


def kernel_events(torch, fn, iters, flush=None):
    """The kernel events of iters calls of fn (flush, when given, runs before each call)."""
    from torch.profiler import ProfilerActivity, profile
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            if flush is not None:
                flush()
            fn()
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    prof.export_chrome_trace(path)
    events = json.load(open(path)).get("traceEvents", [])
    os.unlink(path)
    return [e for e in events if e.get("cat") == "kernel"]


def kernel_table(torch, fn, iters=20, flush=None):
    """Per kernel of one call of fn: (name, launches per call, mean us, grid, block). With flush, L2 is
    emptied before every call (the bench's timer condition) and the flush's own kernels are left out."""
    skip = {e["name"] for e in kernel_events(torch, flush, 2)} if flush is not None else set()
    rows = defaultdict(lambda: [0, 0.0, None, None])
    for e in kernel_events(torch, fn, iters, flush):
        if e["name"] in skip:
            continue
        r = rows[e["name"]]
        r[0] += 1
        r[1] += float(e.get("dur", 0.0))
        r[2] = e.get("args", {}).get("grid")
        r[3] = e.get("args", {}).get("block")
    return [(name[:90], n // iters, total / max(n, 1), grid, block) for name, (n, total, grid, block) in rows.items()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--seqlen", type=int, default=8192)
    ap.add_argument("--seqlen-q", type=int, nargs="+", default=[1])
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--flush", choices=["none", "read", "write"], default="none",
                    help="empty L2 before every call as the bench's timer does (default: none, a warm L2)")
    ap.add_argument("--ncu", action="store_true",
                    help="only call each implementation 4 times, no profiler (run the script under ncu)")
    ap.add_argument("--impls", default=None, help="comma-separated subset of: dense, paged, fa2, cudnn")
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import flashattn
    flush = None
    if args.flush != "none":
        from bench import GpuTimer
        flush = GpuTimer(torch, quick=True, l2_flush=args.flush).flush
    h, hk, d, dt = 32, 8, 128, torch.bfloat16
    for b, sq in [(b, sq) for sq in args.seqlen_q for b in args.batch]:
        L, page = args.seqlen, args.page
        q, k, v, seqlens, kp, vp, table = C.decode_inputs(torch, b, sq, L, h, hk, d, dt, page)
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

        def sdpa(backend):
            def fn():
                with sdpa_kernel(backend):
                    F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True)
            return fn

        impls = [("flashattn dense", lambda: flashattn.flash_attn_with_kvcache(q, k, v, cache_seqlens=seqlens)),
                 ("flashattn paged%d" % page,
                  lambda: flashattn.flash_attn_with_kvcache(q, kp, vp, cache_seqlens=seqlens, block_table=table)),
                 ("fa2", sdpa(SDPBackend.FLASH_ATTENTION)), ("cudnn", sdpa(SDPBackend.CUDNN_ATTENTION))]
        if args.impls:
            keep = args.impls.split(",")
            impls = [(n, f) for n, f in impls if n.replace("flashattn ", "").rstrip("0123456789") in keep]
        kv_mb = 2 * b * L * hk * d * 2 / 1e6
        if args.ncu:
            for name, fn in impls:
                for _ in range(4):
                    fn()
            torch.cuda.synchronize()
            continue
        print(f"\n== decode b{b} q{sq} L{L} h{h}/{hk} d{d} bf16: K+V {kv_mb:.1f} MB, L2 flush {args.flush}")
        for name, fn in impls:
            try:
                rows = kernel_table(torch, fn, flush=flush)
            except Exception as e:  # a peer that cannot run this shape
                print(f"{name:18s} no run: {str(e).splitlines()[0][:120]}")
                continue
            total = sum(r[2] * r[1] for r in rows)
            print(f"{name:18s} {total:8.1f} us of kernels per call ({kv_mb / max(total, 1e-9):.2f} TB/s)")
            for kname, per_call, us, grid, block in sorted(rows, key=lambda r: -r[2] * r[1]):
                print(f"    {us:8.1f} us x{per_call}  grid {grid} block {block}  {kname}")


if __name__ == "__main__":
    main()
