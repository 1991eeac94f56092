"""The OpenAI-compatible and transformers perception backends, against real counterparts: a local
chat-completions HTTP server, and tiny random-weight models built and saved here (no download)."""

from __future__ import annotations

import base64
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest

from vad.explain.backends import (BACKEND_BUILDERS, DEFAULT_DESCRIBE_PROMPT, OpenAIBackend, TransformersBackend,
                                  build_backend)
from vad.explain.perception import BackendError, Perception, PerceptionRequest, ResilientBackend

SECRET = "sk-test-0123456789abcdef-not-a-real-key"
KEY_ENV = "VAD_TEST_OPENAI_KEY"
REPO = Path(__file__).resolve().parents[1]


# --- a chat-completions server --------------------------------------------------------------------

class ChatServer(ThreadingHTTPServer):
    """Records each request; answers by ``script`` (behaviours for the next requests, in order),
    then by ``default``. Behaviours: ok, 500, badjson, nochoices, empty, slow (sleeps ``slow_s``)."""

    daemon_threads = True
    block_on_close = False  # a sleeping "slow" handler must not hold up the fixture's shutdown

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.requests: list[dict[str, Any]] = []
        self.script: list[str] = []
        self.default = "ok"
        self.expected_key: str | None = None
        self.slow_s = 1.5
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def next_behaviour(self) -> str:
        with self.lock:
            return self.script.pop(0) if self.script else self.default


def image_parts(payload: dict[str, Any]) -> list[dict[str, Any]]:
    content = payload["messages"][0]["content"]
    return [part for part in content if part.get("type") == "image_url"] if isinstance(content, list) else []


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        auth = self.headers.get("Authorization")
        payload = json.loads(raw)
        with self.server.lock:
            self.server.requests.append({"path": self.path, "auth": auth, "json": payload})
        if self.path != "/v1/chat/completions":
            return self._send(404, b'{"error": "no such route"}')
        if self.server.expected_key is not None and auth != f"Bearer {self.server.expected_key}":
            return self._send(401, b'{"error": "bad key"}')
        behaviour = self.server.next_behaviour()
        if behaviour == "500":
            # a careless server that echoes the request headers: the client must mask the key
            return self._send(500, f"internal error; request had Authorization: {auth}".encode(), "text/plain")
        if behaviour == "badjson":
            return self._send(200, b"{this is not json")
        if behaviour == "nochoices":
            return self._send(200, json.dumps({"object": "chat.completion", "choices": []}).encode())
        if behaviour == "slow":
            time.sleep(self.server.slow_s)
        content = "" if behaviour == "empty" else f"I saw {len(image_parts(payload))} images"
        answer = {"object": "chat.completion", "model": payload.get("model"),
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                               "finish_reason": "stop"}]}
        self._send(200, json.dumps(answer).encode())


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = ChatServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def colour(i: int) -> tuple[int, int, int]:
    return (20 * i % 256, 255 - 20 * i % 256, 100)


def make_request(n: int = 10, start: int = 100, h: int = 48, w: int = 64, source: str = "cam1") -> PerceptionRequest:
    """Frame i is a flat RGB ``colour(i)``, so a decoded image says which frame it was."""
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i] = colour(i)
    return PerceptionRequest(source_id=source, start_frame=start, end_frame=start + n - 1, fps=25.0, frames=frames)


def openai(server: ChatServer, **kwargs: Any) -> OpenAIBackend:
    kwargs.setdefault("api_key_env", KEY_ENV)
    return OpenAIBackend(server.base_url, kwargs.pop("model", "tiny-vlm"), **kwargs)


# --- OpenAIBackend --------------------------------------------------------------------------------

def test_perceive_sends_prompt_evenly_spaced_jpegs_and_settings(server: ChatServer) -> None:
    backend = openai(server, max_images=3, image_size=32, max_tokens=77, temperature=0.2)
    result = backend.perceive(make_request())

    assert result == Perception(text="I saw 3 images", evidence={"model": "tiny-vlm", "frames_sent": [100, 104, 109]},
                                backend="openai", start_frame=100, end_frame=109)
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions" and req["auth"] is None  # no key in the environment
    payload = req["json"]
    assert payload["model"] == "tiny-vlm" and payload["max_tokens"] == 77 and payload["temperature"] == 0.2
    content = payload["messages"][0]["content"]
    assert payload["messages"][0]["role"] == "user"
    assert content[0] == {"type": "text", "text": DEFAULT_DESCRIBE_PROMPT}
    parts = image_parts(payload)
    assert len(parts) == 3 == len(content) - 1
    for part, frame in zip(parts, [0, 4, 9]):
        url = part["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        jpeg = base64.b64decode(url.split(",", 1)[1])
        assert jpeg[:2] == b"\xff\xd8"  # a JPEG stream
        bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert bgr.shape == (24, 32, 3)  # long side 32, aspect kept
        rgb_mean = bgr[..., ::-1].reshape(-1, 3).mean(axis=0)
        np.testing.assert_allclose(rgb_mean, colour(frame), atol=4)  # that frame, in RGB order


def test_short_snippet_sends_every_frame_and_upscales(server: ChatServer) -> None:
    backend = openai(server, max_images=4, image_size=96, describe_prompt="What happens?")
    result = backend.perceive(make_request(n=2, start=7))
    assert result.text == "I saw 2 images" and result.evidence["frames_sent"] == [7, 8]
    payload = server.requests[0]["json"]
    assert payload["messages"][0]["content"][0]["text"] == "What happens?"
    for part in image_parts(payload):
        jpeg = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (72, 96, 3)


def test_complete_with_and_without_images(server: ChatServer) -> None:
    backend = openai(server)
    assert backend.reasons_in_text
    assert backend.complete("Is a person running normal here?") == "I saw 0 images"
    assert server.requests[0]["json"]["messages"][0]["content"] == "Is a person running normal here?"
    frames = make_request().frames
    assert backend.complete("Compare these.", [frames[0], frames[5]]) == "I saw 2 images"
    content = server.requests[1]["json"]["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "Compare these."} and len(image_parts(server.requests[1]["json"])) == 2


def test_api_key_is_sent_but_never_logged_or_shown(server: ChatServer, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, SECRET)  # read at call time: set after the backend would be built is fine too
    server.expected_key = SECRET
    backend = openai(server)
    assert backend.perceive(make_request()).text == "I saw 4 images"
    assert server.requests[-1]["auth"] == f"Bearer {SECRET}"

    server.script = ["500"]
    with pytest.raises(BackendError) as err:
        backend.perceive(make_request())
    assert "HTTP 500" in str(err.value) and "internal error" in str(err.value)
    assert SECRET not in str(err.value) and "Bearer ***" in str(err.value)  # masked in the echoed body
    assert SECRET in server.requests[-1]["auth"]

    wrapped = ResilientBackend(backend, retries=1, backoff_s=0)
    server.script = ["500", "500"]
    with pytest.raises(BackendError) as err:
        wrapped.perceive(make_request(source="cam2"))
    assert SECRET not in str(err.value)
    wrapped.close()

    monkeypatch.setenv(KEY_ENV, "wrong-key")
    with pytest.raises(BackendError, match="HTTP 401"):
        backend.complete("hello")

    assert any(r.name == "vad.explain.backends" for r in caplog.records)  # debug logging did happen
    for record in caplog.records:
        assert SECRET not in record.getMessage() and SECRET not in repr(record.args)
    assert SECRET not in caplog.text


@pytest.mark.parametrize(("behaviour", "message"), [
    ("500", "HTTP 500"),
    ("badjson", "not JSON"),
    ("nochoices", r"choices\[0\]\.message\.content"),
    ("empty", "empty answer"),
])
def test_bad_answers_raise_backend_error(server: ChatServer, behaviour: str, message: str) -> None:
    server.default = behaviour
    with pytest.raises(BackendError, match=message):
        openai(server).perceive(make_request())


def test_unreachable_server_and_wrong_route_raise_backend_error(server: ChatServer) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BackendError, match="cannot reach"):
        OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", timeout_s=2).complete("hi")
    with pytest.raises(BackendError, match="HTTP 404"):
        OpenAIBackend(server.base_url.replace("/v1", "/v2"), "m").complete("hi")


def test_socket_timeout_raises_backend_error(server: ChatServer) -> None:
    server.default = "slow"
    started = time.monotonic()
    with pytest.raises(BackendError, match="timed out after 0.3 s"):
        openai(server, timeout_s=0.3).perceive(make_request())
    assert time.monotonic() - started < 1.2 < server.slow_s


def test_resilient_times_out_and_retries_once(server: ChatServer) -> None:
    server.default = "slow"
    wrapped = ResilientBackend(openai(server, timeout_s=30), timeout_s=0.4, retries=1, backoff_s=0)
    started = time.monotonic()
    with pytest.raises(BackendError, match="timed out after 0.4 s"):
        wrapped.perceive(make_request())
    elapsed = time.monotonic() - started
    assert 0.8 <= elapsed < 0.8 + 1.0
    assert len(server.requests) == 2 and wrapped.calls == 2 and wrapped.failures == 1
    wrapped.close()


def test_resilient_retries_a_500_then_succeeds(server: ChatServer) -> None:
    server.script = ["500"]
    wrapped = ResilientBackend(openai(server), timeout_s=5, retries=1, backoff_s=0)
    assert wrapped.perceive(make_request()).text == "I saw 4 images"
    assert len(server.requests) == 2 and wrapped.calls == 2 and wrapped.failures == 0
    wrapped.close()


def test_resilient_cache_in_memory_and_on_disk(server: ChatServer, tmp_path: Path) -> None:
    request = make_request()
    first = ResilientBackend(openai(server), cache_dir=tmp_path, timeout_s=5, backoff_s=0)
    answer = first.perceive(request)
    assert first.perceive(request) == answer and len(server.requests) == 1  # memory
    first.close()

    fresh = ResilientBackend(openai(server), cache_dir=tmp_path, timeout_s=5, backoff_s=0)
    assert fresh.perceive(request) == answer and len(server.requests) == 1 and fresh.calls == 0  # disk
    fresh.perceive(make_request(start=500))
    assert len(server.requests) == 2  # another snippet is asked for
    fresh.close()

    # another prompt is another identity: its answers are not served from this cache
    other = ResilientBackend(openai(server, describe_prompt="Count the cars."), cache_dir=tmp_path, timeout_s=5)
    other.perceive(request)
    assert len(server.requests) == 3
    other.close()


def test_identity_names_server_model_and_prompt(server: ChatServer) -> None:
    a = openai(server)
    assert a.identity().startswith(f"openai:{server.base_url}:tiny-vlm:")
    assert a.identity() == openai(server).identity()
    assert a.identity() != openai(server, describe_prompt="Other.").identity()
    assert a.identity() != openai(server, model="bigger-vlm").identity()
    assert OpenAIBackend("http://h:1/v1/", "m").url == "http://h:1/v1/chat/completions"


# --- build_backend --------------------------------------------------------------------------------

def test_build_backend_checks_kind_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = build_backend("openai", {"base_url": "http://127.0.0.1:9/v1", "model": "m", "max_images": 2})
    assert isinstance(backend, OpenAIBackend) and backend.max_images == 2
    with pytest.raises(ValueError, match="bogus.*nonsense|nonsense.*bogus"):
        build_backend("openai", {"base_url": "http://x/v1", "model": "m", "bogus": 1, "nonsense": 2})
    with pytest.raises(ValueError, match="model"):
        build_backend("openai", {"base_url": "http://x/v1"})
    with pytest.raises(ValueError, match="pipeline"):
        build_backend("transformers", {"model": "x", "pipeline": object()})  # not a config option
    with pytest.raises(ValueError, match="unknown perception backend 'magic'.*openai.*transformers"):
        build_backend("magic", {})

    monkeypatch.setitem(BACKEND_BUILDERS, "fixed", lambda options: OpenAIBackend("http://h/v1", **options))
    assert build_backend("fixed", {"model": "m2"}).model == "m2"  # the table is the extension point


def test_module_imports_without_transformers() -> None:
    code = ("import sys; sys.modules['transformers'] = None\n"
            "from vad.explain.backends import OpenAIBackend, TransformersBackend, BackendError\n"
            "OpenAIBackend('http://h/v1', 'm')\n"
            "try:\n    TransformersBackend(model='some/model')\nexcept BackendError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "transformers" in out.stdout


# --- TransformersBackend with tiny random-weight models ------------------------------------------

WORDS = "a the person people car bag dog walks runs stands street road red blue near".split()


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA (CLIP vision tower, Llama text model) with a chat template, saved to a folder."""
    pytest.importorskip("transformers")
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(
        special_tokens=["<unk>", "<pad>", "<s>", "</s>", "<image>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", extra_special_tokens={"image_token": "<image>"})
    template = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
                "{% if add_generation_prompt %}assistant:{% endif %}")
    processor = LlavaProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 28},
                                                                     crop_size={"height": 28, "width": 28}),
                               tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=template)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=28, patch_size=14),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                                pad_token_id=1, bos_token_id=2, eos_token_id=3),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-1)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_vlm")
    LlavaForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_captioner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BLIP captioning model with a word-piece tokenizer, saved to a folder."""
    pytest.importorskip("transformers")
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil,
                              BlipProcessor)

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    config = BlipConfig(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, encoder_hidden_size=16, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=2, sep_token_id=3, eos_token_id=3),
        projection_dim=16, image_text_hidden_size=16)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_captioner")
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_transformers_vlm_perceives_and_completes(tiny_vlm: Path) -> None:
    backend = TransformersBackend(model=str(tiny_vlm), device="cpu", max_new_tokens=6)
    assert backend.task == "image-text-to-text" and backend.reasons_in_text
    request = make_request(n=9, start=40)
    result = backend.perceive(request)
    assert isinstance(result, Perception) and isinstance(result.text, str)
    assert result.backend == "transformers" and (result.start_frame, result.end_frame) == (40, 48)
    assert result.evidence == {"model": str(tiny_vlm), "frames_sent": [44]}  # the middle frame
    assert backend.perceive(request).text == result.text  # greedy: the same answer again
    assert isinstance(backend.complete("is the person near the car", [request.frames[0]]), str)
    assert isinstance(backend.complete("the person walks"), str)  # text-only prompt
    assert backend.identity().startswith(f"transformers:{tiny_vlm}:image-text-to-text:")

    wrapped = ResilientBackend(backend, timeout_s=60, retries=0)
    assert wrapped.perceive(request) == result
    wrapped.close()


def test_transformers_captioner_describes_but_does_not_reason(tiny_captioner: Path) -> None:
    backend = build_backend("transformers", {"model": str(tiny_captioner), "task": "image-to-text",
                                             "device": "cpu", "max_new_tokens": 5,
                                             "model_kwargs": {"local_files_only": True}})
    assert isinstance(backend, TransformersBackend) and not backend.reasons_in_text
    assert not ResilientBackend(backend).reasons_in_text
    result = backend.perceive(make_request())
    assert isinstance(result.text, str) and result.backend == "transformers"
    with pytest.raises(BackendError, match="does not reason in text"):
        backend.complete("what is unusual?")


def test_transformers_injected_pipeline(tiny_vlm: Path) -> None:
    from transformers import AutoProcessor, LlavaForConditionalGeneration, pipeline

    pipe = pipeline("image-text-to-text", model=LlavaForConditionalGeneration.from_pretrained(tiny_vlm),
                    processor=AutoProcessor.from_pretrained(tiny_vlm), device="cpu")
    backend = TransformersBackend(pipeline=pipe, max_new_tokens=4)
    assert backend.task == "image-text-to-text"
    result = backend.perceive(make_request())
    assert isinstance(result.text, str) and result.backend == "transformers"


def test_transformers_failures_become_backend_errors(tiny_vlm: Path, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="cannot load"):
        TransformersBackend(model=str(tmp_path / "missing"), model_kwargs={"local_files_only": True})
    # a chat VLM run as a captioner gets no image token in its text: the processor's error is reported
    backend = TransformersBackend(model=str(tiny_vlm), task="image-to-text", device="cpu", max_new_tokens=3)
    with pytest.raises(BackendError, match="transformers backend"):
        backend.perceive(make_request())
    with pytest.raises(ValueError, match="exactly one"):
        TransformersBackend()
    with pytest.raises(ValueError, match="task"):
        TransformersBackend(model=str(tiny_vlm), task="fill-mask")
