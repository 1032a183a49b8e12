"""The judge under a hostile or broken endpoint (local servers on 127.0.0.1 only): it never follows a redirect with
its key, every failure ends as one JudgeError within a bounded total time, scores are finite and in [0, 1] from the
server and from the cache, a corrupt cache entry is refetched; GRPO stops on a failing or non-finite reward and never
saves non-finite weights."""

from __future__ import annotations

import json
import math
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from armkit.recipes.rl.guards import NonFiniteError, RLHalt
from armkit.recipes.rl.judge import JudgeCacheWarning, JudgeError, JudgeReward
from armkit.recipes.rl.reward import Reward

KEY = "sk-secret-judge-key"


def chat(content) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


class Server:
    """POST answers from `script` (one entry per request, the last one repeats): a callable(handler) doing anything
    to the socket, or (status, body bytes, extra headers). Every request's path and headers are recorded."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []
        self.script: list = [(200, chat("7"), {})]
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.seen.append((self.path, dict(self.headers)))
                step = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                try:
                    if callable(step):
                        step(self)
                        return
                    status, body, extra = step
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)),
                                 **extra}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client hung up

            do_POST = do_GET = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def servers(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JUDGE_KEY", KEY)
    made: list[Server] = []

    def make() -> Server:
        made.append(Server())
        return made[-1]

    yield make
    for s in made:
        s.close()


def judge(url: str, **kw) -> JudgeReward:
    args = dict(model="m", api_key_env="JUDGE_KEY", timeout=0.5, retries=1, backoff=0.01)
    return JudgeReward(url=url, **{**args, **kw})


def image() -> torch.Tensor:
    return torch.rand(1, 3, 8, 8)


def within(seconds: float, fn, *args):
    """fn(*args) run in a thread: its exception or result, or a test failure (not a hang) past `seconds`."""
    box: dict = {}

    def work() -> None:
        try:
            box["result"] = fn(*args)
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"still waiting on the judge after {seconds}s: no deadline")
    if "error" in box:
        raise box["error"]
    return box["result"]


def test_a_redirect_to_another_port_never_carries_the_key(servers):
    judge_server, elsewhere = servers(), servers()
    judge_server.script = [(302, b"", {"Location": f"{elsewhere.url}/chat/completions"})]
    j = judge(judge_server.url, retries=3)
    with pytest.raises(JudgeError, match="redirect") as info:
        j(image(), ["x"])
    assert elsewhere.seen == []  # not followed at all, so the key never left for another host
    assert judge_server.seen[0][1]["Authorization"] == f"Bearer {KEY}"
    assert j.requests == 1  # a redirect is not retried
    assert KEY not in str(info.value) and "\n" not in str(info.value)
    for status in (301, 303, 307, 308):
        judge_server.script = [(status, b"", {"Location": f"{elsewhere.url}/chat/completions"})]
        with pytest.raises(JudgeError, match=f"HTTP {status} redirect"):
            j(image(), ["x"])
    assert elsewhere.seen == []


def trickle(handler) -> None:
    """Headers at once, then one byte every 50 ms of a 10 kB body: forever, as far as the client is concerned."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "10000")
    handler.end_headers()
    for _ in range(10000):
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(0.05)


def trickle_headers(handler) -> None:
    """The status line and headers themselves, one byte every 50 ms."""
    for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 10000:
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.05)


def hang(handler) -> None:
    time.sleep(5)


FAILURES = {
    "timeout": hang,
    "trickling body": trickle,
    "trickling headers": trickle_headers,
    "HTTP 500": (500, b"oops", {}),
    "HTTP 429": (429, b"slow down", {}),
    "non-JSON garbage": (200, b"\x00\xff<html>not json", {}),
    "truncated JSON": (200, chat("7")[:20], {}),
    "no choices": (200, b'{"choices": []}', {}),
    "missing content": (200, b'{"choices": [{"message": {}}]}', {}),
    "content null": (200, chat(None), {}),
    "content a number": (200, b'{"choices": [{"message": {"content": 7}}]}', {}),
    "content NaN literal": (200, b'{"choices": [{"message": {"content": NaN}}]}', {}),
    "score NaN": (200, chat("NaN"), {}),
    "score inf": (200, chat("inf"), {}),
    "score 1e999": (200, chat("1e999"), {}),
    "score a word": (200, chat("seven out of ten"), {}),
    "huge body": (200, b"[" * (5 << 20), {}),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_every_failure_ends_as_one_judge_error_within_the_deadline(servers, failure):
    s = servers()
    s.script = [FAILURES[failure]]
    j = judge(s.url, timeout=0.4, retries=2, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(JudgeError) as info:
        within(10, j, image(), ["x"])
    took = time.monotonic() - start
    assert took < 3 * 0.4 + 0.03 + 1.0, f"{failure}: {took:.2f}s"  # attempts x timeout + backoff, plus slack
    assert j.requests == 3  # every one of these is retried, and only `retries` times
    message = str(info.value)
    assert "\n" not in message and len(message) < 1000 and KEY not in message
    assert isinstance(info.value, RLHalt)


def test_the_deadline_bounds_all_attempts_together(servers):
    s = servers()
    s.script = [trickle]
    j = judge(s.url, timeout=10, retries=5, backoff=0.01, deadline=0.6)
    start = time.monotonic()
    with pytest.raises(JudgeError, match="attempt"):
        within(10, j, image(), ["x"])
    assert time.monotonic() - start < 0.6 + 1.0
    assert j.requests == 1


def test_a_key_with_a_newline_is_refused_without_echoing_it(servers, monkeypatch):
    s = servers()
    monkeypatch.setenv("JUDGE_KEY", KEY + "\r\nX-Injected: 1")
    with pytest.raises(JudgeError, match="control characters") as info:
        judge(s.url)(image(), ["x"])
    assert KEY not in str(info.value) and s.seen == []


def test_a_client_error_is_not_retried(servers):
    s = servers()
    s.script = [(401, b"bad key", {})]
    j = judge(s.url, retries=3)
    with pytest.raises(JudgeError, match="HTTP 401"):
        j(image(), ["x"])
    assert j.requests == 1


@pytest.mark.parametrize("reply, expected", [("15", 1.0), ("-3", 0.0), ("1e30", 1.0), ("Score: 8.5 / 10", 0.85),
                                             ("+2.5e0", 0.25), ("7", 0.7)])
def test_scores_are_clipped_to_the_scale(servers, reply, expected):
    s = servers()
    s.script = [(200, chat(reply), {})]
    got = judge(s.url)(image(), ["x"])
    assert got.dtype == torch.float32 and got.tolist() == pytest.approx([expected])


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "ten"])
def test_max_score_is_checked_when_the_judge_is_built(bad):
    with pytest.raises(ValueError, match="max_score"):
        JudgeReward(url="http://127.0.0.1:9/v1", model="m", max_score=bad)


@pytest.mark.parametrize("kw", [dict(timeout=0), dict(timeout=math.inf), dict(retries=-1), dict(backoff=math.nan),
                                dict(deadline=-1), dict(url="file:///etc/passwd"), dict(url="127.0.0.1:8000"),
                                dict(url="http://user:sk-key@127.0.0.1:9/v1")])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        JudgeReward(**{"url": "http://127.0.0.1:9/v1", "model": "m", **kw})


CORRUPT = {
    "not JSON": "{score: seven",
    "NaN": '{"score": NaN}',
    "infinity": '{"score": Infinity}',
    "1e30": '{"score": 1e30}',
    "negative": '{"score": -0.5}',
    "a string": '{"score": "0.9"}',
    "a bool": '{"score": true}',
    "a list": "[0.5]",
    "no score": '{"reply": "7"}',
    "not UTF-8": b"\xff\xfe\x00",
}


def test_a_corrupt_cache_entry_is_ignored_counted_and_refetched(servers, tmp_path):
    s = servers()
    s.script = [(200, chat("7"), {})]
    j = judge(s.url, cache_dir=str(tmp_path / "cache"))
    x = image()
    assert j(x, ["x"]).tolist() == pytest.approx([0.7])
    (entry,) = (tmp_path / "cache").glob("*.json")
    assert j(x, ["x"]).tolist() == pytest.approx([0.7]) and j.requests == 1  # from the cache
    for n, (name, text) in enumerate(CORRUPT.items(), 1):
        entry.write_bytes(text if isinstance(text, bytes) else text.encode())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = j(x, ["x"])
        assert got.tolist() == pytest.approx([0.7]), name  # refetched, never the corrupt number
        assert j.cache_rejected == n and j.requests == 1 + n, name
        assert any(issubclass(w.category, JudgeCacheWarning) and str(entry) in str(w.message) for w in caught), name
        assert json.loads(entry.read_text())["score"] == pytest.approx(0.7), name  # overwritten with the good one


# ---- GRPO: a failing or non-finite reward stops the run; non-finite weights are never saved -----------------------

TINY = dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2)


class ConstantReward(Reward):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def score(self, images, prompts, sources=None, targets=None):
        return torch.full((len(images),), self.value)


class FakeTokenizer:
    def decode(self, codes, steps, generator):
        return torch.rand(codes.shape[0], 3, 8, 8, generator=None)


def grpo(reward: Reward):
    from armkit.backbones.ar import ARModel
    from armkit.recipes.rl.module import GRPOModule

    model = ARModel(codebook_size=16, levels=[4, 4], config=TINY, max_grid=4, seed=1)
    module = GRPOModule(model=model, tokenizer="unused", reward=reward, group_size=2, top_k=0)
    module._tok = [FakeTokenizer()]
    module.optimizers = lambda: pytest.fail("an optimizer step was reached")  # type: ignore[method-assign]
    return module


def batch() -> dict:
    return {"samples": [{"caption": "a red circle", "grid": (2, 2), "codes": torch.zeros(4, dtype=torch.long)}]}


def test_grpo_stops_on_a_failing_judge_before_any_update(servers):
    s = servers()
    s.script = [(500, b"down", {})]
    module = grpo(judge(s.url, timeout=0.3, retries=1))
    with pytest.raises(JudgeError, match="HTTP 500"):
        module.training_step(batch(), 0)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_grpo_refuses_non_finite_rewards_before_any_update(value):
    with pytest.raises(NonFiniteError, match="rewards"):
        grpo(ConstantReward(value)).training_step(batch(), 0)


def test_grpo_refuses_to_save_non_finite_weights():
    module = grpo(ConstantReward(0.5))
    state = module.state_dict()
    module.on_save_checkpoint(checkpoint := {"state_dict": state})  # finite: saved as before
    assert "ar" in checkpoint["armkit"]
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone().fill_(math.nan)
    with pytest.raises(NonFiniteError, match=name.replace(".", r"\.")):
        module.on_save_checkpoint({"state_dict": state})


def test_armkit_train_prints_a_halted_rl_run_as_one_line(monkeypatch, capsys):
    from armkit.recipes.training import fit

    def failing(argv):
        try:
            raise JudgeError("judge http://127.0.0.1:9/v1 (m) failed after 2 attempt(s) in 0.1s: HTTP 500; HTTP 500")
        except JudgeError as e:
            raise RuntimeError("wrapped by lightning") from e

    monkeypatch.setattr(fit, "fit", failing)
    assert fit.run_fit(["--config", "x.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "HTTP 500" in err


def test_no_tmp_files_are_left_in_the_cache(servers, tmp_path):
    s = servers()
    judge(s.url, cache_dir=str(tmp_path / "c"))(torch.rand(3, 3, 8, 8), ["a", "b", "c"])
    assert sorted(p.suffix for p in Path(tmp_path / "c").iterdir()) == [".json"] * 3


def test_armkit_train_with_a_failing_judge_stops_in_one_line_and_saves_nothing(servers, tiny_shards, tmp_path,
                                                                                capsys):
    """The whole path: `armkit train` on the tiny RL recipe with its reward a judge that answers 500."""
    from test_ar_recipes import tiny_tokenizer

    from armkit.recipes.commands.cli import main

    s = servers()
    s.script = [(500, b"down", {})]
    tok = tiny_tokenizer(tmp_path / "tok", seed=0)
    assert main(["tokenize", "--tokenizer", str(tok), "--data", str(tiny_shards), "--out", str(tmp_path / "codes"),
                 "--batch-size", "16"]) == 0
    capsys.readouterr()
    reward = {"class_path": "armkit.recipes.rl.judge.JudgeReward",
              "init_args": {"url": s.url, "model": "m", "api_key_env": "JUDGE_KEY", "timeout": 0.3, "retries": 1,
                            "backoff": 0.01}}
    root = Path(__file__).resolve().parents[1]
    code = main(["train", "--config", str(root / "recipes" / "rl" / "tiny.yaml"),
                 f"--data.init_args.train={tmp_path / 'codes'}", f"--data.init_args.val={tmp_path / 'codes'}",
                 f"--model.init_args.tokenizer={tok}", f"--trainer.default_root_dir={tmp_path / 'run'}",
                 "--trainer.enable_progress_bar=false", f"--model.init_args.reward={json.dumps(reward)}"])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("INFO:")]  # Lightning's
    assert code == 2
    assert len(err) == 1 and "judge" in err[0] and "HTTP 500" in err[0] and KEY not in err[0], err
    assert s.seen and all(h["Authorization"] == f"Bearer {KEY}" for _, h in s.seen)
    assert not list((tmp_path / "run").rglob("*.ckpt"))  # nothing was saved
