#!/usr/bin/env python3
"""Checks the bench's timer on decode-sized calls: the GPU time of each L2 flush, the host time of each
implementation's call, and the event-timed median under both flush modes, eager and graph replay.
Usage: python bench/timer_check.py [--points 1x2048 1x8192 8x2048]"""

import argparse
import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
from bench import GpuTimer, graph_timer  # noqa: E402


def host_us(torch, fn, n=300):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / n * 1e6


def _warm(torch, fn, n=200):
    """Median event time of fn with L2 left warm: n calls queued back to back, no flush, no sync between."""
    fn()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
    for s, e in events:
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return sorted(s.elapsed_time(e) * 1e3 for s, e in events)[n // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", nargs="+", default=["1x2048", "1x8192", "8x2048"])
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import flashattn

    timers = {m: GpuTimer(torch, quick=False, l2_flush=m) for m in ("read", "write")}
    for m, t in timers.items():
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t.flush()
        torch.cuda.synchronize()
        s.record()
        for _ in range(20):
            t.flush()
        e.record()
        torch.cuda.synchronize()
        print(f"flush {m}: {s.elapsed_time(e) / 20 * 1e3:.1f} us GPU, host {host_us(torch, t.flush):.1f} us")
    # A pure read of 8 and 64 MB: a complete flush leaves it as slow as the first touch of fresh data.
    for mb in (8, 64):
        x = torch.ones(mb * 2 ** 20 // 4, dtype=torch.float32, device="cuda")
        row = [f"sum {mb:3d} MB"]
        row.append(f"warm {_warm(torch, x.sum):6.1f}")
        for m, t in timers.items():
            row.append(f"{m}: {t(x.sum) * 1e3:6.1f}")
        print("  ".join(row), flush=True)
    h, hk, d, page = 32, 8, 128, 16
    for point in args.points:
        b, L = (int(x) for x in point.split("x"))
        q, k, v, seqlens, kp, vp, table = C.decode_inputs(torch, b, 1, L, h, hk, d, torch.bfloat16, page)
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        seq = torch.arange(table.numel(), device="cuda", dtype=torch.int32).view(table.shape)
        _, _, _, _, kp64, vp64, t64 = C.decode_inputs(torch, b, 1, L, h, hk, d, torch.bfloat16, 64)
        _, _, _, _, kp256, vp256, t256 = C.decode_inputs(torch, b, 1, L, h, hk, d, torch.bfloat16, 256)
        impls = {
            "paged": lambda: flashattn.flash_attn_with_kvcache(q, kp, vp, cache_seqlens=seqlens, block_table=table),
            "p16seq": lambda: flashattn.flash_attn_with_kvcache(q, kp, vp, cache_seqlens=seqlens, block_table=seq),
            "p64": lambda: flashattn.flash_attn_with_kvcache(q, kp64, vp64, cache_seqlens=seqlens, block_table=t64),
            "p256": lambda: flashattn.flash_attn_with_kvcache(q, kp256, vp256, cache_seqlens=seqlens,
                                                              block_table=t256),
            "dense": lambda: flashattn.flash_attn_with_kvcache(q, k, v, cache_seqlens=seqlens),
            "cudnn": lambda: F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True),
            "fa2": lambda: F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True),
        }
        backends = {"cudnn": SDPBackend.CUDNN_ATTENTION, "fa2": SDPBackend.FLASH_ATTENTION}
        for name, fn in impls.items():
            with sdpa_kernel([backends[name]]) if name in backends else contextlib.nullcontext():
                fn()
                row = [f"{point:>7s} {name:>6s} host {host_us(torch, fn):6.1f} us"]
                for m, t in timers.items():
                    e = t(fn) * 1e3
                    g = graph_timer(torch, t, fn) * 1e3
                    row.append(f"{m}: eager {e:6.1f} graph {g:6.1f}")
                print("  ".join(row), flush=True)
        # The paged call again with its block table (and cache_seqlens) brought back into L2 after the flush.
        hot = GpuTimer(torch, quick=False, l2_flush="read")
        cold_flush = hot.flush
        hot.flush = lambda: (cold_flush(), table.sum(), seqlens.sum())
        fn = impls["paged"]
        print(f"{point:>7s} paged, table hot after a read flush: eager {hot(fn) * 1e3:6.1f} "
              f"graph {graph_timer(torch, hot, fn) * 1e3:6.1f}", flush=True)


if __name__ == "__main__":
    main()
