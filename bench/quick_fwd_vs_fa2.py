#!/usr/bin/env python3
"""Quick forward timing of flashattn's sm80 path against torch SDPA FLASH (FlashAttention-2) in one process.

Standard grid subset (performance.md): bf16, hidden 2048 (nheads = 2048 / d), batch = 16k / seqlen,
d in {64, 128, 256} x causal x seqlen in {1k, 4k, 16k}. Median of CUDA-event-timed runs after warm-up;
FLOPs = 4 * b * s^2 * h * d, halved when causal. The full benchmark is bench/bench.py; this is the kernel
engineer's quick check, calling libflashattn through ctypes on torch tensors' data pointers.
"""
import argparse
import ctypes
import math
import statistics

import torch

MAX_NDIM = 6


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int32), ("device_type", ctypes.c_int32),
                ("device_id", ctypes.c_int32), ("ndim", ctypes.c_int32),
                ("shape", ctypes.c_int64 * MAX_NDIM), ("strides", ctypes.c_int64 * MAX_NDIM)]


class Options(ctypes.Structure):
    _fields_ = [("softmax_scale", ctypes.c_float), ("causal", ctypes.c_int32), ("window_left", ctypes.c_int32),
                ("window_right", ctypes.c_int32), ("softcap", ctypes.c_float), ("alibi_slopes", Tensor),
                ("sinks", Tensor), ("dropout_p", ctypes.c_float), ("dropout_seed", ctypes.c_uint64),
                ("dropout_offset", ctypes.c_uint64), ("dropout_rng_state", Tensor),
                ("deterministic", ctypes.c_int32), ("num_splits", ctypes.c_int32),
                ("batch_invariant", ctypes.c_int32), ("check_metadata", ctypes.c_int32)]


class FwdArgs(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint64), ("q", Tensor), ("k", Tensor), ("v", Tensor), ("out", Tensor),
                ("lse", Tensor), ("cu_seqlens_q", Tensor), ("cu_seqlens_k", Tensor), ("seqused_k", Tensor),
                ("block_table", Tensor), ("max_seqlen_q", ctypes.c_int64), ("max_seqlen_k", ctypes.c_int64),
                ("opt", Options)]


class PlanInfo(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint64), ("path", ctypes.c_int32), ("block_m", ctypes.c_int32),
                ("block_n", ctypes.c_int32), ("num_warps", ctypes.c_int32), ("head_dim_rounded", ctypes.c_int32),
                ("num_splits", ctypes.c_int32), ("workspace_bytes", ctypes.c_uint64), ("kernel", ctypes.c_char * 128)]


DTYPES = {torch.float16: 2, torch.bfloat16: 3, torch.float32: 1}


def desc(t):
    d = Tensor()
    d.data = t.data_ptr()
    d.dtype = DTYPES[t.dtype]
    d.device_type = 2
    d.device_id = t.device.index or 0
    d.ndim = t.dim()
    for i in range(t.dim()):
        d.shape[i] = t.shape[i]
        d.strides[i] = t.stride(i)
    return d


def time_ms(fn, iters):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--dims", default="64,128,256")
    ap.add_argument("--seqlens", default="1024,4096,16384")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--dtype", default="bf16")
    args = ap.parse_args()
    lib = ctypes.CDLL(args.lib)
    lib.flashattn_fwd.restype = ctypes.c_int
    lib.flashattn_fwd_plan.restype = ctypes.c_int
    lib.flashattn_last_error.restype = ctypes.c_char_p
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    from torch.nn.attention import SDPBackend, sdpa_kernel

    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}  dtype {args.dtype}")
    print(f"{'d':>4} {'causal':>6} {'seqlen':>6} {'batch':>5} {'heads':>5} {'fa2 ms':>8} {'ours ms':>8} "
          f"{'fa2 TF/s':>8} {'ours TF/s':>9} {'ratio':>6}  kernel tile")
    ratios = []
    for d in [int(x) for x in args.dims.split(",")]:
        for causal in (False, True):
            for s in [int(x) for x in args.seqlens.split(",")]:
                b, h = max(1, 16384 // s), 2048 // d
                q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=dtype) for _ in range(3))
                out = torch.empty_like(q)
                lse = torch.empty(b, h, s, device="cuda", dtype=torch.float32)
                fa = FwdArgs()
                lib.flashattn_fwd_args_init(ctypes.byref(fa))
                fa.q, fa.k, fa.v, fa.out, fa.lse = desc(q), desc(k), desc(v), desc(out), desc(lse)
                fa.opt.causal = int(causal)
                plan = PlanInfo()
                plan.struct_size = ctypes.sizeof(PlanInfo)
                if lib.flashattn_fwd_plan(ctypes.byref(fa), ctypes.byref(plan)) != 0:
                    print("plan failed:", lib.flashattn_last_error().decode())
                    continue
                stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

                def ours():
                    st = lib.flashattn_fwd(ctypes.byref(fa), None, ctypes.c_size_t(0), stream)
                    if st != 0:
                        raise RuntimeError(lib.flashattn_last_error().decode())

                qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))

                def fa2():
                    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                        return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)

                ref = fa2().transpose(1, 2)
                ours()
                torch.cuda.synchronize()
                err = (out.float() - ref.float()).abs().max().item()
                t_fa2 = time_ms(fa2, args.iters)
                t_ours = time_ms(ours, args.iters)
                flops = 4 * b * s * s * h * d / (2 if causal else 1)
                r = t_fa2 / t_ours
                ratios.append(r)
                print(f"{d:4d} {int(causal):6d} {s:6d} {b:5d} {h:5d} {t_fa2:8.3f} {t_ours:8.3f} "
                      f"{flops / t_fa2 / 1e9:8.1f} {flops / t_ours / 1e9:9.1f} {r:6.3f}  "
                      f"{plan.kernel.decode()} {plan.block_m}x{plan.block_n}/{plan.num_warps}w  maxdiff {err:.2e}")
                del q, k, v, out, lse
    if ratios:
        gm = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(f"geomean ratio (FA2 time / ours) {gm:.3f}, worst {min(ratios):.3f}, best {max(ratios):.3f}")


if __name__ == "__main__":
    main()
