"""Tokenizer.save_pretrained / from_pretrained (tokenizer/hub.py): exact round trips, a referenced encoder checked by
sha256, tampered folders refused without executing anything, exported programs equal to eager."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from armkit.tokenizer import Tokenizer
from armkit.tokenizer.encoders import TimmEncoder
from armkit.tokenizer.hub import ExportError, from_pretrained, save_pretrained


def tiny_encoder(weights: str | None = None) -> TimmEncoder:
    return TimmEncoder("vit_tiny_patch16_224", image_size=32, weights=weights, model_kwargs={"depth": 1})


def tiny_tokenizer(encoder: TimmEncoder | None = None, **kw) -> Tokenizer:
    tok = Tokenizer(encoder=encoder or tiny_encoder(), levels=[8, 5, 5, 5], projection="mlp", **kw)
    with torch.no_grad():  # spread the down-projection so that many codes are used: equal indices then mean something
        tok.down[2].weight.mul_(20)
    return tok.eval()


def images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


class Touch:
    """Unpickling this creates `path`: proof that something was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    folder = tok.save_pretrained(tmp_path_factory.mktemp("export") / "tok")
    x = images()
    return folder, tok, x, tok.encode(x)


def copy_of(saved, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved[0], tmp_path / "copy"))


def test_round_trip_is_bit_identical(saved):
    folder, tok, x, indices = saved
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert len(torch.unique(indices)) > 4  # the comparison below is not between constant outputs
    torch.manual_seed(123)  # a different random init underneath: only the loaded weights can make them equal
    loaded = Tokenizer.from_pretrained(folder)
    assert not loaded.training
    assert torch.equal(loaded.encode(x), indices)
    assert torch.equal(loaded.embed(indices), tok.embed(indices))
    for key, value in tok.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert set(load_file(str(folder / "model.safetensors"))) == set(tok.state_dict())


def test_config_records_what_rebuilds_and_describes_it(saved):
    folder, tok, _, _ = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "armkit.tokenizer" and config["format_version"] == 1
    assert config["codebook_size"] == 8 * 5 * 5 * 5 and config["levels"] == [8, 5, 5, 5]
    assert config["num_tokens"] == 4 and config["grid"] == [2, 2] and config["image_size"] == [32, 32]
    enc = config["encoder"]
    assert enc["included"] and enc["mean"] == list(tok.encoder.mean) and enc["input_size"] == [32, 32]
    assert config["tokenizer"]["init_args"]["encoder"]["init_args"]["weights"] is None
    assert config["armkit_version"] not in ("", None)
    card = (folder / "README.md").read_text()
    assert "vit_tiny_patch16_224" in card and "unknown" in card and "see the weights' source" in card


def test_referenced_encoder_checks_sha256(tmp_path):
    donor = tiny_encoder()
    weights = tmp_path / "encoder.safetensors"
    save_file(donor.model.state_dict(), str(weights))
    tok = tiny_tokenizer(tiny_encoder(str(weights)))
    folder = save_pretrained(tok, tmp_path / "ref", include_encoder=False)
    config = json.loads((folder / "config.json").read_text())
    assert config["encoder"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert config["encoder"]["weights"] == str(weights) and not config["encoder"]["included"]
    assert not any(k.startswith("encoder.") for k in load_file(str(folder / "model.safetensors")))
    x = images()
    with pytest.raises(ExportError, match="followed only inside the export folder"):  # a path outside: not followed
        from_pretrained(folder)
    assert torch.equal(from_pretrained(folder, paths=[tmp_path]).encode(x), tok.encode(x))  # unless allowed
    assert torch.equal(from_pretrained(folder, encoder_weights=weights).encode(x), tok.encode(x))

    moved = folder / "encoder.safetensors"  # the recorded path is gone, a file of that name sits in the folder
    shutil.move(weights, moved)
    assert torch.equal(from_pretrained(folder).encode(x), tok.encode(x))

    changed = {k: v + 1e-3 for k, v in donor.model.state_dict().items()}
    save_file(changed, str(moved))
    with pytest.raises(ExportError, match="sha256"):
        from_pretrained(folder)
    moved.unlink()
    with pytest.raises(ExportError, match="not found"):
        from_pretrained(folder)


def test_reference_needs_a_weights_file_that_matches(tmp_path):
    with pytest.raises(ExportError, match="can only be included"):
        save_pretrained(tiny_tokenizer(), tmp_path / "a", include_encoder=False)
    weights = tmp_path / "encoder.safetensors"
    save_file(tiny_encoder().model.state_dict(), str(weights))
    tok = tiny_tokenizer(tiny_encoder(str(weights)))
    with torch.no_grad():
        tok.encoder.model.pos_embed.add_(1.0)  # the in-memory encoder is no longer the file's
    with pytest.raises(ExportError, match="pos_embed"):
        save_pretrained(tok, tmp_path / "b", include_encoder=False)


def rewrite(folder: Path, edit) -> None:
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"))


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.__setitem__("down.0.weight", torch.zeros(3, 3)), r"'down.0.weight' has shape \[3, 3\]"),
    (lambda s: s.pop("up.2.bias"), r"missing key\(s\) \['up.2.bias'\]"),
    (lambda s: s.__setitem__("extra.weight", torch.zeros(1)), r"unexpected key\(s\) \['extra.weight'\]"),
])
def test_tampered_tensors_name_the_key(saved, tmp_path, edit, match):
    folder = copy_of(saved, tmp_path)
    rewrite(folder, edit)
    with pytest.raises(ExportError, match=match):
        from_pretrained(folder)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_in_place_of_safetensors_is_never_unpickled(saved, tmp_path, writer):
    marker = tmp_path / "executed"
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Touch(probe)))  # the payload does run when unpickled...
    assert probe.exists()
    folder = copy_of(saved, tmp_path)
    target = folder / "model.safetensors"
    if writer == "pickle":
        target.write_bytes(pickle.dumps(Touch(marker), protocol=4))
    else:
        torch.save({"down.0.weight": Touch(marker)}, str(target))
    with pytest.raises(ExportError, match="never unpickles"):
        from_pretrained(folder)
    assert not marker.exists()  # ...but loading never ran it


@pytest.mark.parametrize("where", ["top", "encoder", "decoder"])
def test_config_naming_an_unknown_class_builds_nothing(saved, tmp_path, where):
    marker = tmp_path / "executed"
    folder = copy_of(saved, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    evil = {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}}
    if where == "top":
        config["tokenizer"] = evil
    else:
        config["tokenizer"]["init_args"][where] = evil
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="'os.system' is not allowed"):
        from_pretrained(folder)
    assert not marker.exists()


@pytest.mark.parametrize("change, match", [
    (lambda c: c["tokenizer"].update(class_path="armkit.tokenizer.quantizer.FSQQuantizer"), "not a Tokenizer"),
    (lambda c: c.update(format="something.else"), "not an armkit tokenizer export"),
    (lambda c: c.update(format_version=99), "newer"),
    (lambda c: c.update(codebook_size=7), "codebook_size=7"),
])
def test_inconsistent_config_is_refused(saved, tmp_path, change, match):
    folder = copy_of(saved, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match=match):
        from_pretrained(folder)


def test_missing_or_broken_files(saved, tmp_path):
    folder = copy_of(saved, tmp_path)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ExportError, match="not a valid safetensors"):
        from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ExportError, match="model.safetensors is missing"):
        from_pretrained(folder)
    (folder / "config.json").write_text("{")
    with pytest.raises(ExportError, match="not valid JSON"):
        from_pretrained(folder)
    with pytest.raises(ExportError, match="not a folder"):
        from_pretrained(tmp_path / "nowhere")


def test_exported_programs_equal_eager_at_another_batch_size_and_are_never_loaded(tmp_path):
    """encode/embed/decode as torch.export programs and ONNX graphs, run at batch 5 (exported at 2, checked at 3)."""
    import onnxruntime

    from armkit.decoders.dit import PixelDiT

    tok = tiny_tokenizer(decoder=PixelDiT(image_size=16, patch_size=8, cond_dim=192, size="tiny"))
    with torch.no_grad():  # adaLN-zero starts at zero: make the decode depend on the weights and on Z
        for p in tok.decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = save_pretrained(tok, tmp_path / "tok", graphs={"steps": 2, "onnx": True})
    config = json.loads((folder / "config.json").read_text())
    assert [config["graphs"][k]["file"] for k in ("encode", "embed", "decode")] == [
        "encode.pt2", "embed.pt2", "decode.pt2"]
    card = (folder / "README.md").read_text()
    assert "| `decode.pt2` | **code** (torch.export program)" in card and "| `config.json` | data (JSON)" in card

    x = images(5, seed=7)
    indices = tok.encode(x)
    assert len(torch.unique(indices)) > 1
    noise = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    z = tok.embed(indices)
    want = tok.decoder.sample(z, steps=2, noise=noise)
    program = {k: torch.export.load(str(folder / f"{k}.pt2")).module() for k in ("encode", "embed", "decode")}
    assert torch.equal(program["encode"](x), indices)
    torch.testing.assert_close(program["embed"](indices), z)
    torch.testing.assert_close(program["decode"](indices, noise), want)

    def ort(name, *inputs):
        session = onnxruntime.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
        return torch.from_numpy(session.run(None, feeds)[0])

    assert torch.equal(ort("encode", x), indices)
    torch.testing.assert_close(ort("decode", indices, noise), want, atol=1e-4, rtol=1e-4)

    marker = tmp_path / "executed"
    (folder / "encode.pt2").write_bytes(pickle.dumps(Touch(marker)))
    assert torch.equal(from_pretrained(folder).encode(x), indices)
    assert not marker.exists()


def test_pixel_dit_decoder_round_trip(tmp_path):
    from armkit.decoders.dit import PixelDiT

    decoder = PixelDiT(image_size=32, patch_size=8, cond_dim=192, size="tiny")
    tok = tiny_tokenizer(decoder=decoder)
    with torch.no_grad():  # adaLN-zero starts at zero: make the decoder's output depend on its weights and on Z
        for p in tok.decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tok.save_pretrained(tmp_path / "dit")
    loaded = Tokenizer.from_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["decoder"]["class_path"] == "armkit.decoders.dit.PixelDiT"
    indices = tok.encode(images(2))
    out = tok.decode(indices, steps=2, generator=torch.Generator().manual_seed(0))
    again = loaded.decode(indices, steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 32, 32) and torch.equal(out, again)


@pytest.mark.slow  # diffusers takes seconds to import
def test_latent_dit_export_needs_no_vae_folder(tmp_path):
    from diffusers import AutoencoderKL

    from armkit.decoders.latent import LatentDiT

    vae_dir = tmp_path / "vae"
    AutoencoderKL(block_out_channels=[8, 8], down_block_types=["DownEncoderBlock2D"] * 2,
                  up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=4,
                  layers_per_block=1, sample_size=32).save_pretrained(vae_dir)
    decoder = LatentDiT(vae_path=str(vae_dir), image_size=32, patch_size=2, cond_dim=192, size="tiny")
    tok = tiny_tokenizer(decoder=decoder)
    folder = tok.save_pretrained(tmp_path / "latent")
    shutil.rmtree(vae_dir)  # the VAE's weights are in model.safetensors, its config in config.json
    loaded = Tokenizer.from_pretrained(folder)
    indices = tok.encode(images(2))
    out = tok.decode(indices, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.decode(indices, steps=2, generator=torch.Generator().manual_seed(0)), out)
