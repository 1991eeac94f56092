"""Smoke test of scripts/bench_heads.py: a tiny set end to end in a subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_heads.py"


def test_bench_heads_tiny(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--scale", "0.005", "--n-videos", "40", "--epochs", "2",
         "--naive-snippets", "50", "--threads", "1", "--workdir", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One ratio line per head in each table: training (two speedups) and inference (one).
    for head in ("mil", "gsmoe"):
        rows = [ln for ln in proc.stdout.splitlines() if ln.startswith(head)]
        assert len(rows) == 2, proc.stdout
        assert re.search(r"\d\.\dx\s+\d+\.\dx$", rows[0]), rows[0]
        assert re.search(r"\d\.\dx$", rows[1]), rows[1]
    assert "Training: seconds per epoch" in proc.stdout and "Inference: snippets/s" in proc.stdout
    results = json.loads(out.read_text())
    assert results["set"]["videos"] == 40 and results["set"]["normal"] == 20
    for head in ("mil", "gsmoe"):
        train, infer = results["training"][head], results["inference"][head]
        assert len(train["product"]["epoch_s"]) == 2 and train["speedup_cold"] > 0 and train["speedup_later"] > 0
        assert infer["naive_snippets"] == 50 and infer["speedup"] > 0
    assert not any((tmp_path / "work").iterdir())  # the set is deleted without --keep
