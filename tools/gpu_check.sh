#!/usr/bin/env bash
# Builds convloc for the GPU in this machine and runs the CUDA tests, the whole suite and the CUDA
# benchmark there, then (where compute-sanitizer is installed) the CUDA tests under memcheck and NMS's
# shared-memory pass under racecheck. Each step has its own time limit, so one that hangs costs only
# its share of a short loan of a GPU; the last lines are one table: each step's status and time, and
# each benchmark row with a target (bench_cuda.TARGETS) and whether it is met.
# Usage (repo root, on a machine with a GPU, nvcc, torch, pybind11 and scikit-build-core):
#   bash tools/gpu_check.sh [OUTDIR]      (STEP_LIMIT: seconds per step, default 240)
set -uo pipefail
out=${1:-${OUT:-/tmp/convloc-gpu}}
limit=${STEP_LIMIT:-240}
mkdir -p "$out"
summary=()
step() {  # name, command...: runs it under the time limit, output to $out/<name>.log
  local name=$1 start rc
  shift
  start=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$out/$name.log" 2>&1
  rc=$?
  tail -15 "$out/$name.log"
  summary+=("$(printf '%-12s %-12s %4d s' "$name" "$([ $rc = 0 ] && echo ok || { [ $rc = 124 ] && echo 'timed out' || echo "failed ($rc)"; })" $(($(date +%s) - start)))")
  return $rc
}

arch=$(python3 -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}{n}')")
export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
step build python3 -m pip install --no-build-isolation --no-deps -q -Cbuild-dir=/tmp/convloc-build \
  -Ccmake.define.CONVLOC_CUDA=ON -Ccmake.define.CONVLOC_CUDA_ARCHITECTURES="$arch" . || exit 1
(cd /tmp && python3 -c "import convloc, json; print(json.dumps(convloc.info()))")
status=0
step cuda-tests python3 -m pytest tests -q -m cuda -p no:cacheprovider -rs || status=1
step all-tests python3 -m pytest tests -q -p no:cacheprovider --ignore=tests/fuzz || status=1
step bench bash -c "cd /tmp && python3 -m convloc.cli bench cuda --budget 0.5 --json '$out/bench_cuda.json'" || status=1
if command -v compute-sanitizer > /dev/null; then
  step memcheck compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest tests -q -m cuda \
    -p no:cacheprovider || status=1
  step racecheck compute-sanitizer --tool racecheck --error-exitcode 9 python3 -m pytest tests/test_boxes.py -q \
    -m cuda -p no:cacheprovider -k "strided and 5000" || status=1
fi

echo "== summary ($(python3 -c 'import torch; print(torch.cuda.get_device_name())'))"
printf '%s\n' "${summary[@]}"
[ -f "$out/bench_cuda.json" ] && python3 - "$out/bench_cuda.json" <<'PY'
import json, sys
rows = [r for r in json.load(open(sys.argv[1]))["rows"] if "target" in r["extra"]]
for r in rows:
    e = r["extra"]
    got = f"{r['speedup']:.2f}x" if e["target"].endswith("x") and r["speedup"] else f"{r['ours']['median_ms']:.2f} ms"
    det = f"  deterministic {e['deterministic']}" if "deterministic" in e else ""
    print(f"{r['case']:<48} {got:>10}  target {e['target']:<9} met {e['met']}{det}")
PY
exit $status
