#!/usr/bin/env python3
"""Host overhead of one flashattn forward call vs torch SDPA, measured in the same process.

A small problem makes the kernel cheap, so the time per call is the host path (Python wrapper, torch
dispatcher/custom op, ctypes, descriptor packing, workspace allocation, launch). Per variant:
  host_us   CPU-side timer: wall time of N back-to-back calls divided by N, no synchronisation inside the
            loop (what the calling thread pays per call)
  gpu_us    CUDA events around the same N launches divided by N (when the host is the bottleneck this is
            ~host_us; when it is smaller the GPU was idle waiting for the host)
Variants: flash_attn_func (public API, custom op), functional.forward (binding without the torch dispatcher),
torch SDPA (default backend choice) on the same tensors in (b, h, s, d) layout.

  python bench/host_overhead.py [--device cuda|cpu] [--iters 2000] [--shape 1,128,8,64] [--json out.json]
"""

import argparse
import json
import platform
import time


def parse_shape(s):
    b, sq, h, d = (int(x) for x in s.split(","))
    return b, sq, h, d


def timed(fn, iters, cuda, torch):
    for _ in range(max(10, iters // 10)):  # warm-up: allocator pools, lazy init, caches
        fn()
    if cuda:
        torch.cuda.synchronize()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    host = (time.perf_counter() - t0) / iters
    gpu = None
    if cuda:
        stop.record()
        torch.cuda.synchronize()
        gpu = start.elapsed_time(stop) * 1e3 / iters  # ms -> us
    return host * 1e6, gpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--shape", default="1,128,8,64", help="batch,seqlen,heads,headdim")
    ap.add_argument("--dtype", default=None, help="fp16|bf16|fp32 (default fp16 on cuda, fp32 on cpu)")
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as tF

    import flashattn
    from flashattn import functional as F

    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = dev.startswith("cuda")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[
        args.dtype or ("fp16" if cuda else "fp32")]
    b, s, h, d = parse_shape(args.shape)
    q, k, v = (torch.randn(b, s, h, d, device=dev, dtype=dtype) for _ in range(3))
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # SDPA layout (b, h, s, d), same storage
    scale = d ** -0.5

    variants = {
        "flashattn.flash_attn_func": lambda: flashattn.flash_attn_func(q, k, v, causal=args.causal),
        "flashattn.functional.forward": lambda: F.forward(q, k, v, softmax_scale=scale, causal=args.causal),
        "torch.sdpa": lambda: tF.scaled_dot_product_attention(qt, kt, vt, is_causal=args.causal),
    }
    results = []
    with torch.inference_mode():
        # the same numbers from both libraries before timing anything
        ref = tF.scaled_dot_product_attention(qt, kt, vt, is_causal=args.causal).transpose(1, 2)
        got = flashattn.flash_attn_func(q, k, v, causal=args.causal)
        err = (got.float() - ref.float()).abs().max().item()
        for name, fn in variants.items():
            host, gpu = timed(fn, args.iters, cuda, torch)
            results.append({"variant": name, "host_us": round(host, 2),
                            "gpu_us": None if gpu is None else round(gpu, 2)})
    meta = {"device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
            "torch": torch.__version__, "shape_bshd": [b, s, h, d], "dtype": str(dtype).replace("torch.", ""),
            "causal": args.causal, "iters": args.iters, "max_abs_diff_vs_sdpa": err,
            "library": flashattn.build_info()["path"]}
    print(json.dumps(meta))
    w = max(len(r["variant"]) for r in results)
    print("%-*s  %10s  %10s" % (w, "variant", "host_us", "gpu_us"))
    for r in results:
        print("%-*s  %10.2f  %10s" % (w, r["variant"], r["host_us"], "-" if r["gpu_us"] is None else
                                      "%.2f" % r["gpu_us"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
