#!/usr/bin/env bash
# Sets up, builds and runs the main job: flashattn-bench on the best device present (a CUDA GPU when one
# is there and nvcc is installed, else the CPU backend). Extra arguments go to flashattn-bench.
#
# On a GPU the demo builds the kernels of its default problem only (bf16, head dim 128, every family,
# this GPU's architecture: a few minutes on 16 cores) in build/demo. Other head dims or dtypes:
#   FLASHATTN_DEMO_HEADDIMS="64;128" FLASHATTN_DEMO_DTYPES=ALL bash tools/demo.sh --headdim 64
# (a problem whose kernel is not built fails with an error naming the configure option to add).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup.sh --headers-only >/dev/null
jobs="${FLASHATTN_JOBS:-$(nproc)}"
if command -v nvcc >/dev/null && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  # SASS for this GPU: sm_90 for Hopper, sm_80 for Ampere/Ada (runs on sm86/89); other GPUs get the
  # release set, whose compute_80 PTX newer architectures JIT.
  archs="80;90"
  case "$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | cut -d. -f1)" in
    8) archs=80 ;;
    9) archs=90 ;;
  esac
  dir=build/demo
  echo "demo: building flashattn-bench for the GPU (archs $archs) in $dir"
  cmake --preset release -B "$dir" -DFLASHATTN_ARCHS="$archs" -DFLASHATTN_BUILD_TESTS=OFF \
    -DFLASHATTN_HEADDIMS="${FLASHATTN_DEMO_HEADDIMS:-128}" -DFLASHATTN_DTYPES="${FLASHATTN_DEMO_DTYPES:-bf16}" \
    -DFLASHATTN_CUDA_JOBS="$jobs" >/dev/null
else
  dir=build/cpu
  echo "demo: no usable CUDA GPU; building flashattn-bench for the CPU backend in $dir"
  cmake --preset cpu >/dev/null
fi
cmake --build "$dir" --target flashattn-bench -j "$jobs"
exec "$dir/bench/cli/flashattn-bench" "$@"
