#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md (GPU section) in one short run, sized for a 15-minute
# lease of one H200 with its start-up: about 5 minutes. Run from the repository root on a machine
# with CUDA, its own torch, transformers and trl (the project's pinned CPU torch is not installed):
#
#   PYTHONPATH=src benchmarks/gpu.sh [OUT_DIR]      # JSON per figure in OUT_DIR (default: $OUT or gpu-bench)
#
# Then the tests marked gpu. Each step has its own time limit, so one slow step cannot eat the lease.
# A machine without network gets TRL, datasets and math-verify from .whl/ (`make gpu-wheels` here first).
set -uo pipefail
out=${1:-${OUT:-gpu-bench}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}/tmp/site
fi
step() {
  local name=$1 limit=$2; shift 2
  echo "== $name: rlvr-explore bench $*"
  local started=$SECONDS
  timeout "$limit" python3 -m rlvr_explore bench "$@" --device cuda --out "$out/$name.json" >/dev/null \
    || echo "!! $name stopped (exit $?)"
  echo "   $((SECONDS - started)) s"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# statistics against the floor: fp32 at T = 2,048 and 8,192 (and from Qwen2.5-0.5B's hidden states), bf16 at 8,192
step loss_fp32 90 loss --tokens 2048 8192 --repeats 5 --shape qwen2.5-0.5b
step loss_bf16 60 loss --tokens 8192 --dtype bfloat16 --repeats 5
# the sampler against generate, Qwen2.5-0.5B's shape in bf16, 256 new tokens, 64 and 256 prompts
step rollout 150 rollout --shape qwen2.5-0.5b --dtype bfloat16 --prompts 64 256 --new-tokens 256 --repeats 2
# one GRPO step against TRL's GRPOTrainer with its defaults: 8 layers of that shape, 16 x 8 completions of 128 tokens;
# beside it the TRL subclass with GRPO and with CaSP (its statistics through the kernels), and the model's own work
step trainer 180 trainer --shape qwen2.5-0.5b --layers 8 --completions 128 --group 8 --new-tokens 128 --steps 2 --repeats 1
echo "== tests marked gpu"
timeout 120 python3 -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tail -5 | tee "$out/gpu_tests.txt"
