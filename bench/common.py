"""Torch-free helpers shared by bench.py and plot.py: FLOP/byte formulas, the benchmark grids, result-file
naming and I/O, and the ratio summary (geomean + worst point) used to judge the targets in
docs/performance.md."""

import datetime
import json
import math
import os
import re
import subprocess

# ---- Formulas ------------------------------------------------------------------------------------------


def visible_pairs(seqlen_q, seqlen_k, causal, window):
    """(i, j) pairs a row-major mask lets through, bottom-right aligned (FA2's rule)."""
    left, right = window if window else (-1, -1)
    if causal:
        right = 0
    total = 0
    for i in range(seqlen_q):
        diag = i + seqlen_k - seqlen_q
        lo = max(0, diag - left) if left >= 0 else 0
        hi = min(seqlen_k - 1, diag + right) if right >= 0 else seqlen_k - 1
        total += max(0, hi - lo + 1)
    return total


def has_window(causal, window):
    if not window:
        return False
    left, right = window
    return left >= 0 or (not causal and right >= 0)


def fwd_flops(batch, seqlen_q, seqlen_k, nheads, headdim, causal=False, window=None):
    """The FlashAttention convention: 4 * b * sq * sk * h * d, halved when causal. A sliding window has no
    convention there; counting visible pairs exactly keeps windowed runs comparable (the CLI does the same)."""
    if has_window(causal, window):
        return 4.0 * batch * nheads * headdim * visible_pairs(seqlen_q, seqlen_k, causal, window)
    full = 4.0 * batch * seqlen_q * seqlen_k * nheads * headdim
    return full / 2 if causal else full


OP_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd_bwd": 3.5}


def op_flops(op, *args, **kw):
    return OP_FACTOR[op] * fwd_flops(*args, **kw)


def kv_bytes(batch, seqlen_k, nheads_k, headdim, elem_bytes):
    """Bytes of K and V a decode step reads (the decode bandwidth numerator)."""
    return 2 * batch * seqlen_k * nheads_k * headdim * elem_bytes


def decode_inputs(torch, b, sq, L, h, hk, d, dt, page):
    """One decode problem: q (b, sq, h, d); dense K/V (b, L, hk, d); a paged pool of the same size with
    shuffled pages, as a serving engine's allocator leaves them; cache_seqlens = L; the block table. The dense
    K and V are the two halves of one buffer, so one pass over k.data_ptr()'s storage reads exactly the step's
    K+V bytes (bench.py's same-bytes read)."""
    q = torch.randn(b, sq, h, d, dtype=dt, device="cuda")
    k, v = torch.randn(2, b, L, hk, d, dtype=dt, device="cuda").unbind(0)
    seqlens = torch.full((b,), L, dtype=torch.int32, device="cuda")
    npages = b * L // page
    kp = torch.randn(npages, page, hk, d, dtype=dt, device="cuda")
    vp = torch.randn(npages, page, hk, d, dtype=dt, device="cuda")
    table = torch.randperm(npages, device="cuda").to(torch.int32).view(b, L // page)
    return q, k, v, seqlens, kp, vp, table


# ---- Grids (docs/performance.md) ---------------------------------------------------------------------------

HIDDEN = 2048
TOKENS = 16384
SEQLENS = [512, 1024, 2048, 4096, 8192, 16384]
HEADDIMS = [64, 128, 256]


def standard_grid(dtypes, quick=False, headdims=None):
    """bf16/fp16 x d 64/128/256 x seqlen 512..16k (batch = 16k / seqlen, nheads = 2048 / d) x causal.
    headdims replaces the head dims (nheads = 2048 // d: 12 at d160, 10 at d192)."""
    seqlens = [1024, 4096] if quick else SEQLENS
    headdims = headdims or ([128] if quick else HEADDIMS)
    for dtype in dtypes:
        for d in headdims:
            for s in seqlens:
                for causal in (False, True):
                    yield dict(variant="plain", dtype=dtype, headdim=d, batch=TOKENS // s, seqlen_q=s, seqlen_k=s,
                               nheads=HIDDEN // d, nheads_k=HIDDEN // d, causal=causal, window=None, softcap=0.0,
                               alibi=False)


# Variable lengths of the varlen case: 16k tokens in sequences of mixed length (a packed training batch).
VARLEN_SEQLENS = [8192, 3072, 2048, 1536, 1024, 512]


def other_shapes(dtypes, quick=False):
    """The "other shapes" row at d128 8k: varlen, GQA 32/8, window 1024, softcap, ALiBi (and the plain kernel
    at the same point, which the targets compare to)."""
    s, d = 8192, 128
    base = dict(dtype=None, headdim=d, batch=TOKENS // s, seqlen_q=s, seqlen_k=s, nheads=HIDDEN // d,
                nheads_k=HIDDEN // d, causal=True, window=None, softcap=0.0, alibi=False)
    cases = [
        dict(variant="plain"),
        dict(variant="varlen", seqlens=VARLEN_SEQLENS, batch=len(VARLEN_SEQLENS),
             seqlen_q=max(VARLEN_SEQLENS), seqlen_k=max(VARLEN_SEQLENS)),
        dict(variant="gqa", nheads=32, nheads_k=8),
        dict(variant="window", window=[1024, 0]),
        dict(variant="softcap", softcap=50.0),
        dict(variant="alibi", alibi=True),
    ]
    if quick:
        cases = [c for c in cases if c["variant"] in ("plain", "gqa", "window")]
    for dtype in dtypes[:1] if quick else dtypes:
        for c in cases:
            yield dict(base, **c, dtype=dtype)


def config_flops(cfg, op):
    """FLOPs of a config; varlen sums its sequences."""
    if cfg.get("seqlens"):
        return sum(op_flops(op, 1, s, s, cfg["nheads"], cfg["headdim"], cfg["causal"], cfg.get("window"))
                   for s in cfg["seqlens"])
    return op_flops(op, cfg["batch"], cfg["seqlen_q"], cfg["seqlen_k"], cfg["nheads"], cfg["headdim"],
                    cfg["causal"], cfg.get("window"))


def decode_grid(dtype, quick=False):
    """q len 1 and 4, B in {1,8,32,64,128}, L in {2k,8k,32k}, 32 q / 8 kv heads, d 128."""
    qlens = [1] if quick else [1, 4]
    batches = [1, 32] if quick else [1, 8, 32, 64, 128]
    lens = [8192] if quick else [2048, 8192, 32768]
    for q in qlens:
        for b in batches:
            for L in lens:
                yield dict(dtype=dtype, headdim=128, batch=b, seqlen_q=q, seqlen_k=L, nheads=32, nheads_k=8)


def cpu_grid(dtypes, quick=False):
    """CPU suite: the performance.md anchor (d128 s2k, non-causal) and neighbours; batch 1, hidden 2048."""
    points = [(64, 512, False)] if quick else [(128, 2048, False), (128, 2048, True), (64, 1024, False),
                                               (128, 4096, True)]
    for dtype in dtypes:
        for d, s, causal in points:
            yield dict(variant="plain", dtype=dtype, headdim=d, batch=1, seqlen_q=s, seqlen_k=s,
                       nheads=HIDDEN // d if not quick else 8, nheads_k=HIDDEN // d if not quick else 8,
                       causal=causal, window=None, softcap=0.0, alibi=False)


# ---- Result files -------------------------------------------------------------------------------------------


def machine_tag(name):
    """'NVIDIA H200' -> 'nvidia-h200'; any run of non-alphanumerics becomes one dash."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("FLASHATTN_COMMIT", "unknown")


def result_path(out_dir, machine, suite, when=None):
    when = when or datetime.date.today()
    return os.path.join(out_dir, f"{machine_tag(machine)}-{when.strftime('%Y%m%d')}-{suite}.json")


# Every record carries these (docs/performance.md); extra fields (variant, seqlens, graph, ...) are allowed.
RECORD_FIELDS = ["op", "impl", "path", "dtype", "headdim", "causal", "window", "softcap", "alibi", "batch",
                 "seqlen_q", "seqlen_k", "nheads", "nheads_k", "dropout_p", "page_size", "ms"]


def make_record(cfg, op, impl, ms, path=None, page_size=None, **extra):
    rec = dict(op=op, impl=impl, path=path, dtype=cfg["dtype"], headdim=cfg["headdim"],
               causal=bool(cfg.get("causal", False)), window=cfg.get("window"), softcap=cfg.get("softcap", 0.0),
               alibi=bool(cfg.get("alibi", False)), batch=cfg["batch"], seqlen_q=cfg["seqlen_q"],
               seqlen_k=cfg["seqlen_k"], nheads=cfg["nheads"], nheads_k=cfg["nheads_k"], dropout_p=0.0,
               page_size=page_size, ms=ms)
    if cfg.get("variant"):
        rec["variant"] = cfg["variant"]
    if cfg.get("seqlens"):
        rec["seqlens"] = list(cfg["seqlens"])
    rec.update(extra)
    return rec


def write_results(path, machine, records, read_ceiling_tbps=None, matmul_tflops=None, **extra):
    doc = {"gpu": machine, "commit": git_commit(), "date": datetime.date.today().isoformat(),
           "read_ceiling_tbps": read_ceiling_tbps, "matmul_tflops": matmul_tflops}
    doc.update(extra)
    doc["records"] = records
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return path


def load_results(path):
    with open(path) as f:
        return json.load(f)


# ---- Ratios --------------------------------------------------------------------------------------------------

# Fields that identify a configuration; impl/path/page_size/ms and the metrics do not.
KEY_FIELDS = ["op", "dtype", "headdim", "causal", "window", "softcap", "alibi", "batch", "seqlen_q", "seqlen_k",
              "nheads", "nheads_k", "dropout_p", "variant", "graph"]


def config_key(rec):
    return tuple(json.dumps(rec.get(f), sort_keys=True) for f in KEY_FIELDS)


def metric(rec):
    """Higher is better: TFLOP/s for compute suites, TB/s for decode."""
    for m in ("tflops", "tbps"):
        if rec.get(m):
            return rec[m]
    return None


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def describe(rec):
    parts = [rec["op"], rec["dtype"], f"d{rec['headdim']}", f"b{rec['batch']}", f"sq{rec['seqlen_q']}"]
    if rec["seqlen_k"] != rec["seqlen_q"]:
        parts.append(f"sk{rec['seqlen_k']}")
    if rec["nheads_k"] != rec["nheads"]:
        parts.append(f"h{rec['nheads']}/{rec['nheads_k']}")
    if rec.get("causal"):
        parts.append("causal")
    if rec.get("variant") not in (None, "plain"):
        parts.append(rec["variant"])
    if rec.get("graph"):
        parts.append("graph")
    return " ".join(parts)


def ratios(records, peer, ours="flashattn", ours_filter=None):
    """[(ratio, our record, peer record)] for every configuration both ran; ratio = ours / peer (> 1: ours
    faster). ours_filter picks among several records of ours per configuration (e.g. paged decode)."""
    peers = {config_key(r): r for r in records if r["impl"] == peer and metric(r)}
    out = []
    for r in records:
        if r["impl"] != ours or not metric(r) or (ours_filter and not ours_filter(r)):
            continue
        p = peers.get(config_key(r))
        if p:
            out.append((metric(r) / metric(p), r, p))
    return out


def summary_lines(records, peers, ours_filter=None, worst_allowance=0.03):
    """One line per peer: points, geomean, worst point (docs/performance.md: judged on both, the worst point
    with a 3% allowance for noise)."""
    lines = []
    for peer in peers:
        rs = ratios(records, peer, ours_filter=ours_filter)
        if not rs:
            continue
        g = geomean([x for x, _, _ in rs])
        worst = min(rs, key=lambda t: t[0])
        lines.append(f"flashattn/{peer:<10} n={len(rs):<4} geomean {g:6.3f}x   worst {worst[0]:6.3f}x "
                     f"({describe(worst[1])})")
    return lines


def variant_ratio_lines(records):
    """flashattn's other-shapes records over its plain point of the same dtype and op (docs/performance.md:
    within 10% of the plain kernel's TFLOP/s)."""
    ours = [r for r in records if r["impl"] == "flashattn" and r.get("tflops")]
    lines = []
    for r in ours:
        if r.get("variant") in (None, "plain"):
            continue
        plain = [p for p in ours if p.get("variant") == "plain" and p["dtype"] == r["dtype"] and p["op"] == r["op"]
                 and p["headdim"] == r["headdim"] and p["seqlen_q"] == r["seqlen_q"] and p["causal"] == r["causal"]
                 and p["nheads"] == HIDDEN // p["headdim"]]
        if plain:
            lines.append(f"  {r['op']} {r['dtype']} {r['variant']:<8} {r['tflops'] / plain[0]['tflops']:.3f}"
                         f" ({r['tflops']:.1f} / {plain[0]['tflops']:.1f} TFLOP/s)")
    return lines


def format_table(records, peers, ours_filter=None, unit="TFLOP/s", scale=1.0):
    """Per-configuration rows: our metric, each peer's, and ours/peer for the peers that ran it."""
    rows = [r for r in records if r["impl"] == "flashattn" and metric(r) and (not ours_filter or ours_filter(r))]
    by_key = {}
    for r in records:
        if metric(r):
            by_key.setdefault(config_key(r), {})[r["impl"]] = r
    head = f"{'configuration':<44} {'flashattn':>10}" + "".join(f" {p:>10} {'ratio':>6}" for p in peers)
    lines = [f"[{unit}]", head, "-" * len(head)]
    for r in rows:
        line = f"{describe(r):<44} {metric(r) * scale:>10.3f}"
        for p in peers:
            pr = by_key.get(config_key(r), {}).get(p)
            line += f" {metric(pr) * scale:>10.3f} {metric(r) / metric(pr):>5.2f}x" if pr else f" {'-':>10} {'':>6}"
        lines.append(line)
    return lines
