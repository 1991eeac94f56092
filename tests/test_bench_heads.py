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


def _quality(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--quality", *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)


def test_bench_heads_quality_seeds_run_apart_merge_into_one_table(tmp_path):
    # Two invocations with different training seeds (as run in parallel), then --merge.
    tiny = ["--sets", "planted", "--heads", "mil", "--train", "16", "--test", "8", "--dim", "16",
            "--epochs", "1", "--seeds", "1", "--threads", "1"]
    parts = []
    for seed in (0, 1):
        part = tmp_path / f"seed{seed}.json"
        proc = _quality(tmp_path, *tiny, "--first-seed", str(seed), "--workdir", str(tmp_path / f"w{seed}"),
                        "--json", str(part))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"planted      mil    seed {seed}: AUC" in proc.stdout, proc.stdout
        parts.append(json.loads(part.read_text()))
        assert [r["seed"] for r in parts[-1]["sets"]["planted"]["mil"]["runs"]] == [seed]
    merged_path = tmp_path / "merged.json"
    proc = _quality(tmp_path, "--merge", str(tmp_path / "seed0.json"), str(tmp_path / "seed1.json"),
                    "--json", str(merged_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = json.loads(merged_path.read_text())
    cell = merged["sets"]["planted"]["mil"]
    aucs = [p["sets"]["planted"]["mil"]["runs"][0]["auc"] for p in parts]
    assert [r["seed"] for r in cell["runs"]] == [0, 1] and merged["seeds"] == [0, 1]
    assert abs(cell["auc_mean"] - sum(aucs) / 2) < 1e-12
    assert abs(cell["auc_sd"] - abs(aucs[0] - aucs[1]) / 2 ** 0.5) < 1e-12  # sample sd of two
    highs = [p["sets"]["planted"]["mil"]["runs"][0]["normal_high"] for p in parts]
    assert all(0.0 <= h <= 1.0 for h in highs) and abs(cell["normal_high_mean"] - sum(highs) / 2) < 1e-12
    assert "normal videos' frames scoring >= 0.5" in proc.stdout
    assert "from " in proc.stdout and "planted" in proc.stdout
    # The same seed with a different result is two different experiments: refused.
    forged = parts[1]
    forged["sets"]["planted"]["mil"]["runs"][0]["seed"] = 0
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    proc = _quality(tmp_path, "--merge", str(tmp_path / "seed0.json"), str(tmp_path / "forged.json"))
    assert proc.returncode != 0 and "cannot be merged" in proc.stderr, proc.stderr[-2000:]


def test_bench_heads_quality_oracle_is_the_data_ceiling_and_merges(tmp_path):
    # The probe given the true signatures separates the planted intervals, and only through them:
    # with no signature added it is at chance. --merge keeps it, and refuses two that differ.
    tiny = ["--sets", "planted", "--heads", "mil", "--train", "16", "--test", "8", "--dim", "256",
            "--epochs", "1", "--seeds", "1", "--threads", "1", "--oracle"]
    oracle = {}
    for amplitude in ("0.35", "0"):
        part = tmp_path / f"a{amplitude}.json"
        proc = _quality(tmp_path, *tiny, "--amplitude", amplitude, "--workdir", str(tmp_path / "w"),
                        "--json", str(part))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "oracle: a probe given the true class signatures" in proc.stdout, proc.stdout
        oracle[amplitude] = json.loads(part.read_text())["oracle"]["planted"]["auc"]
    assert oracle["0.35"] > 0.95, oracle
    assert abs(oracle["0"] - 0.5) < 0.15, oracle
    # The same data and seed run again is the same result: merged, the oracle is carried over.
    proc = _quality(tmp_path, *tiny, "--amplitude", "0.35", "--workdir", str(tmp_path / "w"),
                    "--json", str(tmp_path / "again.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _quality(tmp_path, "--merge", str(tmp_path / "a0.35.json"), str(tmp_path / "again.json"),
                    "--json", str(tmp_path / "merged.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "merged.json").read_text())["oracle"]["planted"]["auc"] == oracle["0.35"]
    forged = json.loads((tmp_path / "again.json").read_text())
    forged["oracle"]["planted"]["auc"] = 0.5
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    proc = _quality(tmp_path, "--merge", str(tmp_path / "a0.35.json"), str(tmp_path / "forged.json"))
    assert proc.returncode != 0 and "oracle" in proc.stderr, proc.stderr[-2000:]
