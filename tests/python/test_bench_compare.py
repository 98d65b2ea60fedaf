"""bench/compare.py: the A/B of two result files pairs points by configuration and page size, and reports
baseline ms / candidate ms per implementation (torch-free, runs everywhere)."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import common as C  # noqa: E402
import compare  # noqa: E402

CFG = dict(dtype="bf16", headdim=128, seqlen_q=1, seqlen_k=2048, nheads=32, nheads_k=8)


def rec(impl, batch, ms, page=None, graph=True):
    return C.make_record(dict(CFG, batch=batch), "decode", impl, ms, page_size=page, graph=graph)


def test_pairs_by_configuration_page_and_timing():
    base = [rec("flashattn", 1, 0.015, page=16), rec("flashattn", 1, 0.014), rec("cudnn", 1, 0.013),
            rec("flashattn", 1, 0.030, page=16, graph=False), rec("flashattn", 8, 0.034, page=16)]
    cand = [rec("flashattn", 1, 0.012, page=16), rec("flashattn", 1, 0.014), rec("cudnn", 1, 0.013),
            rec("flashattn", 1, 0.020, page=16, graph=False), rec("flashattn", 32, 0.1, page=16)]
    lines, geo = compare.compare(base, cand)
    assert len(lines) == 4  # b32 has no baseline point, b8 no candidate point
    assert geo["flashattn-paged16 graph"] == pytest.approx(0.015 / 0.012)
    assert geo["flashattn-paged16 eager"] == pytest.approx(0.030 / 0.020)
    assert geo["flashattn graph"] == pytest.approx(1.0)
    assert geo["cudnn graph"] == pytest.approx(1.0)
    lines, geo = compare.compare(base, cand, impls={"cudnn"}, graph_only=True)
    assert list(geo) == ["cudnn graph"] and len(lines) == 1


def test_main_reads_files_and_fails_without_common_points(tmp_path, capsys):
    def write(name, records):
        path = tmp_path / name
        path.write_text(json.dumps({"gpu": "test", "commit": name, "date": "2026-12-08", "records": records}))
        return str(path)

    a = write("a.json", [rec("flashattn", 1, 0.020, page=16)])
    b = write("b.json", [rec("flashattn", 1, 0.010, page=16)])
    assert compare.main([a, b]) == 0
    out = capsys.readouterr().out
    assert "flashattn-paged16 graph" in out and "2.000x" in out
    c = write("c.json", [rec("flashattn", 8, 0.010, page=16)])
    assert compare.main([a, c]) == 1
