"""A judge reward: asks an OpenAI-compatible chat endpoint (a local VLM server, or a hosted judge as ARM's GPT-o3 /
GPT-4.1) to score each image, with a deadline, bounded retries with backoff, and an on-disk cache.

Request: POST {url}/chat/completions with one user message holding the question (the template filled with the
prompt) and the image(s) as PNG data URLs (editing: the source first, then the edit); temperature 0. The reply's
first number is the score, clipped to [0, max_score] and divided by it, so every score is finite and in [0, 1]. The
cache key is a sha256 over the model, the question and the PNG bytes, so a repeated (prompt, image) never calls the
endpoint twice. Standard library only.

The judge keeps its secrets and its numbers: redirects are never followed (a 3xx is an error, so the Authorization
header only ever goes to `url`'s host); each attempt has a wall-clock limit over connecting, sending, the headers and
the whole body (a server trickling bytes is cut off), and all attempts with their backoff fit in `deadline`; a
timeout, a 429/5xx, garbage, or a reply without a finite number is retried, a 4xx or 3xx is not, and every failure
ends as one `JudgeError` line. A cache entry that is not JSON, not a number, or not a finite score in [0, 1] is
ignored, counted (`cache_rejected`), warned about (`JudgeCacheWarning`) and refetched.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import math
import os
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

import torch

from armkit.recipes.rl.guards import RLHalt
from armkit.recipes.rl.reward import Reward

T2I_TEMPLATE = ("Rate how well the image matches the description \"{prompt}\" on a scale from 0 to 10. "
                "Answer with the number only.")
EDIT_TEMPLATE = ("The first image is the source, the second the result of the edit \"{prompt}\". Rate from 0 to 10 "
                 "how well the edit was carried out while keeping the rest. Answer with the number only.")
NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
MAX_REPLY_BYTES = 4 << 20  # a chat reply holding one number is a few hundred bytes
MAX_CACHE_BYTES = 1 << 20


class JudgeError(RLHalt):
    """The endpoint failed every retry within the deadline, or never answered with a finite number (one line)."""


class JudgeCacheWarning(UserWarning):
    """A cache entry was unreadable or held no finite score in [0, 1]; it is ignored and refetched."""


class _Stop(Exception):
    """An attempt that retrying will not mend (a 4xx, a redirect)."""


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def _line(text: object, limit: int = 160) -> str:
    """One short line (server text can hold newlines and be megabytes long)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def _positive(name: str, value: object, *, zero: bool = False) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        raise ValueError(f"JudgeReward: {name} must be a finite number {'>=' if zero else '>'} 0, got {value!r}")
    return number


def png_bytes(image: torch.Tensor) -> bytes:
    """[3, H, W] in [0, 1] -> PNG bytes."""
    from PIL import Image

    array = (image.detach().float().nan_to_num(0.0).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def parse_score(text: object, max_score: float) -> float:
    """A reply's first number, clipped to [0, max_score] and divided by it; ValueError when there is no finite one."""
    if not isinstance(text, str):
        raise ValueError(f"the reply's content is {type(text).__name__}, not text")
    match = NUMBER.search(text)
    if match is None:
        raise ValueError(f"no number in the reply {_line(repr(text), 80)}")
    value = float(match.group())
    if not math.isfinite(value):
        raise ValueError(f"the reply's number {match.group()[:40]!r} is not finite")
    return min(max(value, 0.0), max_score) / max_score


class JudgeReward(Reward):
    """url: the endpoint's base (e.g. http://127.0.0.1:8000/v1); model: the name it serves; api_key_env: the
    environment variable holding the key (unset: no Authorization header); template / edit_template: the question
    ({prompt} is filled in); max_score: the top of the judge's scale (finite, > 0); timeout: seconds per attempt,
    over connecting, sending and reading the whole reply; retries: extra attempts after the first (backoff doubles
    from `backoff` seconds); deadline: seconds for one score over all attempts and their backoff (default: enough
    for every attempt and backoff); cache_dir: where answers are kept (None: no cache)."""

    def __init__(self, *, url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 template: str = T2I_TEMPLATE, edit_template: str = EDIT_TEMPLATE, max_score: float = 10.0,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 1.0, deadline: float | None = None,
                 cache_dir: str | None = None) -> None:
        super().__init__()
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"JudgeReward: url must be http(s)://HOST[:PORT]/PATH, got {url!r}")
        if parts.username or parts.password:
            raise ValueError("JudgeReward: the url holds credentials; put the key in the variable api_key_env names")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"JudgeReward: retries must be an integer >= 0, got {retries!r}")
        self.url, self.model, self.api_key_env = url.rstrip("/"), model, api_key_env
        self.template, self.edit_template = template, edit_template
        self.max_score = _positive("max_score", max_score)
        self.timeout, self.retries = _positive("timeout", timeout), int(retries)
        self.backoff = _positive("backoff", backoff, zero=True)
        waits = sum(self.backoff * 2 ** i for i in range(self.retries))
        self.deadline = _positive("deadline", deadline) if deadline is not None else \
            self.timeout * (self.retries + 1) + waits
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self._scheme, self._host = parts.scheme, parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._path = (parts.path.rstrip("/") or "") + "/chat/completions"
        self.requests = 0  # attempts made to the endpoint (not answered from the cache)
        self.cache_rejected = 0  # cache entries ignored as unreadable or out of range, then refetched

    # -- one HTTP attempt, with a wall-clock limit over all of it -----------------------------------------------------
    def _connection(self, limit: float) -> tuple[http.client.HTTPConnection, str]:
        """A connection to the endpoint (through the environment's proxy, if any) and the request target."""
        proxy = None if urllib.request.proxy_bypass(self._host) else urllib.request.getproxies().get(self._scheme)
        target = f"{self._host}:{self._port}"
        if self._scheme == "https":
            import ssl

            if proxy:
                p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
                conn = http.client.HTTPSConnection(p.hostname, p.port or 80, timeout=limit,
                                                   context=ssl.create_default_context())
                conn.set_tunnel(self._host, self._port)
            else:
                conn = http.client.HTTPSConnection(self._host, self._port, timeout=limit,
                                                   context=ssl.create_default_context())
            return conn, self._path
        if proxy:
            p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            return (http.client.HTTPConnection(p.hostname, p.port or 80, timeout=limit),
                    f"http://{target}{self._path}")
        return http.client.HTTPConnection(self._host, self._port, timeout=limit), self._path

    def _attempt(self, payload: bytes, headers: dict[str, str], limit: float) -> tuple[int, bytes, str]:
        """One POST -> (status, body, Location). Raises TimeoutError when the whole exchange (connect, send, headers,
        body) takes longer than `limit` seconds, however slowly the server trickles its bytes."""
        conn, target = self._connection(limit)
        box: dict = {}
        lock = threading.Lock()

        def work() -> None:
            try:
                conn.connect()
                with lock:
                    box["sock"] = conn.sock  # kept: http.client hands it to the response and forgets it
                    if box.get("abandoned"):
                        raise TimeoutError("abandoned")
                conn.request("POST", target, body=payload, headers=headers)
                response = conn.getresponse()
                chunks, size = [], 0
                while chunk := response.read1(65536):
                    size += len(chunk)
                    if size > MAX_REPLY_BYTES:
                        raise ValueError(f"the reply is longer than {MAX_REPLY_BYTES} bytes")
                    chunks.append(chunk)
                box["reply"] = (response.status, b"".join(chunks), response.getheader("Location") or "")
            except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread
                box["error"] = e

        worker = threading.Thread(target=work, name="armkit-judge", daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():  # cut the connection: the worker's blocked recv returns at once
            with lock:
                box["abandoned"] = True
                sock = box.get("sock")
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            conn.close()
            worker.join(1.0)
            raise TimeoutError(f"no complete reply within {limit:.3g}s")
        conn.close()
        if "error" in box:
            raise box["error"]
        return box["reply"]

    def _post(self, body: dict) -> tuple[float, str]:
        """(score in [0, 1], the reply's text) for one request; JudgeError after the retries or the deadline."""
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            if not key.isprintable():  # http.client would echo the bad header value in its error
                raise JudgeError(f"judge {self.url}: ${self.api_key_env} holds control characters (a newline?)")
            headers["Authorization"] = f"Bearer {key}"
        payload = json.dumps(body).encode()
        start = time.monotonic()
        errors: list[str] = []
        attempts = 0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(max(0.0, min(self.backoff * 2 ** (attempt - 1), self.deadline - (time.monotonic() - start))))
            left = self.deadline - (time.monotonic() - start)
            if left <= 0:
                errors.append(f"deadline of {self.deadline:.3g}s reached")
                break
            self.requests += 1
            attempts += 1
            try:
                status, raw, location = self._attempt(payload, headers, min(self.timeout, left))
                if 300 <= status < 400:
                    raise _Stop(f"HTTP {status} redirect to {_line(location, 80)!r} refused (the judge never follows "
                                "redirects)")
                if status == 429 or status >= 500:
                    errors.append(f"HTTP {status}")
                    continue
                if status != 200:
                    raise _Stop(f"HTTP {status}")
                reply = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
                text = reply["choices"][0]["message"]["content"]
                return parse_score(text, self.max_score), text
            except _Stop as e:  # a bad request, key or URL: retrying will not help
                errors.append(str(e))
                break
            except (OSError, TimeoutError, http.client.HTTPException, KeyError, IndexError, TypeError,
                    ValueError) as e:  # ValueError: not UTF-8, not JSON, no finite number
                errors.append(f"{type(e).__name__}: {_line(e, 120)}")
        raise JudgeError(f"judge {self.url} ({self.model}) failed after {attempts} attempt(s) in "
                         f"{time.monotonic() - start:.1f}s: {'; '.join(errors)}")

    # -- the cache ----------------------------------------------------------------------------------------------------
    def _cached(self, path: Path) -> float | None:
        """The cached score, or None when there is none or it is unusable (then counted and warned about)."""
        if not path.is_file():
            return None
        try:
            if path.stat().st_size > MAX_CACHE_BYTES:
                raise ValueError(f"larger than {MAX_CACHE_BYTES} bytes")
            entry = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
            score = entry["score"] if isinstance(entry, dict) else None
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise ValueError(f"score is {type(score).__name__}, not a number")
            if not (math.isfinite(score) and 0.0 <= score <= 1.0):
                raise ValueError(f"score {score!r} is not a finite number in [0, 1]")
            if entry.get("max_score", self.max_score) != self.max_score:
                return None  # scored on another scale: asked again (and overwritten)
            return float(score)
        except (OSError, ValueError, KeyError) as e:
            self.cache_rejected += 1
            warnings.warn(f"judge cache entry {path} ignored and refetched: {_line(e, 120)}", JudgeCacheWarning,
                          stacklevel=4)
            return None

    def _one(self, question: str, pngs: list[bytes]) -> float:
        digest = hashlib.sha256(json.dumps([self.model, question]).encode())
        for png in pngs:
            digest.update(png)
        cached = self.cache_dir / f"{digest.hexdigest()}.json" if self.cache_dir else None
        if cached is not None:
            score = self._cached(cached)
            if score is not None:
                return score
        content = [{"type": "text", "text": question}]
        content += [{"type": "image_url", "image_url": {"url": "data:image/png;base64," +
                                                        base64.b64encode(p).decode()}} for p in pngs]
        score, text = self._post({"model": self.model, "temperature": 0,
                                  "messages": [{"role": "user", "content": content}]})
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"score": score, "max_score": self.max_score, "reply": text[:1000]}))
            tmp.replace(cached)
        return score

    def score(self, images, prompts, sources=None, targets=None) -> torch.Tensor:
        out = []
        for i, (image, prompt) in enumerate(zip(images, prompts)):
            template = self.template if sources is None else self.edit_template
            pngs = [png_bytes(image)] if sources is None else [png_bytes(sources[i]), png_bytes(image)]
            out.append(self._one(template.format(prompt=prompt), pngs))
        scores = torch.tensor(out, dtype=torch.float32)
        if not bool(torch.isfinite(scores).all()) or bool((scores < 0).any() | (scores > 1).any()):
            raise JudgeError(f"judge {self.url} ({self.model}) produced scores outside [0, 1]: {scores.tolist()}")
        return scores
