#!/usr/bin/env bash
# Compiles the C++ sources (-fsyntax-only) for the platforms this machine cannot run, so that an error
# particular to one shows before a wheel build there:
#   Windows x86-64: Clang, as clang-cl builds them, against MinGW-w64's Windows headers and libstdc++;
#   macOS arm64 and x86-64: Clang for the Darwin targets (its predefined macros, Mach-O), with this
#     machine's glibc and libstdc++ headers standing in for the macOS SDK's, which Linux cannot install.
# The Python bindings (csrc/bindings, *_binding.cpp, core/py_array.cpp) are left out: they need the
# target's pyconfig.h, and pybind11 keeps them portable; the XLA FFI handlers are in where jaxlib is.
#
# Needs Debian bookworm as root; installs clang, g++-mingw-w64-x86-64-posix (Windows headers) and
# g++-aarch64-linux-gnu (arm64 headers) when missing.   tools/platform_check.sh   (CLANG: clang++)
set -euo pipefail
cd "$(dirname "$0")/.."
clang=${CLANG:-clang++}
need=()
command -v "$clang" > /dev/null || need+=(clang)
command -v x86_64-w64-mingw32-g++-posix > /dev/null || need+=(g++-mingw-w64-x86-64-posix)
command -v aarch64-linux-gnu-g++ > /dev/null || need+=(g++-aarch64-linux-gnu)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null
fi

sources=$(git ls-files 'csrc/*.cpp' | grep -v -e '^csrc/bindings/' -e '_binding\.cpp$' -e 'py_array\.cpp$')
flags=(-std=c++17 -fsyntax-only -O2 -Wall -Wextra -Werror -Wno-psabi -Wno-bitwise-instead-of-logical
  -Wno-deprecated-declarations -Icsrc -Iinclude -nostdinc -nostdinc++ -isystem "$("$clang" -print-resource-dir)/include"
  -DCONVLOC_VERSION='"0"' -DCONVLOC_BUILDING_LIBRARY=1)  # what CMake defines for the C library
# The XLA FFI handlers (*ffi.cpp) with jaxlib's headers, where PYTHON (default python3) has jaxlib.
if ffi=$("${PYTHON:-python3}" -c "import jax.ffi; print(jax.ffi.include_dir())" 2> /dev/null); then
  flags+=(-isystem "$ffi")
else
  sources=$(echo "$sources" | grep -v 'ffi\.cpp$')
fi
headers_of() {  # the C++ and C library headers that a GCC ($1) searches, not its own compiler headers
  "$1" -E -x c++ - -v < /dev/null 2>&1 | sed -n '/<...> search starts here/,/End of search list/p' |
    grep '^ /' | grep -v -E '/gcc/[^/]+/[^/]+/include(-fixed)?$' | sed 's/^ /-isystem /'
}
check() {  # name, compiler flags...: every source, in parallel
  local name=$1
  shift
  if echo "$sources" | xargs -P "$(nproc)" -I{} "$clang" "$@" "${flags[@]}" {}; then
    echo "$name: $(echo "$sources" | wc -l) sources compile"
  else
    echo "$name: compile errors above"
    return 1
  fi
}
# Darwin's Clang predefines __nonnull and __nullable, which glibc's headers take as their own macros;
# _GNU_SOURCE is what glibc's C++ users get.
darwin=(-U__nonnull -U__nullable -D_GNU_SOURCE)
status=0
# shellcheck disable=SC2046 # (one flag per word)
check "Windows x86-64 (Clang, MinGW-w64 headers)" --target=x86_64-w64-windows-gnu \
  $(headers_of x86_64-w64-mingw32-g++-posix) || status=1
# shellcheck disable=SC2046
check "macOS x86-64 (Clang, glibc/libstdc++ headers)" --target=x86_64-apple-macos10.13 "${darwin[@]}" \
  $(headers_of g++) || status=1
# shellcheck disable=SC2046
check "macOS arm64 (Clang, glibc/libstdc++ headers)" --target=arm64-apple-macos11 "${darwin[@]}" \
  $(headers_of aarch64-linux-gnu-g++) || status=1
exit $status
