#!/usr/bin/env bash
# Download the wheels the GPU machine lacks into .whl/ (git-ignored), for benchmarks/gpu.sh to install there.
#
#   bash benchmarks/carry_wheels.sh            # pip download into .whl/ (tens of MiB; needs the package index)
#   bash benchmarks/carry_wheels.sh --print    # only print the package list and the pip command (no network)
#   bash benchmarks/carry_wheels.sh --dir DIR  # another folder (default: .whl in the repository root)
#
# The device image (see the device tool's KINDS.md) has CUDA torch, lightning, timm, einops, accelerate, numpy ...
# but not armkit's other dependencies. The list is computed from this checkout's environment (.venv, else python3):
# the transitive requirements of armkit's core and train dependencies, at the versions installed here (the ones the
# tests ran with), minus what the device image already has. transformers, tokenizers, huggingface-hub, safetensors,
# hf-xet and timm are always carried: the code is tested against these versions. torch, torchvision, triton and the
# nvidia-*/cuda-* packages never are (the device's CUDA build stays). xformers is carried only when
# XFORMERS_VERSION is set (its wheel must match the device's torch, and it is large). Wheels are for CPython 3.12 on
# manylinux x86-64, as the device tool's README says; a package with no such wheel is built locally (pure Python).
# The carried tree is limited to 64 MiB per call: the script warns above 56 MiB.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$REPO/.whl"
PRINT=0
while [ $# -gt 0 ]; do
  case "$1" in
    --print) PRINT=1 ;;
    --dir) DEST="$2"; shift ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "carry_wheels.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi

mapfile -t PINS < <("$PY" - <<'EOF'
import importlib.metadata as md
import os
import re

from packaging.requirements import Requirement

ROOTS = ["vector-quantize-pytorch", "safetensors", "einops", "timm", "open-clip-torch", "jsonargparse",
         "docstring-parser", "typeshed-client", "diffusers", "webdataset", "gguf", "transformers", "tokenizers",
         "huggingface-hub", "hf-xet"]
ALWAYS = {"transformers", "tokenizers", "huggingface-hub", "safetensors", "hf-xet", "timm"}
NEVER = {"torch", "torchvision", "torchaudio", "triton", "xformers", "setuptools", "pip", "wheel"}
# on the device image (KINDS.md, read 2026-11-17)
DEVICE = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs build certifi
charset-normalizer click cloudpickle colorama contourpy coverage cycler cython einops filelock flatbuffers fonttools
frozenlist fsspec grpcio h11 h5py hf-xet httpcore httpx huggingface-hub idna imageio iniconfig jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities lxml markdown markdown-it-py markupsafe matplotlib mdurl ml-dtypes mpmath
msgpack multidict networkx ninja numpy onnx onnxruntime onnxscript opencv-python-headless packaging pandas pillow
pluggy protobuf psutil pyarrow pygments pyparsing pytest python-dateutil pytorch-lightning pyyaml regex requests rich
safetensors scikit-image scikit-learn scipy sentencepiece shellingham six sympy tensorboard tensorboard-data-server
threadpoolctl tifffile timm tokenizers toolz torch torchmetrics torchvision tqdm transformers triton typer
typing-extensions urllib3 werkzeug wrapt xxhash yarl zipp""".split())


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dist(name: str):
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        return None


seen: dict[str, str] = {}
todo = [norm(r) for r in ROOTS]
while todo:
    name = todo.pop()
    if name in seen or name in NEVER or name.startswith(("nvidia-", "cuda-")):
        continue
    d = dist(name)
    if d is None:
        continue  # not installed here: not needed on this platform
    seen[name] = d.version
    if name in DEVICE and name not in ALWAYS:
        continue  # the device has it, with what it needs
    for line in d.requires or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": "", "python_version": "3.12"}):
            continue
        todo.append(norm(req.name))
carried = sorted(n for n in seen if n in ALWAYS or n not in DEVICE)
xformers = os.environ.get("XFORMERS_VERSION")
for n in carried:
    print(f"{n}=={seen[n]}")
if xformers:
    print(f"xformers=={xformers}")
EOF
)

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
PIP=("$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
     "${PLATFORMS[@]}" -d "$DEST")
echo "packages to carry (${#PINS[@]}): ${PINS[*]}"
echo "command: ${PIP[*]} <each package>"
if [ "$PRINT" = 1 ]; then
  exit 0
fi
mkdir -p "$DEST"
for pin in "${PINS[@]}"; do
  name="${pin%%==*}"
  if ls "$DEST" 2>/dev/null | tr 'A-Z_' 'a-z-' | grep -q "^${name}-${pin#*==}-"; then
    continue  # already there
  fi
  if ! "${PIP[@]}" "$pin" >/dev/null; then
    echo "no binary wheel for $pin: building it here (pure Python)" >&2
    "$PY" -m pip wheel --no-deps -w "$DEST" "$pin" >/dev/null
  fi
done
size=$(du -sm "$DEST" | cut -f1)
echo "wrote $(ls "$DEST"/*.whl | wc -l) wheels, ${size} MiB, to $DEST"
if [ "$size" -gt 56 ]; then
  echo "warning: ${size} MiB of wheels: the device tool carries at most 64 MiB per call (tree included)" >&2
fi
