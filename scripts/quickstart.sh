#!/usr/bin/env bash
# The whole workflow on the embedded demo dataset (data/demo: Fashion-MNIST photographs laid
# out like ImageNet), on the CPU: set-up, list files, training under mpirun with one rank per
# core, validation, inference on a few images, PNG curves. A few minutes on 2 cores.
#   bash scripts/quickstart.sh [output dir]      (default: runs/quickstart-<date-time>)
# QUICKSTART_EPOCHS (default 18) and QUICKSTART_RANKS (default: the number of cores) override.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
py=.venv/bin/python
# pip's MPICH's mpirun; after `setup.sh --gpu` (which removes it) the system's Open MPI's.
mpirun="$(command -v .venv/bin/mpirun || command -v mpirun)" || {
  echo "quickstart: no mpirun: neither pip's mpich in .venv nor a system MPI on the PATH" >&2; exit 1; }
out="${1:-runs/quickstart-$(date +%Y%m%d-%H%M%S)}"
ranks="${QUICKSTART_RANKS:-$(nproc)}"
epochs="${QUICKSTART_EPOCHS:-18}"
arch=mobilenet_v3_small
size=48  # the 28-pixel photos upscaled: more of each survives the network's strides
mkdir -p "$out"
started=$(date +%s)

echo "== 1/5 list files: $out/train_label, $out/val_label"
$py create_input_files.py -T data/demo/train -V data/demo/val_ground_truth.txt -o "$out" \
    --no-progress

echo "== 2/5 training $arch for $epochs epochs on $ranks ranks"
"$mpirun" -n "$ranks" $py train.py -a "$arch" -b 32 -C cfg/quickstart.yaml \
    -e "$epochs" --spatial-size "$size" --num-classes 10 \
    -T data/demo/train --train-list "$out/train_label" \
    -V data/demo/val --val-list "$out/val_label" \
    -m "$out/train" -v 1 -s "$epochs" --recompute-bn 16 --dali-num-threads 1
weights="$out/train/param_$(printf %03d "$epochs").h5"

echo "== 3/5 validation of $weights"
$py validation.py "$weights" -a "$arch" --spatial-size "$size" -V data/demo/val \
    --val-list "$out/val_label" -b 50 -M "$out/validation" --labels "$out/label_words.csv" \
    --json > "$out/validation.json"
cat "$out/validation.json"

echo "== 4/5 inference on three validation images"
$py infer.py data/demo/val/ILSVRC2012_val_00000001.JPEG \
    data/demo/val/ILSVRC2012_val_00000002.JPEG data/demo/val/ILSVRC2012_val_00000003.JPEG \
    "$weights" -a "$arch" --spatial-size "$size" --labels "$out/label_words.csv" --top-k 3
echo "(true classes: $(head -3 data/demo/val_ground_truth.txt | while read -r id; do
    sed -n "$((id + 1))p" "$out/label_words.csv" | cut -d, -f2 | tr -d '\r'; done | paste -sd, -))"

echo "== 5/5 curves"
$py plot_curves.py "$out/train"

top1=$($py -c "import json, sys; print('%.2f' % (100 * json.load(open(sys.argv[1]))['top1_error']))" \
    "$out/validation.json")
echo
echo "Done in $(( $(date +%s) - started )) s. Results in $out:"
echo "  training monitor, weights, checkpoints and curves: $out/train"
echo "  validation: $out/validation.json ($out/validation)"
echo "Final top-1 error on the 400 demo validation images: $top1 % (chance: 90 %)"
