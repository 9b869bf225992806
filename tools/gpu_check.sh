#!/usr/bin/env bash
# Builds convloc for the GPU in this machine and runs the CUDA tests, the whole suite and the CUDA
# benchmark there, then (where compute-sanitizer is installed) the CUDA tests under memcheck and NMS's
# shared-memory pass under racecheck.
# Usage (repo root, on a machine with a GPU, nvcc, torch, pybind11 and scikit-build-core):
#   bash tools/gpu_check.sh [OUTDIR]
set -euo pipefail
out=${1:-${OUT:-/tmp/convloc-gpu}}
mkdir -p "$out"
arch=$(python3 -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}{n}')")
export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
start=$(date +%s)
python3 -m pip install --no-build-isolation --no-deps -q -Cbuild-dir=/tmp/convloc-build \
  -Ccmake.define.CONVLOC_CUDA=ON -Ccmake.define.CONVLOC_CUDA_ARCHITECTURES="$arch" . 2>&1 | tail -30
echo "build: $(( $(date +%s) - start )) s"
(cd /tmp && python3 -c "import convloc, json; print(json.dumps(convloc.info()))")
status=0
python3 -m pytest tests -q -m cuda -p no:cacheprovider -rs 2>&1 | tee "$out/cuda_tests.log" || status=1
python3 -m pytest tests -q -p no:cacheprovider --ignore=tests/fuzz 2>&1 | tail -15 | tee "$out/all_tests.log" || status=1
(cd /tmp && python3 -m convloc.cli bench cuda --budget 0.5) 2>&1 | tee "$out/bench_cuda.log" || status=1
if command -v compute-sanitizer > /dev/null; then
  compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest tests -q -m cuda -p no:cacheprovider \
    2>&1 | tail -5 | tee "$out/memcheck.log" || status=1
  compute-sanitizer --tool racecheck --error-exitcode 9 python3 -m pytest tests/test_boxes.py -q -m cuda \
    -p no:cacheprovider -k "strided and 5000" 2>&1 | tail -5 | tee "$out/racecheck.log" || status=1
fi
exit $status
