#!/usr/bin/env bash
# Each GPU feature once, on the demo dataset, in a few minutes; a table at the end. None of the
# project's own machines has a GPU that can run NNabla's CUDA extension: this is for whoever
# first has one (docs/gpu.md).
#   bash scripts/gpu_smoke.sh [output dir]        after `bash scripts/setup.sh --gpu`
#   bash scripts/gpu_smoke.sh --cpu [output dir]  the same steps on the CPU (the test suite
#                                                 runs this: -c cpu, NCHW, MPI instead of NCCL)
# Steps: the stack check, float32, half with channel-last (DALI decoding on the GPU), weight
# EMA, resume, two ranks (NCCL; skipped with one GPU), validation in half, a ResNet-50 benchmark.
# Status 0 when no step failed; each step's output is in <output dir>/logs/<step>.log.
# GPU_SMOKE_STEPS="lists half" runs only the steps named (a later step needs its earlier ones).
set -uo pipefail  # not -e: a failing step is recorded and the others still run
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py=.venv/bin/python
[ -x "$py" ] || py=python  # the Dockerfile's image: its environment's python is on the PATH
mode=gpu
if [ "${1:-}" = "--cpu" ]; then mode=cpu; shift; fi
out="${1:-runs/gpu-smoke-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out/logs"
mpirun="$(command -v .venv/bin/mpirun || command -v mpirun || true)"

# On a GPU: a quarter of the demo's training images and half of its validation images at
# 64 px; on the CPU, a 32nd and a 10th at 32 px (the same steps in about a minute).
if [ "$mode" = gpu ]; then
  size=64 train_every=4 val_every=2
  context=(-c cudnn)
  layout=(--channel-last)
  gpus="$($py -c 'from utils.process.context import gpu_count; print(gpu_count())' 2>/dev/null || echo 0)"
  if [ "$gpus" = 0 ]; then
    echo "gpu_smoke: no GPU that NNabla's CUDA extension can use here (python -m utils.process.gpu_stack says why); bash scripts/gpu_smoke.sh --cpu runs the same steps on the CPU" >&2
    exit 2
  fi
else
  size=32 train_every=32 val_every=10
  context=(-c cpu)
  layout=()  # (NNabla's CPU backend runs NCHW only)
  gpus=2     # two MPI ranks stand for two GPUs
fi

rows=()
failed=0
# step NAME FUNCTION: runs FUNCTION with its output in logs/NAME.log, records status and time.
step() {
  local name=$1 started status
  if [ -n "${GPU_SMOKE_STEPS:-}" ] && [[ " $GPU_SMOKE_STEPS " != *" $name "* ]]; then
    skip "$name" "not in GPU_SMOKE_STEPS"
    return
  fi
  started=$(date +%s)
  echo "== $name"
  if "$2" >"$out/logs/$name.log" 2>&1; then
    status=ok
  else
    status="FAILED (see $out/logs/$name.log)"
    failed=1
  fi
  rows+=("$name|$status|$(( $(date +%s) - started ))")
}
skip() { rows+=("$1|skipped: $2|0"); }
has() { grep -q -- "$2" "$out/logs/$1.log" || { echo "gpu_smoke: '$2' not in $1's output"; return 1; }; }

lists() {  # every class in both
  $py create_input_files.py -T data/demo/train -V data/demo/val_ground_truth.txt \
      -o "$out/lists" --no-progress &&
  awk -v n="$train_every" 'NR % n == 1' "$out/lists/train_label" > "$out/lists/train_small" &&
  awk -v n="$val_every" 'NR % n == 1' "$out/lists/val_label" > "$out/lists/val_small"
}
train() {  # train <monitor folder> <flags...>
  local monitor=$1
  shift
  $py train.py -a resnet18 --num-classes 10 --spatial-size "$size" -b 16 -C cfg/quickstart.yaml \
      -T data/demo/train --train-list "$out/lists/train_small" \
      -V data/demo/val --val-list "$out/lists/val_small" --dali-num-threads 1 \
      --no-tensorboard -m "$out/$monitor" "${context[@]}" "$@"
}
stack() { $py -m utils.process.gpu_stack; }
float32() { train float -e 1 -t float && test -s "$out/float/param_001.h5"; }
half() {
  train half -e 1 -t half "${layout[@]}" && test -s "$out/half/param_001.h5" &&
  if [ "$mode" = gpu ]; then has half "context cudnn (half"; else has half "runs in float"; fi
}
ema() { train ema -e 1 -t half "${layout[@]}" --ema-decay 0.99 && ls "$out"/ema/param_ema_*.h5; }
resume() {  # the half run again with one more epoch: it must continue, not start over
  train half -e 2 -t half "${layout[@]}" && has resume "resuming from" &&
  test -s "$out/half/param_002.h5"
}
two_ranks() {
  "$mpirun" -n 2 "$py" train.py -a resnet18 --num-classes 10 --spatial-size "$size" -b 8 \
      -C cfg/quickstart.yaml -T data/demo/train --train-list "$out/lists/train_small" \
      -V data/demo/val --val-list "$out/lists/val_small" --dali-num-threads 1 \
      --no-tensorboard -m "$out/two_ranks" -e 1 -t half "${layout[@]}" "${context[@]}" &&
  has two_ranks "2 ranks"
}
validation() {
  $py validation.py "$out/half/param_002.h5" -a resnet18 --num-classes 10 --spatial-size "$size" \
      -V data/demo/val --val-list "$out/lists/val_small" -b 25 -t half "${context[@]}" \
      -M "$out/validation" --json --no-progress > "$out/validation.json" &&
  $py -c "import json, sys; r = json.load(open(sys.argv[1])); print(r); assert 0 <= r['top1_error'] <= 1" \
      "$out/validation.json"
}
benchmark() {
  $py benchmark.py -a resnet50 -b 8 --spatial-size "$size" -t half "${layout[@]}" "${context[@]}" \
      --warmup 1 --iterations 3 -o "$out/benchmark.csv" && test -s "$out/benchmark.csv"
}

if [ "$mode" = gpu ]; then step stack stack; else skip stack "--cpu"; fi
step lists lists
step float32 float32
step half half
step ema ema
step resume resume
if [ "$gpus" -ge 2 ] && [ -n "$mpirun" ]; then step two_ranks two_ranks
else skip two_ranks "needs two GPUs and an mpirun"; fi
step validation validation
step benchmark benchmark

echo
printf '%-11s %-8s %s\n' step seconds status
for row in "${rows[@]}"; do
  IFS='|' read -r name status seconds <<< "$row"
  printf '%-11s %-8s %s\n' "$name" "$seconds" "$status"
done
echo "mode: $mode; outputs in $out"
exit "$failed"
