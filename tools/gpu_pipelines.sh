#!/usr/bin/env bash
# Builds convloc for the GPU in this machine, then trains Fast R-CNN and FCN-8s for a fixed number of
# iterations on the GPU in float32 and in bfloat16 and on the machine's CPU, evaluates each run, and
# prints a table: training images per second, mAP@0.5 (VOC07) or mean IU. Each step has a time limit,
# the sum sized for under 8 minutes on one H100.
# Usage (repo root, on a machine with a GPU, nvcc, torch, pybind11 and scikit-build-core):
#   bash tools/gpu_pipelines.sh [OUTDIR]
set -uo pipefail
out=${1:-${OUT:-/tmp/convloc-gpu-pipelines}}
mkdir -p "$out"
work=$(mktemp -d)
status=0

deadline=$(( $(date +%s) + 470 ))  # the whole script ends within 8 minutes

# step LIMIT NAME COMMAND...: runs COMMAND for at most LIMIT seconds (less when the deadline is
# nearer), its output in $out/NAME.log
step() {
  local limit=$1 name=$2
  shift 2
  local start left
  start=$(date +%s)
  left=$(( deadline - start ))
  if [ "$left" -le 0 ]; then echo "$name: skipped, no time left"; status=1; return 1; fi
  [ "$limit" -le "$left" ] || limit=$left
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc, $(( $(date +%s) - start )) s"
  [ $rc -eq 0 ] || { status=1; tail -5 "$out/$name.log"; }
  return $rc
}

arch=$(python3 -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}{n}')")
export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
step 300 build python3 -m pip install --no-build-isolation --no-deps -q -Cbuild-dir=/tmp/convloc-build \
  -Ccmake.define.CONVLOC_CUDA=ON -Ccmake.define.CONVLOC_CUDA_ARCHITECTURES="$arch" . || exit 1
cd "$work" || exit 1
python3 -c "import convloc, sys; sys.exit(not convloc.cuda_available())" || { echo "no usable GPU"; exit 1; }
step 60 data-shapes python3 -m convloc.cli data make-shapes shapes --seed 1
step 30 data-seg python3 -m convloc.cli data make-segmentation seg --seed 1
# the proposals, once, outside the timed runs
step 120 proposals python3 -m convloc.cli train fast-rcnn --data shapes --out warm.pt --iterations 1 --device cpu

runs=("cuda fp32:--device cuda --amp off" "cuda bf16:--device cuda --amp bf16"
  "cpu, $(nproc) threads:--device cpu --threads $(nproc)")
for i in "${!runs[@]}"; do
  opts=${runs[$i]#*:}
  # shellcheck disable=SC2086  # the options split into words
  step 90 "fast-rcnn-$i" python3 -m convloc.cli train fast-rcnn --data shapes --out "frcnn$i.pt" \
    --iterations 600 $opts &&
    step 45 "eval-$i" python3 -m convloc.cli eval "frcnn$i.pt" --data shapes ${opts%--amp*}
  # shellcheck disable=SC2086
  step 90 "fcn-$i" python3 -m convloc.cli train fcn --data seg --variant 8s -o "fcn$i.pt" --epochs 10 $opts
done

python3 - "$out" "${runs[@]}" <<'PY'
import re, sys
out, runs = sys.argv[1], [r.split(":")[0] for r in sys.argv[2:]]
print(f"{'run':<22}{'Fast R-CNN img/s':>18}{'mAP@0.5':>10}{'FCN-8s img/s':>14}{'mean IU':>10}")
for i, name in enumerate(runs):
    def read(log, pattern):
        try:
            m = re.findall(pattern, open(f"{out}/{log}.log").read())
        except OSError:
            return "-"
        return m[-1] if m else "-"
    fast = read(f"fast-rcnn-{i}", r"\(([\d.]+) images/s\)")
    ap = read(f"eval-{i}", r"mAP\s+([\d.]+)")
    fcn = read(f"fcn-{i}", r'"train_images_per_s": ([\d.]+)')
    miu = read(f"fcn-{i}", r'"mean_iu": ([\d.]+)')
    print(f"{name:<22}{fast:>18}{ap:>10}{fcn:>14}{miu:>10}")
PY
exit $status
