#!/usr/bin/env bash
# Installs a (repaired) convloc wheel into a fresh venv and runs the smoke test of every family
# with no compiler on PATH, as a user's machine would: nothing may be built at install time.
#
#   tools/wheel_smoke.sh [WHEEL]   (default: the newest dist/wheelhouse/convloc-*manylinux*.whl)
#   PYTHON=python3.12 tools/wheel_smoke.sh ...    PIP_ARGS="--no-index --find-links ..." for offline
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
wheel=${1:-$(ls -t dist/wheelhouse/convloc-*manylinux*.whl | head -1)}
wheel=$(realpath "$wheel")
py=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$py" -m venv "$tmp/venv"
mkdir "$tmp/bin"  # PATH = the venv and this empty dir: no gcc, g++, cc, nvcc
for tool in bash env; do ln -s "$(command -v $tool)" "$tmp/bin/$tool"; done
run() { env -i HOME="$tmp" PATH="$tmp/venv/bin:$tmp/bin" "$@"; }
for compiler in gcc g++ cc c++ clang nvcc; do
  if run bash -c "command -v $compiler" >/dev/null; then
    echo "wheel_smoke: $compiler is still on PATH" >&2
    exit 1
  fi
done

# shellcheck disable=SC2086
run "$tmp/venv/bin/python" -m pip install -q ${PIP_ARGS:-} "$wheel"
cd "$tmp"  # away from the source tree, so that the installed package is the one imported
run "$tmp/venv/bin/python" "$root/tools/smoke.py"
run "$tmp/venv/bin/convloc" --version
