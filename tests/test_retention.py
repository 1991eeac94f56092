"""Retention of the live monitor's media and event log (RunDir.prune_media / rotate_events):
oldest deleted first, per camera, by age and by a size cap; events.jsonl rotated."""

from __future__ import annotations

import logging
import os

from vad.rundir import RunDir


def _media(run: RunDir, camera: str, frame: int, size: int, mtime: float, kind: str = "clip"):
    path = run.clip_path(f"{camera}:{frame}") if kind == "clip" else run.snapshot_path(f"{camera}:{frame}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))
    return path


def test_size_cap_deletes_the_oldest_first_and_only_that_cameras_files(tmp_path, caplog):
    run = RunDir(tmp_path)
    now = 1_000_000.0
    mine = [_media(run, "gate", 100 * i, 1000, now - 1000 + i, kind) for i in range(6) for kind in ("clip", "snap")
            if (i % 2 == 0) == (kind == "clip")]
    other = [_media(run, "gate_2", 100 * i, 1000, now - 5000 + i) for i in range(3)]  # a prefix-alike camera
    assert run.camera_media("gate") == mine  # oldest first, clips and snapshots together
    with caplog.at_level(logging.INFO, logger="vad.rundir"):
        deleted = run.prune_media("gate", max_bytes=2500, now=now)
    assert deleted == mine[:4] and all(not p.exists() for p in deleted)
    assert all(p.exists() for p in mine[4:]) and all(p.exists() for p in other)
    assert "retention gate: deleted 4 file(s)" in caplog.text


def test_age_limit_deletes_what_is_older_than_n_days(tmp_path):
    run = RunDir(tmp_path)
    now = 1_000_000.0
    day = 86400.0
    old = [_media(run, "lobby", i, 10, now - (10 - i) * day) for i in range(5)]  # 10..6 days old
    new = [_media(run, "lobby", 100 + i, 10, now - i * day) for i in range(3)]  # 0..2 days old
    assert run.prune_media("lobby", max_age_s=7 * day, now=now) == old[:3]  # 10, 9 and 8 days old
    assert old[3].exists() and old[4].exists() and all(p.exists() for p in new)  # exactly 7 days: kept
    assert run.prune_media("lobby", max_age_s=7 * day, now=now) == []


def test_events_log_rotates_past_its_cap_keeping_n_parts(tmp_path):
    run = RunDir(tmp_path)
    for i in range(4):
        run.events_path.write_text(f"part {i}\n" * 50)
        assert run.rotate_events(max_bytes=100, keep=2) == run.events_path.with_name("events.jsonl.1")
    assert not run.events_path.exists()
    assert run.events_path.with_name("events.jsonl.1").read_text().startswith("part 3")
    assert run.events_path.with_name("events.jsonl.2").read_text().startswith("part 2")
    assert not run.events_path.with_name("events.jsonl.3").exists()
    run.events_path.write_text("small\n")
    assert run.rotate_events(max_bytes=100, keep=2) is None and run.events_path.exists()
