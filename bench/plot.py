#!/usr/bin/env python3
"""PNG plots from bench result files (bench/results/*.json), written next to each JSON file.

  <stem>-<op>-<dtype>.png          TFLOP/s per seqlen, one panel per head dim x causal, grouped bars per impl
  <stem>-<op>-<dtype>-other.png    the "other shapes" row (varlen, GQA, window, softcap, ALiBi) at d128 8k
  <stem>-memory-<dtype>.png        peak memory per seqlen against standard attention (log scale)
  <stem>-decode-<dtype>-<timing>.png   decode K+V read bandwidth per batch, with the measured read ceiling
  <stem>-cpu.png                   CPU suite, GFLOP/s

Usage: python bench/plot.py [FILE.json ...]   (default: every JSON file in bench/results/)
"""

import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

# Fixed order and colours, so every figure reads the same way.
IMPL_ORDER = ["flashattn", "flashattn-paged", "flashattn_64row", "fa2", "cudnn", "efficient", "flex",
              "math", "torch_cpu", "read"]
COLORS = {"flashattn": "#7b2cbf", "flashattn-paged": "#c77dff", "flashattn_64row": "#e0aaff",
          "fa2": "#2a9d8f", "cudnn": "#76b900", "efficient": "#e9c46a",
          "flex": "#f4a261", "math": "#8d99ae", "torch_cpu": "#ee6c4d", "read": "#d9d9d9"}
OP_TITLE = {"fwd": "forward", "bwd": "backward", "fwd_bwd": "forward + backward"}


def plt_module():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def seqlen_label(s):
    return f"{s // 1024}k" if s >= 1024 and s % 1024 == 0 else str(s)


def grouped_bars(ax, groups, impls, value, label_fmt="{:.0f}", ylabel=None, log=False):
    """groups: list of (x label, {impl: record}); one bar per impl present anywhere, value(rec) its height."""
    present = [i for i in impls if any(i in g for _, g in groups)]
    if not present:
        return False
    width = 0.8 / len(present)
    top = 0.0
    for n, impl in enumerate(present):
        xs, ys = [], []
        for gi, (_, g) in enumerate(groups):
            if impl in g and value(g[impl]) is not None:
                xs.append(gi - 0.4 + width * (n + 0.5))
                ys.append(value(g[impl]))
        bars = ax.bar(xs, ys, width, label=impl, color=COLORS.get(impl))
        top = max([top] + ys)
        if label_fmt and len(groups) * len(present) <= 40:
            ax.bar_label(bars, labels=[label_fmt.format(y) for y in ys], fontsize=6, rotation=90, padding=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([x for x, _ in groups])
    if log:
        ax.set_yscale("log")
        if top > 0:
            ax.set_ylim(top=top * 4)  # room for the rotated value labels
    else:
        ax.margins(y=0.18)
    if ylabel:
        ax.set_ylabel(ylabel)
    return True


def add_header(fig, handles, labels, title):
    height = fig.get_size_inches()[1]
    fig.suptitle(title, y=1 - 0.1 / height)
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.4 / height))


def is_grid(r):
    return (r.get("variant", "plain") == "plain" and r["seqlen_q"] == r["seqlen_k"]
            and r["batch"] * r["seqlen_q"] == C.TOKENS and r["nheads"] == C.HIDDEN // r["headdim"]
            and r["nheads"] == r["nheads_k"] and not r.get("window") and not r.get("softcap")
            and not r.get("alibi"))


def save(fig, path, written, header=False):
    """header: a title and a legend sit above the panels; keep 0.8 inch of the figure for them."""
    top = 1 - 0.8 / fig.get_size_inches()[1] if header else 1
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=120)
    written.append(path)


def plot_compute(plt, doc, stem, written):
    recs = [r for r in doc["records"] if r["op"] in OP_TITLE and r.get("tflops")]
    for op in [o for o in OP_TITLE if any(r["op"] == o for r in recs)]:
        for dtype in sorted({r["dtype"] for r in recs if r["op"] == op}):
            sub = [r for r in recs if r["op"] == op and r["dtype"] == dtype]
            grid = [r for r in sub if is_grid(r)]
            dims = sorted({r["headdim"] for r in grid})
            if dims:
                fig, axes = plt.subplots(len(dims), 2, figsize=(13, 3.6 * len(dims)), squeeze=False)
                for row, d in enumerate(dims):
                    for col, causal in enumerate((False, True)):
                        ax = axes[row][col]
                        pts = [r for r in grid if r["headdim"] == d and r["causal"] == causal]
                        seqlens = sorted({r["seqlen_q"] for r in pts})
                        groups = [(seqlen_label(s), {r["impl"]: r for r in pts if r["seqlen_q"] == s}) for s in seqlens]
                        grouped_bars(ax, groups, IMPL_ORDER, lambda r: r["tflops"], ylabel="TFLOP/s")
                        ax.set_title(f"head dim {d}, {'causal' if causal else 'non-causal'}", fontsize=10)
                        ax.set_xlabel("sequence length (batch x seqlen = 16k, nheads = 2048 // d)")
                handles, labels = axes[0][0].get_legend_handles_labels()
                add_header(fig, handles, labels, f"{OP_TITLE[op]} speed, {dtype} - {doc.get('gpu', '')}")
                save(fig, f"{stem}-{op}-{dtype}.png", written, header=True)
                plt.close(fig)
            other = [r for r in sub if r["headdim"] == 128 and r["seqlen_q"] == 8192 and r["causal"]]
            variants = [v for v in ("plain", "varlen", "gqa", "window", "softcap", "alibi")
                        if any(r.get("variant", "plain") == v for r in other)]
            if len(variants) > 1:
                fig, ax = plt.subplots(figsize=(11, 4))
                groups = [(v, {r["impl"]: r for r in other if r.get("variant", "plain") == v}) for v in variants]
                if grouped_bars(ax, groups, IMPL_ORDER, lambda r: r["tflops"], ylabel="TFLOP/s"):
                    ax.legend(ncol=4, fontsize=8)
                    ax.set_title(f"{OP_TITLE[op]}, other shapes at d128 seqlen 8k causal, {dtype} - {doc.get('gpu', '')}",
                                 fontsize=10)
                    save(fig, f"{stem}-{op}-{dtype}-other.png", written)
                plt.close(fig)


def plot_memory(plt, doc, stem, written):
    recs = [r for r in doc["records"] if r.get("peak_mem_bytes") and r["op"] in OP_TITLE and is_grid(r)]
    if not recs:
        return
    # Prefer the training footprint (fwd+bwd) the memory target speaks of; a fwd-only file plots fwd.
    op = "fwd_bwd" if any(r["op"] == "fwd_bwd" for r in recs) else "fwd"
    for dtype in sorted({r["dtype"] for r in recs}):
        sub = [r for r in recs if r["op"] == op and r["dtype"] == dtype]
        d = 128 if any(r["headdim"] == 128 for r in sub) else sorted({r["headdim"] for r in sub})[0]
        fig, axes = plt.subplots(1, 2, figsize=(13, 4), squeeze=False)
        for col, causal in enumerate((False, True)):
            pts = [r for r in sub if r["headdim"] == d and r["causal"] == causal]
            seqlens = sorted({r["seqlen_q"] for r in pts})
            groups = [(seqlen_label(s), {r["impl"]: r for r in pts if r["seqlen_q"] == s}) for s in seqlens]
            ax = axes[0][col]
            grouped_bars(ax, groups, IMPL_ORDER, lambda r: r["peak_mem_bytes"] / 2 ** 20, label_fmt="{:.0f}",
                         ylabel="peak memory beyond inputs (MiB)", log=True)
            ax.set_title(f"d{d}, {'causal' if causal else 'non-causal'} ({OP_TITLE[op]}; math = standard attention)",
                         fontsize=10)
            ax.set_xlabel("sequence length (batch x seqlen = 16k)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        if handles:
            add_header(fig, handles, labels, f"peak memory, {dtype} - {doc.get('gpu', '')}")
            save(fig, f"{stem}-memory-{dtype}.png", written, header=True)
        plt.close(fig)


def plot_decode(plt, doc, stem, written):
    recs = [r for r in doc["records"] if r["op"] == "decode" and r.get("tbps")]
    if not recs:
        return
    ceiling = doc.get("read_ceiling_tbps")
    for r in recs:
        r["_impl"] = r["impl"] + ("-paged" if r["impl"] == "flashattn" and r.get("page_size") else "")
    for dtype in sorted({r["dtype"] for r in recs}):
        for graph in (False, True):
            sub = [r for r in recs if r["dtype"] == dtype and bool(r.get("graph")) == graph]
            if not sub:
                continue
            qlens, lens = sorted({r["seqlen_q"] for r in sub}), sorted({r["seqlen_k"] for r in sub})
            fig, axes = plt.subplots(len(qlens), len(lens), figsize=(5.5 * len(lens), 3.6 * len(qlens)),
                                     squeeze=False)
            for i, ql in enumerate(qlens):
                for j, L in enumerate(lens):
                    ax = axes[i][j]
                    pts = [r for r in sub if r["seqlen_q"] == ql and r["seqlen_k"] == L]
                    batches = sorted({r["batch"] for r in pts})
                    groups = [(f"B={b}", {r["_impl"]: r for r in pts if r["batch"] == b}) for b in batches]
                    grouped_bars(ax, groups, IMPL_ORDER, lambda r: r["tbps"], label_fmt="{:.2f}", ylabel="TB/s")
                    if ceiling:
                        ax.axhline(ceiling, color="black", linestyle="--", linewidth=1)
                        ax.text(len(groups) - 0.5, ceiling, f"read ceiling {ceiling:.2f}", ha="right", va="bottom",
                                fontsize=7)
                    ax.set_title(f"q len {ql}, L = {seqlen_label(L)}", fontsize=10)
            handles, labels = axes[0][0].get_legend_handles_labels()
            add_header(fig, handles, labels, f"decode K+V read bandwidth, 32/8 heads, d128, {dtype}, "
                       f"{'CUDA-graph replay' if graph else 'eager'} - {doc.get('gpu', '')}")
            save(fig, f"{stem}-decode-{dtype}-{'graph' if graph else 'eager'}.png", written, header=True)
            plt.close(fig)


def plot_cpu(plt, doc, stem, written):
    recs = [r for r in doc["records"] if r.get("tflops") and (r["impl"] == "torch_cpu" or r.get("path") == "cpu")]
    if not recs:
        return
    keys = []
    for r in recs:
        k = (r["op"], r["dtype"], r["headdim"], r["seqlen_q"], r["causal"])
        if k not in keys:
            keys.append(k)
    groups = [(f"{op} {dt}\nd{d} s{seqlen_label(s)}{' c' if c else ''}",
               {r["impl"]: r for r in recs if (r["op"], r["dtype"], r["headdim"], r["seqlen_q"], r["causal"]) == k})
              for k in keys for (op, dt, d, s, c) in [k]]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4))
    grouped_bars(ax, groups, IMPL_ORDER, lambda r: r["tflops"] * 1e3, label_fmt="{:.0f}", ylabel="GFLOP/s")
    threads = {r.get("threads") for r in recs}
    ax.legend(fontsize=8)
    ax.set_title(f"CPU attention, {doc.get('gpu', '')}, threads {','.join(str(t) for t in threads)}", fontsize=10)
    save(fig, f"{stem}-cpu.png", written)
    plt.close(fig)


def plot_file(path):
    plt = plt_module()
    doc = C.load_results(path)
    stem = os.path.splitext(path)[0]
    written = []
    plot_compute(plt, doc, stem, written)
    plot_memory(plt, doc, stem, written)
    plot_decode(plt, doc, stem, written)
    plot_cpu(plt, doc, stem, written)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="result files (default: bench/results/*.json)")
    args = ap.parse_args(argv)
    files = args.files or sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                        "*.json")))
    if not files:
        sys.exit("plot.py: no result files given or found in bench/results/")
    for f in files:
        for p in plot_file(f):
            print(f"wrote {p}")


if __name__ == "__main__":
    main()
