#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test flashattn: the CUTLASS/CuTe 4.2 headers (from the
# nvidia-cutlass wheel, into the ignored .deps/ folder) and the Python test tools (not with
# --headers-only). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="$root/.deps"
mkdir -p "$deps"
PY="${PYTHON:-python3}"

if [ ! -f "$deps/cutlass/include/cute/tensor.hpp" ]; then
  echo "setup: fetching CUTLASS/CuTe 4.2 headers (nvidia-cutlass==4.2.0.0 wheel)"
  tmp="$(mktemp -d)"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" nvidia-cutlass==4.2.0.0
  "$PY" - "$tmp" "$deps/cutlass" <<'PYEOF'
import glob, os, shutil, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "nvidia_cutlass-*.whl"))[0]
dest = sys.argv[2]
prefix = "cutlass_library/source/include/"
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not any(n.endswith("cute/tensor.hpp") for n in names):
        sys.exit("setup: the nvidia-cutlass wheel carries no CuTe headers")
    for n in names:
        out = os.path.join(dest, "include", n[len(prefix):])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(n) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
PYEOF
  rm -rf "$tmp"
fi

command -v ninja >/dev/null || { echo "setup: ninja missing: apt-get install -y ninja-build"; exit 1; }
# --headers-only: what a build needs (tools/demo.sh); the test tools below are for tools/test.sh.
if [ "${1:-}" = "--headers-only" ]; then
  echo "setup: done (CUTLASS headers in $deps/cutlass/include)"
  exit 0
fi

# Test tools (CMake and ninja are preinstalled; GoogleTest too).
need=()
for mod in numpy pytest scikit_build_core; do
  "$PY" -c "import $mod" 2>/dev/null || need+=("${mod//_/-}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: pip install ${need[*]}"
  "$PY" -m pip install --quiet "${need[@]}"
fi
echo "setup: done (CUTLASS headers in $deps/cutlass/include)"
