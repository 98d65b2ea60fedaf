#!/usr/bin/env python3
"""GPU time of every kernel of one flashattn call and of the same call through torch SDPA FLASH (FA2),
measured with ncu (gpu__time_duration), so a gap can be traced to the kernel that holds it (a backward
is preprocess + main + dQ convert on both sides). Run on the GPU host by tools/device_check.sh (step
breakdown).

Usage: kernel_breakdown.py FLASHATTN_BENCH OP B S H D CAUSAL   (OP fwd or bwd, CAUSAL 0/1, bf16)
"""
import csv
import io
import subprocess
import sys


def kernel_times(cmd):
    """(kernel name, grid, microseconds) for every kernel ncu saw while cmd ran."""
    r = subprocess.run(["ncu", "--clock-control", "none", "--csv", "--metrics", "gpu__time_duration.sum"] + cmd,
                       capture_output=True, text=True)
    rows = [line for line in r.stdout.splitlines() if line.startswith('"')]
    out = []
    for x in csv.DictReader(io.StringIO("\n".join(rows))):
        scale = {"ns": 1e-3, "nsecond": 1e-3, "ms": 1e3, "msecond": 1e3}.get(x["Metric Unit"], 1.0)  # else us
        out.append((x["Kernel Name"], x["Grid Size"], float(x["Metric Value"].replace(",", "")) * scale))
    if not out:
        sys.stderr.write(r.stdout[-2000:] + r.stderr[-2000:])
    return out


def main():
    exe, op, b, s, h, d, causal = sys.argv[1:8]
    ours = [exe, "--device", "cuda", "--op", op, "--no-math", "--no-check", "--iters", "1", "--warmup", "0",
            "--dtype", "bf16", "--batch", b, "--seqlen", s, "--heads", h, "--headdim", d,
            "--causal" if causal == "1" else "--no-causal"]
    backward = "o.backward(torch.randn_like(o)); torch.cuda.synchronize()" if op == "bwd" else ""
    fa2 = ["python3", "-c", f"""
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
q, k, v = (torch.randn({b}, {h}, {s}, {d}, device='cuda', dtype=torch.bfloat16, requires_grad={op == 'bwd'})
           for _ in range(3))
with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
    o = F.scaled_dot_product_attention(q, k, v, is_causal={causal == '1'})
torch.cuda.synchronize()
{backward}
"""]
    runs = (("flashattn (every call the CLI makes)", ours), ("fa2 (input set-up kernels included)", fa2))
    for name, cmd in runs:
        print(f"=== {name}: {op} b{b} s{s} h{h} d{d} causal {causal}")
        for kernel, grid, us in kernel_times(cmd):
            print(f"  {kernel[:72]:72s} {grid:>14s} {us:9.1f} us")


if __name__ == "__main__":
    main()
