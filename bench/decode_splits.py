#!/usr/bin/env python3
"""num_splits sweep of decode points: CUDA-graph replay time of flash_attn_with_kvcache (paged, page 16, and
dense) for each forced num_splits and for the heuristic's own choice (0), next to torch SDPA's CUDNN and
FLASH backends on the same inputs, with the bench's timer (L2 flushed before each replay). It checks the
heuristic of docs/kernels_sm80_inference.md ("num_splits heuristic") where a decode step is latency-bound.

Usage: python bench/decode_splits.py [--points 1x2048 1x8192 8x2048] [--splits 0 1 2 4 8 16 32 64] [--seqlen-q 1]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
import common as C  # noqa: E402
from bench import GpuTimer, graph_timer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", nargs="+", default=["1x2048", "1x8192", "1x32768", "8x2048", "8x8192"],
                    help="BATCHxCACHE_LEN decode points (32 query / 8 KV heads, d128, bf16)")
    ap.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2, 4, 8, 12, 16, 24, 32, 48, 64])
    ap.add_argument("--seqlen-q", type=int, default=1)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import flashattn

    timer = GpuTimer(torch, quick=False)
    h, hk, d, page = 32, 8, 128, 16
    print(f"{'point':>10s} {'impl':>10s} " + " ".join(f"{('s=' + str(s)) if s else 'auto':>7s}" for s in args.splits)
          + "   (us per replay)")
    for point in args.points:
        b, L = (int(x) for x in point.split("x"))
        q, k, v, seqlens, kp, vp, table = C.decode_inputs(torch, b, args.seqlen_q, L, h, hk, d, torch.bfloat16, page)
        rows = {
            "paged": lambda s: flashattn.flash_attn_with_kvcache(q, kp, vp, cache_seqlens=seqlens, block_table=table,
                                                                 num_splits=s),
            "dense": lambda s: flashattn.flash_attn_with_kvcache(q, k, v, cache_seqlens=seqlens, num_splits=s),
        }
        for name, call in rows.items():
            ref = call(1).float()  # the paged pool holds other values than the dense cache
            times = []
            for s in args.splits:
                out = call(s)
                err = (out.float() - ref).abs().max().item()
                if err > 2e-2:
                    raise SystemExit(f"{point} {name} num_splits={s}: max |out - out(1 split)| = {err}")
                times.append(graph_timer(torch, timer, lambda: call(s)) * 1e3)
            print(f"{point:>10s} {name:>10s} " + " ".join(f"{t:7.1f}" for t in times))
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        for peer, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("fa2", SDPBackend.FLASH_ATTENTION)):
            with sdpa_kernel([backend]):
                fn = lambda: F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True)  # noqa: E731
                fn()
                t = graph_timer(torch, timer, fn) * 1e3
            print(f"{point:>10s} {peer:>10s} {t:7.1f}")
        q = k = v = kp = vp = table = qt = kt = vt = None
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
