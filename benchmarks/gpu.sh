#!/usr/bin/env bash
# The GPU benchmarks in one script: the tokenizer's training-step MFU at the paper's shapes and the AR stage's
# generation at a paper-like size, each writing benchmarks/results/gpu-*.json (or --out-dir).
#
#   bash benchmarks/gpu.sh --dry-run          # on a CPU: checks what it can in well under a minute (no GPU, no network)
#   bash benchmarks/carry_wheels.sh           # here, once: the wheels the GPU machine lacks, into .whl/ (git-ignored)
#   bash benchmarks/gpu.sh --out-dir "$OUT"   # on the GPU machine, from the repository root (.whl carried along)
#
# Options: --out-dir DIR (default benchmarks/results), --only mfu|ar (repeatable; default both), --wheels DIR
# (default .whl), --batch N (AR images at once, default 8), --mfu-batch N (default: the recipe's), --smoke (tiny sizes
# on the GPU: checks the install and the CUDA paths in about a minute), --dry-run.
#
# What runs on the GPU (PYTHON, default python3: the device image's CUDA torch):
#   mfu.py          recipes/tokenizer/paper.yaml at random init, bf16 autocast (FSQ stays fp32 under autocast:
#                   tokenizer/quantizer.py), torch.compile off and on, SDPA and xformers (skipped, with the reason,
#                   when xformers is not importable)                                       -> gpu-mfu.json
#   ar_generate.py  preset qwen2.5-0.5b, cuda, bfloat16, 256 and 1,024 image tokens, full and factorized heads, KV
#                   cache against recomputation, CFG, compiled decode, transformers' generate(), GRPO rollout
#                                                                                          -> gpu-ar-generate.json
#   plus gpu-env.json (GPU, versions, git commit) and gpu.log.
# The device image lacks armkit's other dependencies: the wheels in --wheels are installed with
# `pip install --no-index --no-deps --target` into a temporary folder put first on PYTHONPATH, and armkit is imported
# from this checkout through a link named `armkit` (the repository root is the package).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
DRY=0 SMOKE=0 OUT_DIR="" WHEELS="$REPO/.whl" BATCH=8 MFU_BATCH="" ONLY=()
usage() { sed -n '2,12p' "${BASH_SOURCE[0]}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --smoke) SMOKE=1 ;;
    --out-dir) OUT_DIR="${2:?--out-dir needs a folder}"; shift ;;
    --only) case "${2:-}" in mfu|ar) ONLY+=("$2") ;; *) echo "gpu.sh: --only takes mfu or ar" >&2; exit 2 ;; esac
            shift ;;
    --wheels) WHEELS="${2:?--wheels needs a folder}"; shift ;;
    --batch) BATCH="${2:?}"; shift ;;
    --mfu-batch) MFU_BATCH="${2:?}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for n in "$BATCH" ${MFU_BATCH:+"$MFU_BATCH"}; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "gpu.sh: batch sizes must be positive integers, got $n" >&2; exit 2; }
done
[ ${#ONLY[@]} -eq 0 ] && ONLY=(mfu ar)
wants() { [[ " ${ONLY[*]} " == *" $1 "* ]]; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
if [ -z "$OUT_DIR" ]; then
  if [ "$DRY" = 1 ]; then OUT_DIR="$TMP/results"; else OUT_DIR="$REPO/benchmarks/results"; fi
fi
mkdir -p "$OUT_DIR"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ "$DRY" = 1 ] && [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi

# armkit from this checkout (the repository root is the package), the carried wheels first on the path
mkdir -p "$TMP/link" && ln -s "$REPO" "$TMP/link/armkit"
SITE="$TMP/site"
if [ "$DRY" = 0 ]; then
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$WHEELS"/*.whl || { echo "gpu.sh: installing the wheels failed" >&2; exit 1; }
  else
    echo "gpu.sh: no wheels in $WHEELS: armkit's dependencies must already be installed" \
         "(bash benchmarks/carry_wheels.sh, then carry .whl)" >&2
  fi
fi
export PYTHONPATH="$SITE:$TMP/link:$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

if [ "$DRY" = 1 ]; then DEVICE=cpu; else DEVICE=cuda; fi
"$PY" - "$OUT_DIR/gpu-env.json" "$DEVICE" <<'EOF' || exit 1
import json, sys
import torch, transformers
import armkit
from armkit.recipes.evaluation.provenance import git_state, package_versions
path, device = sys.argv[1], sys.argv[2]
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu.sh: torch sees no CUDA device (use --dry-run on a CPU)")
env = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)", "python": sys.version,
       "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
       "armkit": armkit.__file__, "git": git_state(), "versions": package_versions()}
open(path, "w").write(json.dumps(env, indent=2) + "\n")
print(f"environment: {env['device']}, torch {env['torch']}, transformers {env['transformers']}, git {env['git']}")
EOF

FAILED=()
step() {  # step NAME COMMAND...: run it, log it, keep going on failure
  local name="$1"; shift
  echo; echo "== $name: $*"
  local start=$SECONDS
  if "$@"; then echo "== $name: ok ($((SECONDS - start)) s)"; else echo "== $name: FAILED ($((SECONDS - start)) s)"; FAILED+=("$name"); fi
}
{
if [ "$DRY" = 1 ]; then
  step "carry_wheels --print" bash benchmarks/carry_wheels.sh --print
  step "mfu --help" "$PY" benchmarks/mfu.py --help
  step "ar_generate --help" "$PY" benchmarks/ar_generate.py --help
  echo; echo "on the GPU this would run (see --help):"
fi
MFU=("$PY" benchmarks/mfu.py --config recipes/tokenizer/paper.yaml --device cuda --precision bf16 --compile off on
     --attention sdpa xformers --repeats 5 ${MFU_BATCH:+--batch-size "$MFU_BATCH"} --out "$OUT_DIR/gpu-mfu.json")
AR=("$PY" benchmarks/ar_generate.py --preset qwen2.5-0.5b --device cuda --dtype bfloat16 --batch "$BATCH"
    --tokens 256 1024 --heads full factorized --compile --repeats 1 --rollout-prompts 4 --group-size 8
    --rollout-tokens 256 --out "$OUT_DIR/gpu-ar-generate.json")
if [ "$DRY" = 1 ] || [ "$SMOKE" = 1 ]; then  # tiny sizes: on the CPU for --dry-run, on the GPU for --smoke
  [ "$DRY" = 1 ] && echo "  ${MFU[*]}" && echo "  ${AR[*]}"
  MFU=("$PY" benchmarks/mfu.py --config recipes/tokenizer/tiny.yaml --device "$DEVICE" --precision bf16
       --compile off --attention sdpa xformers --batch-size 1 --repeats 1 --peak-size 64
       --out "$OUT_DIR/gpu-mfu.json")
  AR=("$PY" benchmarks/ar_generate.py --quick --device "$DEVICE" --skip heads --tokens 4 --rollout-tokens 4
      --out "$OUT_DIR/gpu-ar-generate.json")
  [ "$SMOKE" = 1 ] && AR+=(--compile)
fi
if [ "$DRY" = 1 ] && wants mfu && wants ar; then  # on the CPU the two tiny runs overlap, one thread each
  OMP_NUM_THREADS=1 step mfu "${MFU[@]}" > "$TMP/mfu.log" 2>&1 &
  OMP_NUM_THREADS=1 step ar_generate "${AR[@]}"
  wait
  cat "$TMP/mfu.log"
else
  wants mfu && step mfu "${MFU[@]}"
  wants ar && step ar_generate "${AR[@]}"
fi
if wants ar; then
  step "check gpu-ar-generate.json" "$PY" - "$OUT_DIR/gpu-ar-generate.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
missing = [k for k in ("kv_speedup_1024", "overhead_vs_hf_generate", "images_per_s", "grpo_rollout_images_per_s")
           if k not in r]
assert not missing, f"missing keys {missing}"
assert r["protocol"]["git"] and r["protocol"]["git"]["commit"], "no protocol.git.commit"
print({k: r[k] for k in ("kv_speedup_1024", "overhead_vs_hf_generate", "images_per_s", "grpo_rollout_images_per_s")})
EOF
fi
if wants mfu; then
  step "check gpu-mfu.json" "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print([(x['compile'], x['attention'], x['status']) for x in r['rows']]); assert any(x['status']=='ok' for x in r['rows'])" "$OUT_DIR/gpu-mfu.json"
fi
} 2>&1 | tee "$OUT_DIR/gpu.log"
status=${PIPESTATUS[0]}
if grep -q "^== .*: FAILED" "$OUT_DIR/gpu.log"; then
  echo "gpu.sh: failed: $(grep '^== .*: FAILED' "$OUT_DIR/gpu.log" | sed 's/^== \(.*\): FAILED.*/\1/' | paste -sd, -)" >&2
  exit 1
fi
echo "gpu.sh: done; results in $OUT_DIR: $(ls "$OUT_DIR" | paste -sd' ' -)"
exit "$status"
