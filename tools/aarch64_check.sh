#!/usr/bin/env bash
# Builds convloc's extension for Linux aarch64 with the cross compiler, runs the kernel tests on it
# under qemu's user-mode emulation with Debian's arm64 Python and NumPy, then compares the dense CRF
# on the benchmark input and the lattice filter with an x86-64 run.
#
# Needs Debian bookworm (Python 3.11) as root; installs g++-aarch64-linux-gnu, qemu-user-static,
# cmake and ninja-build when missing. PYTHON (default python3) must have pybind11 (the build), and
# for the comparison scipy, scikit-image (the benchmark input) and convloc installed from this
# checkout (the x86-64 side). The arm64 packages are downloaded (arm64 is added to dpkg's
# architectures if missing) and unpacked into a private root, not installed: python3:arm64 would
# replace the system's python3.
#
#   tools/aarch64_check.sh [pytest args]   (default: the kernel test files; WORK: default build/aarch64)
#   tools/aarch64_check.sh --build-only    (the cross build alone, as CI runs it)
#
# Torch has no Debian arm64 package: the tests that need it skip.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(realpath -m "${WORK:-build/aarch64}")
py=${PYTHON:-python3}
root=$work/root
mkdir -p "$work"
need=()
command -v aarch64-linux-gnu-g++ > /dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64-static > /dev/null || need+=(qemu-user-static)
command -v cmake > /dev/null || need+=(cmake)
command -v ninja > /dev/null || need+=(ninja-build)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null
fi

# ---- The arm64 root: Python 3.11, NumPy, SciPy, Pillow, pytest and the libraries they load ----
if [ ! -e "$root/.complete" ]; then
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -qq
  arm64=(libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5
    libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libuuid1 libcrypt1 libdb5.3 libnsl2 libtirpc3
    libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1 libblas3 liblapack3
    libgfortran5 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3.11 libpython3.11
    libpython3.11-dev python3-numpy python3-scipy liblbfgsb0 python3-pil libjpeg62-turbo libopenjp2-7
    libtiff6 libdeflate0 libjbig0 liblerc4 libzstd1 libwebp7 libwebpdemux2 libwebpmux3 libxcb1 libxau6
    libxdmcp6 libbsd0 libmd0 libimagequant0 liblcms2-2 libfreetype6 libbrotli1 libpng16-16 libgomp1)
  all=(python3-pytest python3-pluggy python3-iniconfig python3-packaging python3-py python3-attr
    python3-more-itertools python3-pkg-resources libtirpc-common python3-tqdm)
  rm -rf "$work/debs" "$root" && mkdir -p "$work/debs" "$root"
  (cd "$work/debs" && apt-get download -qq -o APT::Sandbox::User=root "${arm64[@]/%/:arm64}" "${all[@]}")
  for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
  for lib in blas/libblas.so.3 lapack/liblapack.so.3; do  # what update-alternatives would link
    ln -sf "$lib" "$root/usr/lib/aarch64-linux-gnu/$(basename $lib)"
  done
  touch "$root/.complete"
fi
# The arm64 interpreter (qemu -L: the arm64 root's files first, then the host's).
cat > "$work/python" <<EOF
#!/bin/sh
exec qemu-aarch64-static -L "$root" "$root/usr/bin/python3.11" "\$@"
EOF
chmod +x "$work/python"

# ---- The cross build (CPU kernels), and the package under test beside it ----
# (Debian's pyconfig.h includes <aarch64-linux-gnu/python3.11/pyconfig.h>: the root's include dir.)
start=$(date +%s)
cmake -S . -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_SYSTEM_NAME=Linux \
  -DCMAKE_SYSTEM_PROCESSOR=aarch64 -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DCONVLOC_CUDA=OFF \
  -DPython_EXECUTABLE="$work/python" -DPython_INCLUDE_DIR="$root/usr/include/python3.11" \
  -DCMAKE_CXX_FLAGS="-isystem $root/usr/include" \
  -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" > "$work/cmake.log"
cmake --build "$work/build"
rm -rf "$work/pkg" && mkdir -p "$work/pkg"
cp -r python/convloc "$work/pkg/"
cp "$work"/build/_C*.so "$work/pkg/convloc/"
echo "::: aarch64 build: $(($(date +%s) - start)) s"
(cd "$work" && PYTHONPATH="$work/pkg" ./python -c "import convloc, json; print(json.dumps(convloc.info()))")
[ "${1:-}" = --build-only ] && exit 0

# ---- The kernel tests under emulation ----
tests=(tests/test_boxes.py tests/test_crf.py tests/test_deconv.py tests/test_lattice.py
  tests/test_permutohedral_conv.py tests/test_proposals.py tests/test_roi.py)
start=$(date +%s)
status=0
PYTHONPATH="$work/pkg" "$work/python" -m pytest -q -p no:cacheprovider -rs "${@:-${tests[@]}}" || status=$?
echo "::: aarch64 tests: $(($(date +%s) - start)) s"

# ---- Agreement with x86-64: the same calls on both, compared ----
cat > "$work/agreement.py" <<'EOF'
"""agreement.py OUT.npz [INPUTS.npz]: the dense CRF on the benchmark input (5 iterations), a lattice
filter and a transposed convolution (the torch-only tests' kernel), saved to OUT; without INPUTS,
the inputs are made first (and saved beside OUT)."""

import sys

import numpy as np

import convloc
from convloc import ops

out = sys.argv[1]
if len(sys.argv) > 2:
    inputs = dict(np.load(sys.argv[2]))
else:
    from convloc.benchmarks.bench_crf import benchmark_input

    image, unary = benchmark_input()
    rng = np.random.default_rng(0)
    features = (2 * rng.standard_normal((20000, 5))).astype(np.float32)
    values = rng.standard_normal((20000, 8)).astype(np.float32)
    x = rng.standard_normal((2, 64, 40, 40)).astype(np.float32)
    weight = rng.standard_normal((64, 21, 4, 4)).astype(np.float32)
    inputs = dict(image=image, unary=unary, features=features, values=values, x=x, weight=weight)
    np.savez(out.replace(".npz", "_inputs.npz"), **inputs)
kernels = [ops.Gaussian(3, 3), ops.Bilateral(80, 13, 10)]
q, labels = ops.dense_crf(inputs["unary"], image=inputs["image"], kernels=kernels, return_labels=True)
filtered = ops.permutohedral_filter(inputs["values"], inputs["features"])
deconv = ops.conv_transpose2d(inputs["x"], inputs["weight"], stride=2, padding=1)
info = convloc.info()
np.savez(out, q=q, labels=labels, filtered=filtered, deconv=deconv, build=f"{info['compiler']} {info['simd']}")
EOF
(cd "$work" && "$py" agreement.py "$work/x86.npz")
(cd "$work" && PYTHONPATH="$work/pkg" ./python agreement.py "$work/arm.npz" "$work/x86_inputs.npz")
"$py" - "$work/x86.npz" "$work/arm.npz" <<'EOF'
import sys

import numpy as np

x86, arm = (np.load(p) for p in sys.argv[1:])
print(f"x86-64: {x86['build']}; aarch64: {arm['build']}")
same = (x86["labels"] == arm["labels"]).mean()
print(f"dense CRF, benchmark input: labels agree at {same:.4%} of the pixels, max |Q difference| "
      f"{np.abs(x86['q'] - arm['q']).max():.3g}")
for key, what in [
    ("filtered", "lattice filter, 20000 points, d = 5, 8 channels"),
    ("deconv", "conv_transpose2d, 2x64x40x40 to 21 channels, 4x4, stride 2"),
]:
    a, b = x86[key], arm[key]
    print(f"{what}: max |difference| / max |value| {np.abs(a - b).max() / np.abs(a).max():.3g}")
EOF
exit $status
