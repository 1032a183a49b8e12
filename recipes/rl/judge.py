"""A judge reward: asks an OpenAI-compatible chat endpoint (a local VLM server, or a hosted judge as ARM's GPT-o3 /
GPT-4.1) to score each image, with timeouts, retries with backoff, and an on-disk cache.

Request: POST {url}/chat/completions with one user message holding the question (the template filled with the
prompt) and the image(s) as PNG data URLs (editing: the source first, then the edit); temperature 0. The reply's
first number is the score, divided by `max_score` and clipped to [0, 1]. The cache key is a sha256 over the model,
the question and the PNG bytes, so a repeated (prompt, image) never calls the endpoint twice. Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch

from armkit.recipes.rl.reward import Reward

T2I_TEMPLATE = ("Rate how well the image matches the description \"{prompt}\" on a scale from 0 to 10. "
                "Answer with the number only.")
EDIT_TEMPLATE = ("The first image is the source, the second the result of the edit \"{prompt}\". Rate from 0 to 10 "
                 "how well the edit was carried out while keeping the rest. Answer with the number only.")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class JudgeError(RuntimeError):
    """The endpoint failed every retry, or never answered with a number."""


def png_bytes(image: torch.Tensor) -> bytes:
    """[3, H, W] in [0, 1] -> PNG bytes."""
    from PIL import Image

    array = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


class JudgeReward(Reward):
    """url: the endpoint's base (e.g. http://127.0.0.1:8000/v1); model: the name it serves; api_key_env: the
    environment variable holding the key (unset: no Authorization header); template / edit_template: the question
    ({prompt} is filled in); timeout: seconds per request; retries: extra attempts after the first (backoff doubles
    from `backoff` seconds); cache_dir: where answers are kept (None: no cache)."""

    def __init__(self, *, url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 template: str = T2I_TEMPLATE, edit_template: str = EDIT_TEMPLATE, max_score: float = 10.0,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 1.0, cache_dir: str | None = None) -> None:
        super().__init__()
        self.url, self.model, self.api_key_env = url.rstrip("/"), model, api_key_env
        self.template, self.edit_template, self.max_score = template, edit_template, float(max_score)
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.requests = 0  # calls made to the endpoint (not answered from the cache)

    def _post(self, body: dict) -> str:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(f"{self.url}/chat/completions", data=json.dumps(body).encode(),
                                         headers=headers, method="POST")
        errors = []
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.requests += 1
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    reply = json.loads(response.read().decode())
                text = reply["choices"][0]["message"]["content"]
                if NUMBER.search(text or ""):
                    return text
                errors.append(f"no number in the reply {text!r}")
            except urllib.error.HTTPError as e:
                errors.append(f"HTTP {e.code}")
                if e.code < 500 and e.code != 429:  # a bad request or key: retrying will not help
                    break
            except (urllib.error.URLError, TimeoutError, OSError, KeyError, IndexError, ValueError) as e:
                errors.append(f"{type(e).__name__}: {e}")
        raise JudgeError(f"judge {self.url} ({self.model}) failed after {len(errors)} attempt(s): {errors}")

    def _one(self, question: str, pngs: list[bytes]) -> float:
        digest = hashlib.sha256(json.dumps([self.model, question]).encode())
        for png in pngs:
            digest.update(png)
        cached = self.cache_dir / f"{digest.hexdigest()}.json" if self.cache_dir else None
        if cached is not None and cached.is_file():
            return float(json.loads(cached.read_text())["score"])
        content = [{"type": "text", "text": question}]
        content += [{"type": "image_url", "image_url": {"url": "data:image/png;base64," +
                                                        base64.b64encode(p).decode()}} for p in pngs]
        text = self._post({"model": self.model, "temperature": 0,
                           "messages": [{"role": "user", "content": content}]})
        score = min(max(float(NUMBER.search(text).group()) / self.max_score, 0.0), 1.0)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            tmp.write_text(json.dumps({"score": score, "reply": text}))
            tmp.replace(cached)
        return score

    def score(self, images, prompts, sources=None, targets=None) -> torch.Tensor:
        out = []
        for i, (image, prompt) in enumerate(zip(images, prompts)):
            template = self.template if sources is None else self.edit_template
            pngs = [png_bytes(image)] if sources is None else [png_bytes(sources[i]), png_bytes(image)]
            out.append(self._one(template.format(prompt=prompt), pngs))
        return torch.tensor(out)
