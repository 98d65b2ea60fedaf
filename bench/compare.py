#!/usr/bin/env python3
"""A/B of two result files of one suite: every implementation's time per point, candidate over baseline.

  python bench/compare.py BASELINE.json CANDIDATE.json [--impls flashattn] [--graph-only]

Meant for a kernel change timed as two runs of the same suite (tools/device_check.sh SUITE_BASELINE=...):
the candidate library's run and the baseline library's. flashattn's rows show what the change did; the
peers ran the same code in both runs, so their rows show how far the machine drifted between the runs, and
a flashattn move smaller than that drift is noise. Records pair up by configuration (common.config_key)
plus page size. Prints one line per point and a geomean per (implementation, page size, timing)."""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def record_key(rec):
    return (rec["impl"], rec.get("page_size")) + C.config_key(rec)


def pair_records(base, cand):
    """[(baseline record, candidate record)] for every point both files hold, in the candidate's order."""
    by_key = {record_key(r): r for r in base if r.get("ms")}
    return [(by_key[record_key(r)], r) for r in cand if r.get("ms") and record_key(r) in by_key]


def group_name(rec):
    name = rec["impl"] + (f"-paged{rec['page_size']}" if rec.get("page_size") else "")
    return name + (" graph" if rec.get("graph") else (" eager" if "graph" in rec else ""))


def compare(base, cand, impls=None, graph_only=False):
    """(lines, {group: geomean speedup}); speedup = baseline ms / candidate ms (> 1: the candidate is faster)."""
    lines, groups = [], {}
    for b, c in pair_records(base, cand):
        if impls and c["impl"] not in impls:
            continue
        if graph_only and not c.get("graph"):
            continue
        speedup = b["ms"] / c["ms"]
        groups.setdefault(group_name(c), []).append(speedup)
        lines.append(f"{group_name(c):<26} {C.describe(c):<44} {b['ms'] * 1e3:10.2f} us {c['ms'] * 1e3:10.2f} us "
                     f"{speedup:7.3f}x")
    return lines, {g: C.geomean(v) for g, v in groups.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("baseline")
    ap.add_argument("candidate")
    ap.add_argument("--impls", default=None, help="comma-separated implementations (default: all)")
    ap.add_argument("--graph-only", action="store_true", help="only CUDA-graph replay records")
    args = ap.parse_args(argv)
    base, cand = C.load_results(args.baseline), C.load_results(args.candidate)
    impls = set(args.impls.split(",")) if args.impls else None
    lines, geo = compare(base["records"], cand["records"], impls, args.graph_only)
    if not lines:
        print("compare: the two files share no point", file=sys.stderr)
        return 1
    # The tree's commit names the source, not the library a run loaded: the paths tell the two runs apart.
    for label, path, doc in (("baseline ", args.baseline, base), ("candidate", args.candidate, cand)):
        print(f"{label} {path} ({doc.get('gpu')}, {doc.get('date')}, tree {str(doc.get('commit'))[:12]})")
    print(f"{'implementation':<26} {'point':<44} {'baseline':>13} {'candidate':>13} {'speedup':>8}")
    print("\n".join(lines))
    print("geomean speedup (baseline ms / candidate ms; the peers' rows are the drift between the runs):")
    for g in sorted(geo):
        print(f"  {g:<26} {geo[g]:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
