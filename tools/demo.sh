#!/usr/bin/env bash
# Sets up, builds and runs the main job: flashattn-bench on the best device present (a CUDA GPU when one
# is there and nvcc is installed, else the CPU backend). Extra arguments go to flashattn-bench.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup.sh >/dev/null
preset=cpu
if command -v nvcc >/dev/null && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  preset=release
fi
echo "demo: building preset '$preset'"
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" --target flashattn-bench -j "${FLASHATTN_JOBS:-$(nproc)}"
exec "build/$preset/bench/cli/flashattn-bench" "$@"
