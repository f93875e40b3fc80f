#!/usr/bin/env bash
# The GPU checks, in one run on a machine with a CUDA device: the CUDA tests, then the GPU benchmarks.
# Each step has its own time limit and log in OUTDIR, so one failure does not hide the rest.
#
#   bash bench/gpu_checks.sh OUTDIR                      # every step
#   STEPS="tests attention" bash bench/gpu_checks.sh OUTDIR   # some (install always runs)
#
# The machine needs torch with CUDA and pytest. Wheels of packages it lacks (webdataset, braceexpand, av: no
# registry may be reachable there) can wait in .whl/; vidmill itself is installed editable with no index.
# Ray, DuckDB, boto3 and the curation stack are not needed: the tests that use them (curated fixtures, Ray Train,
# two gloo ranks, background evaluation) are left out; the CPU suite runs them.
set -u
out=${1:-gpu-out}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to OUTDIR/NAME.log, print the tail
  local name=$1 limit=$2
  shift 2
  [[ " ${STEPS:-all} " == *" all "* || " ${STEPS:-all} " == *" $name "* ]] || return 0
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc $rc in $((SECONDS - start)) s"
  tail -n "${TAIL:-25}" "$out/$name.log"
}

if compgen -G ".whl/*.whl" >/dev/null; then
  $py -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/vidmill-site .whl/*.whl \
    && export PYTHONPATH=/tmp/vidmill-site${PYTHONPATH:+:$PYTHONPATH}
fi
STEPS=all step install 120 $py -m pip install --no-index --no-deps --no-build-isolation -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
$py -c "import flash_attn" 2>/dev/null && echo "flash-attn present" || echo "flash-attn not installed"

# the CUDA tests, then the model and training suites on CUDA (the trainer and sampler pick the GPU)
TAIL=40 step tests "${TEST_LIMIT:-200}" $py -m pytest -q -ra -p no:cacheprovider --timeout 200 --durations=10 \
  tests/training/test_cuda.py tests/model tests/training -k "not ray and not two_ranks" \
  --ignore tests/training/test_latents.py --ignore tests/training/test_train_curated.py \
  --ignore tests/training/test_train_eval.py \
  --deselect tests/training/test_generate.py::test_cli_generates_with_prompts_per_second
step attention "${ATTN_LIMIT:-60}" $py bench/attention.py --lengths 8192 32768
step train-sdpa "${TRAIN_LIMIT:-75}" $py bench/train.py --steps 8
step train-flex "${TRAIN_LIMIT:-75}" $py bench/train.py --steps 8 --attention flex
step train-flex-compiled "${TRAIN_LIMIT:-75}" $py bench/train.py --steps 8 --sizes small --attention flex --compile
step generate "${GEN_LIMIT:-75}" $py bench/generate.py --chunks 2 4 8 --memory-chunks 2 4 8 16
