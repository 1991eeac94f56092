"""Smoke test of scripts/bench_ctd2gan.py: a tiny setting end to end in a subprocess.

Checks the script runs and reports every number; it asserts nothing about speed (benchmarks
print ratios, timed tests would be flaky)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_ctd2gan.py"


def test_bench_ctd2gan_tiny(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--size", "32", "--iters", "2", "--frames", "4",
         "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in ("train iterations/s", "score frames/s, batch 1", "score frames/s, batch 16",
                 "10 fps analysis on cpu", "avx512f", "torch threads", "parameters:"):
        assert text in proc.stdout, proc.stdout

    results = json.loads(out.read_text())
    assert results["config"]["size"] == 32 and results["run"]["iters"] == 2 and results["run"]["frames"] == 4
    assert results["machine"]["torch_threads"] == 1 and isinstance(results["machine"]["avx512f"], bool)
    assert results["machine"]["cpu_model"]

    params = results["params"]
    assert params["ctd2gan_generator"] > 0 and params["baseline"] > 0
    assert params["ctd2gan_total"] > params["ctd2gan_generator"]  # the discriminators count too
    assert abs(params["baseline"] / params["ctd2gan_generator"] - 1) <= 0.25

    assert list(results["devices"]) == ["cpu"]
    cpu = results["devices"]["cpu"]
    for key in ("train_it_s", "score_fps_batch1", "score_fps_batch16"):
        numbers = cpu[key]
        for name in ("ctd2gan", "baseline", "ratio"):
            assert numbers[name] > 0, (key, name, numbers)
        rounds = numbers["rounds"]
        paired = sorted(x / y for x, y in zip(rounds["ctd2gan"], rounds["baseline"]))
        assert paired[0] - 1e-9 <= numbers["ratio"] <= paired[-1] + 1e-9  # the median of the round ratios
        for name in ("ctd2gan", "baseline"):  # --quick: 2 rounds, fewer when there are fewer calls
            assert 1 <= len(rounds[name]) <= 2 and min(rounds[name]) > 0
    assert results["keeps_up_10fps"]["cpu"] == (cpu["score_fps_batch1"]["ctd2gan"] >= 10)
    assert results["measured_at_default_size"] is False
