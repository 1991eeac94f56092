"""What is in a snippet: the one interface of perception backends, and the resilience around them.

A :class:`PerceptionBackend` answers two questions:

* :meth:`~PerceptionBackend.perceive`: what is in these frames (a :class:`PerceptionRequest`:
  a snippet's frames and where they come from) -> a :class:`Perception`: ``text`` a person can
  read plus structured ``evidence`` (numbers, labels) that rules can check;
* :meth:`~PerceptionBackend.complete`: free-text reasoning over a prompt (and optional images),
  for rule induction, deduction and event judging with a language model. The offline backend
  does not reason in text (it raises :class:`BackendError`); the rule code then works on the
  structured evidence instead.

:class:`ResilientBackend` wraps any backend with a per-snippet result cache (in memory and,
optionally, one JSON file per result on disk), a timeout per call and retries with backoff.
A call that still fails raises :class:`BackendError`; callers turn that into an
``explanation_error`` on the event, never into a lost event.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vad.fsutil import write_json_atomic

logger = logging.getLogger(__name__)

__all__ = ["BackendError", "Perception", "PerceptionBackend", "PerceptionRequest", "ResilientBackend"]


class BackendError(RuntimeError):
    """A backend could not answer (timeout, error, malformed output); the message says why."""


@dataclass(frozen=True)
class PerceptionRequest:
    """One snippet to perceive. ``frames``: (T, H, W, 3) uint8 RGB, in order, covering frames
    ``start_frame .. end_frame`` (inclusive) of ``source_id`` (possibly subsampled)."""

    source_id: str
    start_frame: int
    end_frame: int
    fps: float
    frames: np.ndarray = field(repr=False, compare=False)

    @property
    def key(self) -> str:
        """Cache key: where the snippet is *and* a digest of its pixels (a sparse sample), so two
        videos scored under the same name, or a file replaced in place, never share answers."""
        f = np.ascontiguousarray(np.asarray(self.frames)[:, ::7, ::7])
        digest = hashlib.blake2b(f.tobytes(), digest_size=8).hexdigest() if f.size else "empty"
        return f"{self.source_id}:{self.start_frame}-{self.end_frame}:{digest}"

    @property
    def start_s(self) -> float:
        return self.start_frame / self.fps

    @property
    def end_s(self) -> float:
        return (self.end_frame + 1) / self.fps


@dataclass
class Perception:
    """A backend's answer for one snippet: readable ``text`` and JSON-ready ``evidence``."""

    text: str
    evidence: dict[str, Any]
    backend: str
    start_frame: int = 0
    end_frame: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Perception:
        return cls(text=str(d["text"]), evidence=dict(d.get("evidence") or {}), backend=str(d.get("backend", "")),
                   start_frame=int(d.get("start_frame", 0)), end_frame=int(d.get("end_frame", 0)))


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python numbers and lists (what JSON,
    the cache and the rules expect), recursively."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


class PerceptionBackend(ABC):
    """See the module docstring. ``name`` is the backend's kind (``offline``, ``transformers``,
    ``openai``); :meth:`identity` also names the model and prompt, so cached answers of one
    model are never served for another."""

    name: str = ""

    def identity(self) -> str:
        return self.name

    @abstractmethod
    def perceive(self, request: PerceptionRequest) -> Perception:
        """What is in the request's frames."""

    def complete(self, prompt: str, images: Sequence[np.ndarray] = ()) -> str:
        """A language model's answer to ``prompt`` (with optional RGB images)."""
        raise BackendError(f"the {self.name} backend does not reason in text")

    @property
    def reasons_in_text(self) -> bool:
        """Whether :meth:`complete` is implemented (a language model is behind the backend)."""
        return type(self).complete is not PerceptionBackend.complete

    def close(self) -> None:
        """Release models or connections (optional)."""


class ResilientBackend(PerceptionBackend):
    """``inner`` with a result cache, a timeout per call and retries (see the module doc).

    ``cache_dir``: where perceptions are kept across runs (one JSON file per snippet and backend
    identity); None keeps them in memory only. ``timeout_s`` bounds each attempt: the call runs
    in a worker thread and is abandoned (not killed: HTTP backends also set socket timeouts) when
    it takes longer. ``retries``: further attempts after the first, ``backoff_s`` doubling."""

    def __init__(self, inner: PerceptionBackend, *, cache_dir: str | Path | None = None, timeout_s: float = 60.0,
                 retries: int = 1, backoff_s: float = 0.5) -> None:
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("timeout_s must be > 0, retries and backoff_s >= 0")
        self.inner = inner
        self.name = inner.name
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self._memory: dict[str, Perception] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"perceive-{self.name}")
        self.calls = 0  # attempts made on the inner backend (cache hits make none)
        self.failures = 0

    def identity(self) -> str:
        return self.inner.identity()

    @property
    def reasons_in_text(self) -> bool:
        return self.inner.reasons_in_text

    def _cache_path(self, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(f"{self.identity()}\n{key}".encode()).hexdigest()[:32]
        return self.cache_dir / f"{digest}.json"

    def _attempts(self, what: str, fn: Any, *args: Any) -> Any:
        delay, last = self.backoff_s, "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2
            self.calls += 1
            future = self._pool.submit(fn, *args)
            try:
                return future.result(timeout=self.timeout_s)
            except concurrent.futures.TimeoutError:
                future.cancel()
                last = f"timed out after {self.timeout_s:g} s"
                # the abandoned call may still hold the worker: later calls get a fresh one
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                                   thread_name_prefix=f"perceive-{self.name}")
            except BackendError as err:
                last = str(err)
            except Exception as err:  # noqa: BLE001 - a backend's own failure is reported, not raised through
                last = f"{type(err).__name__}: {err}"
            logger.warning("%s backend: %s failed (attempt %d of %d): %s", self.name, what, attempt + 1,
                           self.retries + 1, last)
        self.failures += 1
        raise BackendError(f"{self.name} backend: {what}: {last}")

    def perceive(self, request: PerceptionRequest) -> Perception:
        key = request.key
        if key in self._memory:
            return self._memory[key]
        path = self._cache_path(key)
        if path is not None and path.is_file():
            try:
                found = Perception.from_dict(json.loads(path.read_text()))
                self._memory[key] = found
                return found
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("ignoring unreadable cached perception %s", path)
        result = self._attempts(f"perceive {key}", self.inner.perceive, request)
        if not isinstance(result, Perception) or not isinstance(result.text, str) \
                or not isinstance(result.evidence, dict):
            self.failures += 1
            raise BackendError(f"{self.name} backend: perceive {key}: malformed answer {type(result).__name__}")
        # the same plain numbers whether the answer is fresh or read back from the cache
        result = Perception(result.text, plain(result.evidence), result.backend, result.start_frame, result.end_frame)
        self._memory[key] = result
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, result.to_dict())
        return result

    def complete(self, prompt: str, images: Sequence[np.ndarray] = ()) -> str:
        answer = self._attempts("complete", self.inner.complete, prompt, images)
        if not isinstance(answer, str):
            self.failures += 1
            raise BackendError(f"{self.name} backend: complete: malformed answer {type(answer).__name__}")
        return answer

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.inner.close()
