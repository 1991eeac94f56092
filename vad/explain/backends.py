"""Perception backends with a model behind them: an OpenAI-compatible HTTP server, or a local
``transformers`` model.

* :class:`OpenAIBackend` speaks the Chat Completions protocol (``POST {base_url}/chat/completions``)
  with the standard library only, so it works against vLLM, Ollama, a llama.cpp server or a hosted
  API. A snippet is sent as up to ``max_images`` frames, evenly spaced over it, resized so their
  long side is ``image_size`` and inlined as base64 JPEG ``image_url`` parts after the prompt. The
  API key is read from the environment variable ``api_key_env`` at each call and sent only when set;
  it is never logged and never part of an error message (it is even masked out of a server's error
  body, should the server echo the request headers).
* :class:`TransformersBackend` runs any image-text-to-text (vision-language chat) or captioning
  model through ``transformers.pipeline``. ``perceive`` describes the snippet's middle frame.
  ``complete`` needs a prompted model (task ``image-text-to-text``); a captioning model (task
  ``image-to-text``) does not reason in text. ``transformers`` is imported when the backend is
  built, so this module imports without it.

Every failure (HTTP status, unreachable server, socket timeout, malformed answer, a model's own
exception) raises :class:`~vad.explain.perception.BackendError`; wrap a backend in
:class:`~vad.explain.perception.ResilientBackend` for caching, a timeout per call and retries.

:func:`build_backend` makes a backend from a kind and an options dict (a config section);
:data:`BACKEND_BUILDERS` maps each kind to its builder and may be extended with further kinds.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import inspect
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np

from vad.explain.perception import BackendError, Perception, PerceptionBackend, PerceptionRequest

logger = logging.getLogger(__name__)

__all__ = ["BACKEND_BUILDERS", "DEFAULT_DESCRIBE_PROMPT", "OpenAIBackend", "TransformersBackend", "build_backend"]

DEFAULT_DESCRIBE_PROMPT = (
    "Describe this video snippet from a surveillance camera in 2-3 sentences: the people and what "
    "they are doing, the objects and vehicles, and anything unusual."
)

_BODY_SHOWN = 300  # characters of a server's answer quoted in an error message


def _prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:8]


def _check_frames(request: PerceptionRequest) -> np.ndarray:
    frames = np.asarray(request.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise BackendError(f"{request.key}: frames must be a non-empty (T, H, W, 3) array, got shape {frames.shape}")
    return frames


def _spread(n_frames: int, n_wanted: int) -> list[int]:
    """Positions of ``n_wanted`` frames evenly spaced over ``n_frames`` (first and last included)."""
    if n_frames <= n_wanted:
        return list(range(n_frames))
    return sorted({int(i) for i in np.linspace(0, n_frames - 1, max(n_wanted, 1)).round()})


def _frame_numbers(request: PerceptionRequest, positions: Sequence[int], n_frames: int) -> list[int]:
    """Source frame numbers of array positions; the frames may be subsampled from the snippet's range."""
    if n_frames <= 1:
        return [request.start_frame for _ in positions]
    step = (request.end_frame - request.start_frame) / (n_frames - 1)
    return [int(round(request.start_frame + p * step)) for p in positions]


def _jpeg_data_url(rgb: np.ndarray, long_side: int, quality: int = 90) -> str:
    """``rgb`` resized so its long side is ``long_side``, as a ``data:image/jpeg;base64,...`` URL."""
    image = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        # INTER_AREA avoids aliasing when shrinking; it degrades to nearest-like results when enlarging
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        image = cv2.resize(image, size, interpolation=interpolation)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise BackendError("could not encode a frame as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


class OpenAIBackend(PerceptionBackend):
    """An OpenAI-compatible Chat Completions server (see the module docstring).

    ``base_url``: the API root, e.g. ``http://127.0.0.1:8000/v1``. ``timeout_s`` is the socket
    timeout of each request; ``max_tokens`` and ``temperature`` go into every request."""

    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout_s: float = 60.0, max_tokens: int = 256, temperature: float = 0.0, max_images: int = 4,
                 image_size: int = 336, describe_prompt: str = DEFAULT_DESCRIBE_PROMPT) -> None:
        if not base_url or not model:
            raise ValueError("base_url and model are required")
        if timeout_s <= 0 or max_tokens < 1 or max_images < 1 or image_size < 8:
            raise ValueError("timeout_s must be > 0, max_tokens and max_images >= 1, image_size >= 8")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.max_images = int(max_images)
        self.image_size = int(image_size)
        self.describe_prompt = describe_prompt

    def identity(self) -> str:
        return f"openai:{self.base_url}:{self.model}:{_prompt_hash(self.describe_prompt)}"

    def perceive(self, request: PerceptionRequest) -> Perception:
        frames = _check_frames(request)
        positions = _spread(len(frames), self.max_images)
        text = self._chat(self.describe_prompt, [frames[p] for p in positions])
        return Perception(text=text, evidence={"model": self.model,
                                               "frames_sent": _frame_numbers(request, positions, len(frames))},
                          backend=self.name, start_frame=request.start_frame, end_frame=request.end_frame)

    def complete(self, prompt: str, images: Sequence[np.ndarray] = ()) -> str:
        return self._chat(prompt, list(images))

    def _chat(self, prompt: str, images: Sequence[np.ndarray]) -> str:
        if images:
            content: str | list[dict[str, Any]] = [{"type": "text", "text": prompt}] + [
                {"type": "image_url", "image_url": {"url": _jpeg_data_url(image, self.image_size)}}
                for image in images]
        else:
            content = prompt  # plain string content: text-only servers may reject a list of parts
        payload = {"model": self.model, "messages": [{"role": "user", "content": content}],
                   "max_tokens": self.max_tokens, "temperature": self.temperature, "stream": False}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        body = self._post(payload, key or None)
        return self._answer(body, key or None)

    def _post(self, payload: dict[str, Any], key: str | None) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(payload).encode()
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        n_images = sum(1 for m in payload["messages"] if isinstance(m["content"], list)
                       for part in m["content"] if part.get("type") == "image_url")
        logger.debug("POST %s model=%s images=%d bytes=%d", self.url, self.model, n_images, len(data))
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                status = resp.status
                text = resp.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as err:
            try:
                text = err.read().decode("utf-8", errors="replace")
            except Exception:  # noqa: BLE001 - the status alone still says what happened
                text = ""
            raise BackendError(f"{self.url}: HTTP {err.code}: {_shown(text, key)}") from None
        except (socket.timeout, TimeoutError):
            raise BackendError(f"{self.url}: timed out after {self.timeout_s:g} s") from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise BackendError(f"{self.url}: timed out after {self.timeout_s:g} s") from None
            raise BackendError(f"{self.url}: cannot reach the server: {_shown(str(reason), key)}") from None
        except (OSError, http.client.HTTPException) as err:  # connection reset, truncated answer and the like
            raise BackendError(f"{self.url}: {type(err).__name__}: {_shown(str(err), key)}") from None
        logger.debug("%s answered HTTP %d in %.2f s", self.url, status, time.monotonic() - started)
        if status != 200:
            raise BackendError(f"{self.url}: HTTP {status}: {_shown(text, key)}")
        return text

    def _answer(self, body: str, key: str | None) -> str:
        try:
            answer = json.loads(body)
        except ValueError:
            raise BackendError(f"{self.url}: answer is not JSON: {_shown(body, key)}") from None
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{self.url}: answer has no choices[0].message.content: {_shown(body, key)}") from None
        if isinstance(content, list):  # some servers answer with content parts, as requests may send them
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if not isinstance(content, str) or not content.strip():
            raise BackendError(f"{self.url}: empty answer from model {self.model}")
        return content.strip()


def _shown(text: str, key: str | None) -> str:
    """``text`` cut to a readable length, with the API key masked should a server echo it."""
    if key:
        text = text.replace(key, "***")
    text = " ".join(text.split())
    return text if len(text) <= _BODY_SHOWN else text[:_BODY_SHOWN] + "..."


_CAPTION_TASKS = ("image-to-text",)
_PROMPTED_TASKS = ("image-text-to-text",)


class TransformersBackend(PerceptionBackend):
    """A ``transformers`` vision-language or captioning model (see the module docstring).

    ``model``: a hub id or a local directory, loaded with ``transformers.pipeline(task, model,
    device=device, model_kwargs=model_kwargs)``; or pass a built ``pipeline`` instead. ``task``:
    ``image-text-to-text`` (prompted: chat messages when the processor has a chat template, else
    image plus prompt text) or ``image-to-text`` (captioning, no prompt). Generation is greedy,
    at most ``max_new_tokens`` tokens."""

    name = "transformers"

    def __init__(self, model: str | None = None, *, task: str | None = None, device: str | int | None = None,
                 describe_prompt: str = DEFAULT_DESCRIBE_PROMPT, max_new_tokens: int = 64,
                 model_kwargs: Mapping[str, Any] | None = None, pipeline: Any = None) -> None:
        if (model is None) == (pipeline is None):
            raise ValueError("give exactly one of model (a hub id or local path) and pipeline")
        if task is None:
            task = getattr(pipeline, "task", None) if pipeline is not None else None
            task = task if task in _CAPTION_TASKS + _PROMPTED_TASKS else _PROMPTED_TASKS[0]
        if task not in _CAPTION_TASKS + _PROMPTED_TASKS:
            raise ValueError(f"task must be one of {', '.join(_PROMPTED_TASKS + _CAPTION_TASKS)}, got {task!r}")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        self.task = task
        self.describe_prompt = describe_prompt
        self.max_new_tokens = int(max_new_tokens)
        self._pipe = pipeline if pipeline is not None else self._load(model, task, device, dict(model_kwargs or {}))
        self.model = model if model is not None else str(
            getattr(getattr(self._pipe, "model", None), "name_or_path", "") or type(self._pipe).__name__)

    @staticmethod
    def _load(model: str, task: str, device: str | int | None, model_kwargs: dict[str, Any]) -> Any:
        try:
            import transformers
        except ImportError as err:
            raise BackendError(f"the transformers backend needs the transformers package: {err}") from None
        major = int(transformers.__version__.split(".")[0])
        extra: dict[str, Any] = {}
        if major >= 5:
            # 5.x reads local_files_only from pipeline()'s own keywords and fails when model_kwargs repeats it
            if "local_files_only" in model_kwargs:
                extra["local_files_only"] = model_kwargs.pop("local_files_only")
            # 5.x folds captioning into image-text-to-text; asking for image-to-text there only logs a
            # deprecation, and (5.24) that log call itself fails with a logging error on stderr
            task = "image-text-to-text" if task in _CAPTION_TASKS else task
        logger.info("loading the transformers model %s (pipeline task %s, device %s)", model, task, device)
        started = time.monotonic()
        try:
            pipe = transformers.pipeline(task, model=model, device=device, model_kwargs=model_kwargs or None, **extra)
        except Exception as err:  # noqa: BLE001 - any loading failure is the backend's failure
            raise BackendError(f"transformers backend: cannot load {model}: {type(err).__name__}: {err}") from err
        # pipeline() also keeps unknown keywords as per-call preprocessing options, where the processor
        # warns about local_files_only on every call
        preprocess = getattr(pipe, "_preprocess_params", None)
        if isinstance(preprocess, dict):
            preprocess.pop("local_files_only", None)
        logger.info("loaded %s in %.1f s", model, time.monotonic() - started)
        return pipe

    def identity(self) -> str:
        return f"transformers:{self.model}:{self.task}:{self.max_new_tokens}:{_prompt_hash(self.describe_prompt)}"

    @property
    def reasons_in_text(self) -> bool:
        return self.task in _PROMPTED_TASKS

    @property
    def _chat_capable(self) -> bool:
        holders = (getattr(self._pipe, "processor", None), getattr(self._pipe, "tokenizer", None))
        return any(getattr(h, "chat_template", None) for h in holders if h is not None)

    def perceive(self, request: PerceptionRequest) -> Perception:
        frames = _check_frames(request)
        middle = len(frames) // 2
        image = _pil(frames[middle])
        if self.task in _CAPTION_TASKS:
            text = self._caption(image)
        else:
            text = self._prompted(self.describe_prompt, [image])
        return Perception(text=text, evidence={"model": self.model,
                                               "frames_sent": _frame_numbers(request, [middle], len(frames))},
                          backend=self.name, start_frame=request.start_frame, end_frame=request.end_frame)

    def complete(self, prompt: str, images: Sequence[np.ndarray] = ()) -> str:
        if self.task not in _PROMPTED_TASKS:
            raise BackendError(f"the transformers backend with the captioning model {self.model} "
                               f"(task {self.task}) does not reason in text")
        return self._prompted(prompt, [_pil(image) for image in images])

    def _generation(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "generate_kwargs": {"do_sample": False, "num_beams": 1}}

    def _caption(self, image: Any) -> str:
        if type(self._pipe).__name__ == "ImageToTextPipeline":  # transformers 4.x captioning pipeline
            return self._run("", self._pipe, image, **self._generation())
        # 5.x: an image-text-to-text pipeline, which wants a (here empty) text next to the image
        return self._run("", self._pipe, images=image, text="", return_full_text=False, **self._generation())

    def _prompted(self, prompt: str, images: list[Any]) -> str:
        if self._chat_capable:
            content = [{"type": "image", "image": image} for image in images] + [{"type": "text", "text": prompt}]
            messages = [{"role": "user", "content": content}]
            return self._run(prompt, self._pipe, text=messages, return_full_text=False, **self._generation())
        # no chat template: the prompt is the text the answer continues
        if not images:
            return self._run(prompt, self._pipe, text=prompt, return_full_text=False, **self._generation())
        return self._run(prompt, self._pipe, images=images[0] if len(images) == 1 else images, text=prompt,
                         return_full_text=False, **self._generation())

    def _run(self, prompt: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
        started = time.monotonic()
        try:
            outputs = fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - a model's own failure is reported as the backend's
            raise BackendError(f"transformers backend ({self.model}): {type(err).__name__}: {err}") from err
        text = _generated_text(outputs, prompt)
        logger.debug("%s generated %d characters in %.2f s", self.model, len(text), time.monotonic() - started)
        return text

    def close(self) -> None:
        self._pipe = None


def _pil(rgb: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))


def _generated_text(outputs: Any, prompt: str) -> str:
    """The answer in a pipeline's output: ``[{"generated_text": str}]``, possibly nested once more
    for batched input; with chat input ``generated_text`` may be the conversation, answer last."""
    item = outputs
    while isinstance(item, (list, tuple)):
        if not item:
            raise BackendError("transformers backend: the pipeline returned no output")
        item = item[0]
    if not isinstance(item, dict) or "generated_text" not in item:
        raise BackendError(f"transformers backend: unexpected pipeline output {type(item).__name__}")
    text = item["generated_text"]
    if isinstance(text, (list, tuple)):
        last = text[-1] if text else None
        if not isinstance(last, dict):
            raise BackendError("transformers backend: the pipeline returned a conversation without an answer")
        text = last.get("content")
        if isinstance(text, (list, tuple)):
            text = "".join(part.get("text", "") for part in text if isinstance(part, dict))
    if not isinstance(text, str):
        raise BackendError(f"transformers backend: unexpected generated_text {type(text).__name__}")
    text = text.strip()
    if prompt and text.startswith(prompt):  # some pipelines and models echo the prompt
        text = text[len(prompt):].strip()
    return text


BackendBuilder = Callable[[Mapping[str, Any]], PerceptionBackend]


def _from_signature(cls: type[PerceptionBackend], kind: str, options: Mapping[str, Any],
                    exclude: Sequence[str] = ()) -> PerceptionBackend:
    """``cls(**options)``, with unknown or missing option names reported as a ValueError."""
    params = {n: p for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self" and n not in exclude}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"unknown option(s) for the {kind} backend: {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(params))}")
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in options
               and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if missing:
        raise ValueError(f"the {kind} backend needs option(s): {', '.join(missing)}")
    return cls(**dict(options))


def _build_openai(options: Mapping[str, Any]) -> PerceptionBackend:
    return _from_signature(OpenAIBackend, "openai", options)


def _build_transformers(options: Mapping[str, Any]) -> PerceptionBackend:
    # a built pipeline object is not a config value; model (a hub id or path) is required here
    if "model" not in options:
        raise ValueError("the transformers backend needs option(s): model")
    return _from_signature(TransformersBackend, "transformers", options, exclude=("pipeline",))


def _build_offline(options: Mapping[str, Any]) -> PerceptionBackend:
    """``motion``: :class:`~vad.explain.motion.MotionConfig` keys; ``actions``: true for I3D's top
    Kinetics actions (``i3d_weights``: a weights file or ``auto``), ``auto`` for "when the weights
    are found", false for none; ``objects``: :class:`~vad.explain.offline.DnnObjectDetector` keys."""
    from vad.explain.motion import MotionConfig
    from vad.explain.offline import DnnObjectDetector, I3DActions, OfflineBackend

    options = dict(options)
    unknown = set(options) - {"motion", "actions", "i3d_weights", "objects"}
    if unknown:
        raise ValueError(f"unknown option(s) for the offline backend: {', '.join(sorted(unknown))} "
                         "(known: actions, i3d_weights, motion, objects)")
    motion = MotionConfig(**dict(options.get("motion") or {}))
    actions = None
    want = options.get("actions", False)
    if want not in (True, False, "auto"):
        raise ValueError(f"offline backend: actions must be true, false or auto, got {want!r}")
    if want:
        from vad.features.i3d_weights import find_default_i3d_weights, load_i3d

        weights = options.get("i3d_weights", "auto")
        if weights == "auto" and find_default_i3d_weights() is None:
            if want is True:
                raise ValueError("offline backend: actions need the I3D weights (none found; set i3d_weights)")
            logger.info("offline perception without actions: no I3D weights found")
        else:
            actions = I3DActions(load_i3d(weights))
    objects = DnnObjectDetector(**dict(options["objects"])) if options.get("objects") else None
    return OfflineBackend(motion, actions, objects)


BACKEND_BUILDERS: dict[str, BackendBuilder] = {
    "offline": _build_offline,
    "openai": _build_openai,
    "transformers": _build_transformers,
}


def build_backend(kind: str, options: Mapping[str, Any] | None = None) -> PerceptionBackend:
    """The backend of ``kind`` (a key of :data:`BACKEND_BUILDERS`) built from ``options`` (its
    constructor's keywords). Unknown kinds and unknown option names raise ValueError."""
    builder = BACKEND_BUILDERS.get(kind)
    if builder is None:
        raise ValueError(f"unknown perception backend {kind!r}; known: {', '.join(sorted(BACKEND_BUILDERS))}")
    return builder(dict(options or {}))
