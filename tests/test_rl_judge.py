"""The judge reward against a stub OpenAI-compatible server on 127.0.0.1 that the test starts and stops."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from armkit.recipes.rl.judge import JudgeError, JudgeReward
from armkit.recipes.rl.reward import WeightedSum


class Stub:
    """Answers POST /v1/chat/completions; `script` says what the next requests get (status, reply or delay)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.script: list[tuple] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.bodies.append(body)
                stub.headers.append(dict(self.headers))
                status, text, delay = stub.script.pop(0) if stub.script else (200, "7", 0.0)
                time.sleep(delay)
                if self.path != "/v1/chat/completions":
                    status = 404
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def stub():
    s = Stub()
    s.thread.start()
    yield s
    s.server.shutdown()
    s.server.server_close()
    s.thread.join(timeout=5)


def test_judge_scores_retries_and_caches(stub, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    judge = JudgeReward(url=stub.url, model="tiny-vlm", api_key_env="JUDGE_KEY", timeout=5, retries=2, backoff=0.01,
                        cache_dir=str(tmp_path / "cache"))
    images = torch.rand(2, 3, 8, 8)
    stub.script = [(500, "oops", 0.0), (200, "Score: 8.5 / 10", 0.0), (200, "I'd say 3", 0.0)]
    got = judge(images, ["a red circle", "a blue square"])
    assert got.tolist() == pytest.approx([0.85, 0.3])
    assert judge.requests == 3 and len(stub.bodies) == 3  # one retry after the 500
    body = stub.bodies[1]
    assert body["model"] == "tiny-vlm" and body["temperature"] == 0
    content = body["messages"][0]["content"]
    assert "a red circle" in content[0]["text"]
    png = base64.b64decode(content[1]["image_url"]["url"].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert stub.headers[1]["Authorization"] == "Bearer sk-test"
    # the same prompts and images again: answered from the on-disk cache, the endpoint is not called
    again = JudgeReward(url=stub.url, model="tiny-vlm", timeout=5, cache_dir=str(tmp_path / "cache"))
    assert again(images, ["a red circle", "a blue square"]).tolist() == pytest.approx([0.85, 0.3])
    assert again.requests == 0 and len(stub.bodies) == 3
    # editing sends the source first, then the edit; weights combine with other rewards
    total = WeightedSum(rewards={"judge": again}, weights={"judge": 2.0})
    stub.script = [(200, "10", 0.0)]
    assert total(images[:1], ["make it blue"], sources=torch.rand(1, 3, 8, 8)).tolist() == [2.0]
    assert len(stub.bodies[-1]["messages"][0]["content"]) == 3


def test_judge_times_out_and_gives_up_with_a_clear_error(stub):
    judge = JudgeReward(url=stub.url, model="m", api_key_env=None, timeout=0.2, retries=1, backoff=0.01)
    stub.script = [(200, "5", 1.0), (200, "no idea", 0.0)]
    with pytest.raises(JudgeError, match="2 attempt"):
        judge(torch.rand(1, 3, 8, 8), ["x"])
    assert "Authorization" not in stub.headers[0]
    bad = JudgeReward(url=stub.url, model="m", api_key_env=None, timeout=1, retries=3, backoff=0.01)
    stub.script = [(401, "bad key", 0.0)]
    with pytest.raises(JudgeError, match="HTTP 401"):
        bad(torch.rand(1, 3, 8, 8), ["x"])
    assert bad.requests == 1  # a client error is not retried
