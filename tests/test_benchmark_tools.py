"""The arithmetic of the benchmark scripts: FLOP counts, the peak, the start-up split."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import bench_startup  # noqa: E402
import profile_ops  # noqa: E402


def test_conv_gflop_counts_the_issue_figure():
    # 378 GFLOP for a 513x513 image is the figure the issue quotes for ResNet-101.
    assert profile_ops.conv_gflop("resnet101", 21, 513) == pytest.approx(377.8, abs=0.1)
    forward = profile_ops.conv_gflop("resnet101", 21, 321, batch=2)
    update = profile_ops.conv_gflop("resnet101", 21, 321, batch=2, training=True)
    assert 2.9 * forward < update < 3 * forward  # no input gradient for conv1


def test_peak_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("cpu MHz\t\t: 2445.428\nflags\t\t: fpu sse avx avx2 fma\n")
    peak, how = profile_ops.fp32_peak_gflops(2, str(cpuinfo))
    assert peak == pytest.approx(2 * 2.445428 * 32)
    assert "32 FLOP/cycle" in how


def test_op_categories_are_disjoint():
    ops = [op for names in profile_ops.CATEGORIES.values() for op in names]
    assert len(ops) == len(set(ops))


def test_startup_stages_split_the_total():
    events = [("import TensorFlow", 0, 5), ("construct", 6, 7), ("load", 6, 8),
              ("prepare", 8, 9), ("run", 10, 16), ("trace", 10, 12), ("run", 17, 19)]
    split = bench_startup.stages(events, total=20.0)
    assert split["weight loading"] == 1 and split["model construction"] == 1
    assert split["tracing"] == 2 and split["first run"] == 4
    assert split["later runs (mean)"] == 2
    assert sum(v for k, v in split.items() if k != "later runs (mean)") + 2 == pytest.approx(20)
