"""Exports by hub id, offline: huggingface_hub's download and upload are replaced by a local folder, so these check
armkit's side (what is asked for, what is uploaded, that the downloaded folder loads like a local one)."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch

from armkit.tokenizer import Tokenizer
from armkit.tokenizer.encoders import TimmEncoder
from armkit.tokenizer.remote import is_repo_id


@pytest.fixture
def tok():
    encoder = TimmEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs={"depth": 1})
    tok = Tokenizer(encoder=encoder, levels=[8, 5, 5, 5], projection="mlp")
    with torch.no_grad():
        tok.down[2].weight.mul_(20)
    return tok.eval()


class FakeApi:
    """Records the calls push_to_hub makes and keeps a copy of the uploaded folder (it is a temporary one)."""

    calls: list = []
    store: Path

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, **kw):
        FakeApi.calls.append(("create_repo", kw))

    def upload_folder(self, *, folder_path, repo_id, commit_message):
        FakeApi.calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        shutil.copytree(folder_path, FakeApi.store / repo_id)
        return f"https://hub.example/{repo_id}/commit/1"


def test_push_then_load_by_hub_id(tok, tmp_path, monkeypatch):
    FakeApi.calls, FakeApi.store = [], tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    downloads = []

    def snapshot_download(*, repo_id, revision=None, cache_dir=None):
        downloads.append((repo_id, revision))
        return str(FakeApi.store / repo_id)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    url = tok.push_to_hub("mylab/tiny-tok", token="t0k")
    assert url == "https://hub.example/mylab/tiny-tok/commit/1"
    assert FakeApi.calls[0] == ("create_repo", {"repo_id": "mylab/tiny-tok", "private": True, "exist_ok": True})
    assert FakeApi.calls[1] == ("upload_folder", "mylab/tiny-tok", ["README.md", "config.json", "model.safetensors"])

    x = torch.rand(3, 3, 32, 32)
    loaded = Tokenizer.from_pretrained("mylab/tiny-tok", revision="main")
    assert downloads == [("mylab/tiny-tok", "main")]
    assert torch.equal(loaded.encode(x), tok.encode(x))


def test_a_local_folder_wins_over_a_hub_id_of_the_same_name(tok, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tok.save_pretrained(tmp_path / "mylab" / "tok")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kw: pytest.fail("went to the hub"))
    assert not is_repo_id("mylab/tok") and is_repo_id("mylab/other") and not is_repo_id("/abs/path")
    assert Tokenizer.from_pretrained("mylab/tok").codebook_size == tok.codebook_size
