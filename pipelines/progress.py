"""The one progress view of a scoring job: snippets (rate, ETA), videos done/failed, real time."""

from __future__ import annotations

import time

from tqdm.auto import tqdm


class JobProgress:
    """One bar over snippets with videos done/failed and the real-time factor so far."""

    def __init__(self, n_videos: int, enabled: bool) -> None:
        self.started = time.perf_counter()
        self.n_videos = n_videos
        self.ok = self.failed = 0
        self.video_s = 0.0
        self.bar = tqdm(total=0, desc="snippets", unit="snip", disable=not enabled, dynamic_ncols=True)

    def add_snippets(self, n: int) -> None:
        self.bar.total += n
        self.bar.refresh()

    def advance(self, n: int) -> None:
        self.bar.update(n)

    def video_done(self, ok: bool, video_s: float = 0.0) -> None:
        self.ok += ok
        self.failed += not ok
        self.video_s += video_s
        wall = max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(
            f"videos {self.ok + self.failed}/{self.n_videos} (failed {self.failed}), "
            f"{self.video_s / wall:.2f}x real time", refresh=True)

    def close(self) -> None:
        self.bar.close()
