#!/usr/bin/env bash
# Builds the native log store (native/) with ASan+UBSan and runs its C unit tests under CTest.
# Needs only gcc (or clang) and cmake >= 3.16.  Usage: bash .ci/native.sh [build-dir]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build/native-sanitize}"
jobs="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)"

cmake -S "$root" -B "$build" \
  -DCMAKE_BUILD_TYPE=Debug \
  -DRAFTLOG_SANITIZE=ON \
  -DRAFTLOG_WERROR=ON
cmake --build "$build" --parallel "$jobs"

# Sanitizer findings are hard failures; leak checking stays on.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
cd "$build"
ctest --output-on-failure --parallel "$jobs"
