"""benchmarks/gpu.sh --dry-run: on a CPU, the GPU script parses its arguments, lists the wheels to carry, runs each
benchmark's --help and a tiny CPU run of each, and checks their JSON (about 30 s on an idle 2-core machine; no
timing is asserted: speed belongs to benchmarks/, and a loaded machine must not fail the suite)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_dry_run(tmp_path):
    run = subprocess.run(["bash", "benchmarks/gpu.sh", "--dry-run", "--out-dir", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "FAILED" not in run.stdout
    assert "benchmarks/mfu.py --config recipes/tokenizer/paper.yaml --device cuda --precision bf16" in run.stdout
    assert "--preset qwen2.5-0.5b --device cuda --dtype bfloat16" in run.stdout
    ar = json.loads((tmp_path / "gpu-ar-generate.json").read_text())
    for key in ("kv_speedup_1024", "overhead_vs_hf_generate", "images_per_s", "grpo_rollout_images_per_s"):
        assert key in ar
    assert ar["protocol"]["git"]["commit"]
    mfu = json.loads((tmp_path / "gpu-mfu.json").read_text())
    assert [r["attention"] for r in mfu["rows"]] == ["sdpa", "xformers"]
    assert (tmp_path / "gpu-env.json").is_file() and (tmp_path / "gpu.log").is_file()


def test_gpu_script_arguments_and_wheel_list():
    bad = subprocess.run(["bash", "benchmarks/gpu.sh", "--only", "nothing"], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "--only takes mfu or ar" in bad.stderr
    listed = subprocess.run(["bash", "benchmarks/carry_wheels.sh", "--print"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    pins = listed.stdout.splitlines()[0].split(": ", 1)[1].split()
    names = {p.split("==")[0] for p in pins}
    assert {"transformers", "vector-quantize-pytorch", "safetensors"} <= names
    assert not names & {"torch", "torchvision", "triton"} and all("==" in p for p in pins)
    assert "--only-binary=:all: --python-version 3.12" in listed.stdout
