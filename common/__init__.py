"""Plumbing shared by every armkit package (torch and safetensors only): `class_path` specs (`buildable`), frozen
parts (`freezable`), weight files that never unpickle code (`weights`) and the asset cache lookup (`cache`).

`tokenizer/`, `decoders/`, `backbones/` and `recipes/` all import from here; nothing here imports them.
"""
