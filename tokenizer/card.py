"""The model card (README.md) of an exported tokenizer, in the Hugging Face style: YAML front matter, what the
tokenizer is, how to load it, data, metrics, licences, and which files are data and which are code."""

from __future__ import annotations

from typing import Any

CONFIG_NAME, WEIGHTS_NAME, HEADS_NAME = "config.json", "model.safetensors", "heads.safetensors"


def render_card(config: dict, card: dict) -> str:
    """README.md: what the tokenizer is, how to load it, data, metrics, licences, files."""
    enc = config["encoder"]
    enc_args = (config["tokenizer"]["init_args"].get("encoder") or {}).get("init_args") or {}
    name = enc_args.get("model_name") or enc["class_path"].rsplit(".", 1)[-1]
    decoder = config.get("decoder")
    weights = ("included in model.safetensors" if enc["included"] else
               f"referenced: `{enc.get('weights')}` (sha256 `{enc.get('sha256')}`), not in this folder")
    lines = [
        *front_matter(config, card), "",
        f"# armkit tokenizer: {name}, FSQ {config['levels']}", "",
        (f"A discrete image tokenizer exported by armkit {config['armkit_version']}: frozen `{name}` encoder -> "
         "trained projection -> FSQ -> trained projection -> embeddings Z."), "",
        "| | |", "|---|---|",
        f"| encoder | `{name}` ({enc['class_path']}), input {enc['input_size']}, width {enc['width']} |",
        f"| normalisation | mean {enc['mean']}, std {enc['std']} (images in [0, 1] go in) |",
        f"| encoder weights | {weights} |",
        f"| FSQ levels | {config['levels']} x {config['num_codebooks']} codebook(s): {config['codebook_size']} codes |",
        f"| tokens | {config['num_tokens']} per image (grid {config['grid']}) |",
        f"| embedding width | {config['embed_dim']} |",
        f"| decoder | {decoder['class_path'] if decoder else 'none'} (images {config['image_size']}) |", "",
        "## Usage", "", "```python",
        "from armkit import Tokenizer  # pip install armkit (the small core is enough)", "",
        'tok = Tokenizer.from_pretrained("PATH/TO/THIS/FOLDER")  # or a hub id, with pip install "armkit[hub]"',
        "indices = tok.encode(images)  # images [B, 3, H, W] in [0, 1] -> [B, N] int64",
        "z = tok.embed(indices)        # -> [B, N, D]", "```", "",
        "## Training data", "", str(card.get("data") or "unknown"), "",
        "## Evaluation", "",
    ]
    metrics = card.get("metrics") or {}
    if metrics:
        lines += ["| metric | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in metrics.items()], ""]
    else:
        lines += ["No evaluation was recorded with this export.", ""]
    if card.get("source"):
        lines += ["## Source", "", str(card["source"]), ""]
    licenses = card.get("licenses") or {"encoder weights": "see the weights' source"}
    lines += ["## Licences", "", *[f"- {part}: {lic}" for part, lic in licenses.items()],
              "- trained weights in this folder: follow the terms of the training data and the encoder weights", ""]
    return "\n".join(lines + ["## Files", "", "| file | kind | what it is |", "|---|---|---|", *file_rows(config), ""])


def front_matter(config: dict, card: dict) -> list[str]:
    """Hugging Face model-card metadata."""
    licence = str(card.get("license") or "other")
    tags = ["image-tokenizer", "fsq", "armkit", "discrete-tokens"]
    return ["---", "library_name: armkit", f"license: {licence}", f"tags: [{', '.join(tags)}]",
            "pipeline_tag: image-feature-extraction", "---"]


def file_rows(config: dict) -> list[str]:
    """Each file in the folder, and whether it is data (read without executing anything) or code (a program)."""
    enc, decoder = config["encoder"], config.get("decoder")
    rows = [f"| `{CONFIG_NAME}` | data (JSON) | the spec that rebuilds the tokenizer, and its summary |",
            (f"| `{WEIGHTS_NAME}` | data (safetensors) | projections{', decoder' if decoder else ''}"
             f"{', encoder' if enc['included'] else ''} |")]
    if config.get("heads"):
        rows.append(f"| `{HEADS_NAME}` | data (safetensors) | trained loss heads; "
                    "`armkit.tokenizer.hub.load_heads(folder)` rebuilds them |")
    graphs = config.get("graphs") or {}
    for name in ("encode", "embed", "decode"):
        entry = graphs.get(name)
        if not entry:
            continue
        rows.append(f"| `{entry['file']}` | **code** (torch.export program) | {name}, dynamic batch; "
                    "`torch.export.load(path).module()`; load only from a source you trust |")
        onnx: dict[str, Any] = entry.get("onnx") or {}
        if onnx.get("file"):
            rows.append(f"| `{onnx['file']}` | **code** (ONNX graph) | {name}, dynamic batch; run with onnxruntime |")
    rows.append("| `README.md` | data (text) | this card |")
    return rows
