#!/usr/bin/env bash
# Sets up, builds and runs the main job: flashattn-bench on the best device present (a CUDA GPU when one
# is there and nvcc is installed, else the CPU backend). Extra arguments go to flashattn-bench.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup.sh >/dev/null
preset=cpu
extra=()
if command -v nvcc >/dev/null && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  preset=release
  # Code for this GPU only (the release preset builds every supported arch): sm_90 SASS for Hopper,
  # sm_80 SASS + PTX for Ampere/Ada (it runs on sm86/89), which halves the build; other GPUs keep the
  # release set (its compute_80 PTX is what newer architectures JIT).
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | cut -d. -f1)
  case "$cc" in
    8) extra=(-DFLASHATTN_ARCHS=80) ;;
    9) extra=(-DFLASHATTN_ARCHS=90) ;;
  esac
fi
echo "demo: building preset '$preset' ${extra[*]:-}"
cmake --preset "$preset" "${extra[@]}" >/dev/null
cmake --build --preset "$preset" --target flashattn-bench -j "${FLASHATTN_JOBS:-$(nproc)}"
exec "build/$preset/bench/cli/flashattn-bench" "$@"
