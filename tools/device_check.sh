#!/usr/bin/env bash
# One-shot GPU check, meant for the GPU machine (16 cores): configure + build with CMake/ninja, report
# registers/spills per kernel (ptxas -v), confirm tensor-core instructions in one kernel's SASS, run the
# GPU tests (ctest label cuda), compute-sanitizer memcheck + racecheck on small shapes, and a quick timing
# against torch SDPA FLASH. Logs go to $OUT (at most 8 files); a summary table is printed last.
#
# Environment (all optional):
#   OUT=dir            where logs go (default build/device_check)
#   ARCHS=90           FLASHATTN_ARCHS (default 90: the GPU test host is sm_90; release builds use 80;90)
#   HEADDIMS=ALL       FLASHATTN_HEADDIMS     DTYPES=ALL   FLASHATTN_DTYPES
#   FAMILIES=fwd;bwd;fwd_infer   FLASHATTN_FAMILIES (naming a family builds it even while validated = false)
#   JOBS=$(nproc)      parallel nvcc jobs
#   STEPS="build regs sass test sanitize bench"   steps to run, in this order
#                      (also: pytest, checks = test + pytest side by side, suite, profile, splits, overhead, pack,
#                      sweep, detcost = the deterministic backward's cost, ncu = the backward against FA2
#                      under ncu, NCU_SHAPES="batch seqlen heads headdim causal;...", breakdown = every
#                      kernel's time of one call, ours and FA2's, BREAKDOWN_OP=bwd and NCU_SHAPES, errors = library
#                      errors reach a torch process as exceptions, tools/check_errors_torch.py,
#                      variants = A/B timing of patched copies of the tree, VARIANTS / CLI_SHAPES below,
#                      VARIANT_OP=bwd to time the backward)
#   BUILD=dir          build tree; or a folder of binaries built elsewhere (libflashattn.so*, the
#                      flashattn_gpu_*tests executables, flashattn-bench) with STEPS leaving out build.
#                      The GPU host's environment sets CXX=/opt/gcc/bin/g++ (g++ 13), which links
#                      libstdc++ statically; the library keeps such static runtimes private
#                      (CMakeLists.txt, --exclude-libs), so its errors reach a torch process as
#                      exceptions (step errors checks it).
#   CXX=... CUDAHOSTCXX=...   host compilers of step build's first configure of a tree (CMake reads them
#                      from the environment on a tree's first configure only: a -D compiler that differs
#                      from a cached one makes CMake drop the cache together with the call's other -D values)
#   TEST_RUNS=...      step test: executables to run side by side, NAME@VAR=VALUE for an environment
#   BENCH_ARGS=...     extra arguments of bench/quick_fwd_vs_fa2.py
#   SUITES="bwd decode" SUITE_ARGS="--quick --dtype bf16"   step suite: bench/bench.py suites, JSON into $OUT
#   SUITE_BASELINE=lib   step suite: each suite again against this library (a carried build of the baseline
#                      commit), JSON into $OUT/baseline, then bench/compare.py baseline vs candidate
#                      (COMPARE_ARGS, e.g. "--graph-only") into suite-<name>-baseline.log
#   GTEST_FILTER=...   step test: a gtest filter for every GPU test executable
#   TEST_TIMEOUT=300   seconds each test executable (and pytest) may run: a hang costs minutes, not the call
#   PROFILE_ARGS=...   step profile: arguments of bench/profile_decode.py (e.g. --batch 1 32 --seqlen-q 1 4)
#   SPLITS_ARGS=...    step splits: arguments of bench/decode_splits.py (decode time per forced num_splits)
# New steps: add a step_<name> function and name it in STEPS; it appends to SUMMARY.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
OUT="${OUT:-$root/build/device_check}"
mkdir -p "$OUT"
ARCHS="${ARCHS:-90}"
HEADDIMS="${HEADDIMS:-ALL}"
DTYPES="${DTYPES:-ALL}"
FAMILIES="${FAMILIES:-fwd;bwd;fwd_infer}"
JOBS="${JOBS:-$(nproc)}"
STEPS="${STEPS:-build regs sass test sanitize bench}"
BUILD="${BUILD:-$root/build/device}"
SUMMARY=()
add() { SUMMARY+=("$(printf '%-10s %-6s %s' "$1" "$2" "$3")"); }

step_build() {
  local extra=()
  # The GPU image has no GoogleTest: tools may carry one under .deps/gtest (see docs/kernels_sm80.md).
  if [ -d "$root/.deps/gtest" ] && [ ! -f /usr/include/gtest/gtest.h ]; then
    extra+=("-DGTest_DIR=$(ls -d "$root"/.deps/gtest/lib/*/cmake/GTest | head -1)")
  fi
  local t0=$SECONDS
  cmake -S "$root" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHATTN_CUDA=ON \
    -DFLASHATTN_ARCHS="$ARCHS" -DFLASHATTN_HEADDIMS="$HEADDIMS" -DFLASHATTN_DTYPES="$DTYPES" -DFLASHATTN_FAMILIES="$FAMILIES" \
    -DFLASHATTN_CUDA_JOBS="$JOBS" -DFLASHATTN_BUILD_TESTS=ON "${extra[@]}" >"$OUT/build.log" 2>&1 &&
    cmake --build "$BUILD" -j "$JOBS" >>"$OUT/build.log" 2>&1
  local rc=$?
  add build "$([ $rc = 0 ] && echo ok || echo FAIL)" "$((SECONDS - t0)) s, archs $ARCHS, head dims $HEADDIMS, dtypes $DTYPES"
  # Kernel TUs from the ninja log (ms start/end per target): how much one core compiled, and the longest.
  local tus
  tus=$([ -f "$BUILD/.ninja_log" ] && awk -F'\t' '$4 ~ /generated\/.*\.cu\.o$/ {t = ($2 - $1) / 1000; n++; sum += t;
      if (t > max) {max = t; name = $4}} END {if (n) printf "%d kernel TUs, %.0f s of one core, longest %.0f s (%s)",
      n, sum, max, name}' "$BUILD/.ninja_log" | sed 's#CMakeFiles/[^ ]*/generated/##')
  [ -n "$tus" ] && add tus "" "$tus" && echo "$tus" >>"$OUT/build.log"
  [ $rc = 0 ] || { tail -40 "$OUT/build.log"; return 1; }
}

# ptxas -v lines: "Compiling entry function 'NAME' for 'sm_XX'", then "... N bytes spill stores ...",
# then "Used R registers". Kernel names are demangled and shortened to their template arguments.
step_regs() {
  python3 - "$OUT/build.log" >"$OUT/regs.txt" <<'PY'
import re, subprocess, sys
name = arch = spill = None
rows = []
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"Compiling entry function '(\S+)' for '(sm_\w+)'", line)
    if m:
        name, arch, spill = m.group(1), m.group(2), None
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m and name:
        spill = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
        continue
    m = re.search(r"Used (\d+) registers", line)
    if m and name:
        rows.append((name, arch, int(m.group(1)), spill or (0, 0, 0)))
        name = None
names = subprocess.run(["c++filt"], input="\n".join(r[0] for r in rows), capture_output=True, text=True).stdout.split("\n")
def short(s):
    s = s.replace("flashattn::kern::", "").replace("cutlass::", "")
    m = re.search(r"FwdTraitsSm80<(\d+), (\d+), (\d+), (\d+), (\w+)>, MaskPolicy<(\w+), (\w+)(?:, \w+)?>, ScorePolicy<(\w+), (\w+)>", s)
    if m:
        d, bm, bn, w, t, c, l, sc, al = m.groups()
        mask = "causal" if c == "true" else ("local" if l == "true" else "none")
        score = {("false", "false"): "plain", ("true", "false"): "softcap", ("false", "true"): "alibi"}.get((sc, al), "general")
        return f"fwd {t:11s} d{d:<4s} {bm}x{bn} {w}w mask={mask:6s} score={score}"
    m = re.search(r"FwdDecodeKernelSm80<(\w+), (\d+), (\d+), MaskPolicy<(\w+), (\w+)(?:, \w+)?>, ScorePolicy<(\w+), (\w+)>, (\w+), (\w+)>", s)
    if m:
        t, d, bn, c, l, sc, al, paged, in_page = m.groups()
        mask = "causal" if c == "true" else ("local" if l == "true" else "none")
        score = "general" if sc == "true" else "plain"
        kv = (" paged slices" if in_page == "true" else " paged rows") if paged == "true" else ""
        return f"decode {t:11s} d{d:<4s} 16x{bn} 4w mask={mask:6s} score={score}{kv}"
    return s[:110]
print(f"{'kernel':64s} {'arch':6s} {'regs':>4s} {'stack':>6s} {'spill_st':>8s} {'spill_ld':>8s}")
for (n, a, r, sp), dn in sorted(zip(rows, names), key=lambda x: short(x[1] or x[0][0])):
    print(f"{short(dn or n):64s} {a:6s} {r:4d} {sp[0]:6d} {sp[1]:8d} {sp[2]:8d}")
PY
  local n spilling
  n=$(($(wc -l <"$OUT/regs.txt") - 1))
  spilling=$(awk 'NR>1 && $(NF-1) > 0' "$OUT/regs.txt" | wc -l)
  add regs "$([ "$n" -gt 0 ] && echo ok || echo FAIL)" "$n kernels, $spilling with spills (see regs.txt)"
}

step_sass() {
  local obj
  obj=$(find "$BUILD" -name 'fwd_sm80_bf16_hdim128.cu.o' | head -1)
  [ -n "$obj" ] || obj=$(find "$BUILD" -name 'fwd_sm80_*.cu.o' | head -1)
  [ -n "$obj" ] || obj=$(lib_path)
  if [ -z "$obj" ]; then add sass FAIL "no forward kernel object found"; return 1; fi
  cuobjdump -sass "$obj" >"$OUT/sass.txt" 2>&1
  local hmma ldsm ldgsts
  hmma=$(grep -c 'HMMA' "$OUT/sass.txt")
  ldsm=$(grep -c 'LDSM' "$OUT/sass.txt")
  ldgsts=$(grep -c 'LDGSTS' "$OUT/sass.txt")
  add sass "$([ "$hmma" -gt 0 ] && echo ok || echo FAIL)" "$(basename "$obj"): HMMA $hmma, LDSM $ldsm, LDGSTS $ldgsts"
}

# The library and executables, in a build tree or a flat folder of carried binaries.
find_bin() { find "$BUILD" -maxdepth 3 -name "$1" -type f | head -1; }
lib_path() { find "$BUILD" -maxdepth 1 -name 'libflashattn.so*' -type f | head -1; }
export LD_LIBRARY_PATH="$BUILD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The gtest executables run directly (no ctest tree needed, so carried binaries work the same way), all
# three at once: their fp64 host references keep the CPU cores busy while the GPU waits, so running them
# side by side costs the time of the longest one rather than the sum.
# TEST_RUNS: executables to run side by side; NAME@VAR=VALUE runs NAME with that environment (the KV-cache
# grid runs a second time on the 64-row kernel, so both inference kernels see every case).
TEST_RUNS="${TEST_RUNS:-flashattn_gpu_tests flashattn_gpu_bwd_tests flashattn_gpu_kvcache_tests flashattn_gpu_kvcache_tests@FLASHATTN_DECODE_TILE=0}"
step_test() {
  local t0=$SECONDS rc=0 exe run tag envs pids=()
  : >"$OUT/gtest.log"
  for run in $TEST_RUNS; do
    tag=${run//[@=]/_}
    envs=; [[ $run == *@* ]] && envs=${run#*@}
    exe=$(find_bin "${run%%@*}")
    [ -n "$exe" ] || { echo "missing ${run%%@*}" >>"$OUT/gtest.log"; rc=1; continue; }
    (
      env $envs timeout "${TEST_TIMEOUT:-300}" "$exe" --gtest_filter="${GTEST_FILTER:-*}" >"$OUT/gtest-$tag.part" 2>&1
      echo $? >"$OUT/gtest-$tag.rc"
    ) &
    pids+=($!)
  done
  [ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"
  for run in $TEST_RUNS; do
    tag=${run//[@=]/_}
    [ -f "$OUT/gtest-$tag.rc" ] || continue
    {
      echo "==== $run"
      cat "$OUT/gtest-$tag.part"
      [ "$(cat "$OUT/gtest-$tag.rc")" = 0 ] || echo "==== $run exited with $(cat "$OUT/gtest-$tag.rc")"
    } >>"$OUT/gtest.log"
    [ "$(cat "$OUT/gtest-$tag.rc")" = 0 ] || rc=1
    rm -f "$OUT/gtest-$tag.part" "$OUT/gtest-$tag.rc"
  done
  local passed failed skipped
  passed=$(grep -c '^\[       OK \]' "$OUT/gtest.log")
  failed=$(grep -c '^\[  FAILED  \] .*(' "$OUT/gtest.log")
  skipped=$(grep -c 'kernel not in this build' "$OUT/gtest.log")
  add test "$([ $rc = 0 ] && echo ok || echo FAIL)" "$passed passed, $failed failed, $skipped not-built notes ($((SECONDS - t0)) s)"
  grep -E '^\[  FAILED  \] .*\(|exited with' "$OUT/gtest.log" | head -30
}

# The Python GPU suite against this build's library.
run_pytest() {
  FLASHATTN_LIBRARY="$(lib_path)" PYTHONPATH="$root/python" timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -m gpu --maxfail=20 -p no:cacheprovider \
    "$root/tests/python" >"$OUT/pytest.log" 2>&1
}
pytest_summary() {
  add pytest "$([ "$1" = 0 ] && echo ok || echo FAIL)" "$(tail -1 "$OUT/pytest.log") ($2 s)"
  grep -E '^FAILED|Error' "$OUT/pytest.log" | head -20
}
step_pytest() {
  local t0=$SECONDS
  run_pytest
  pytest_summary $? $((SECONDS - t0))
}

# Steps test and pytest side by side (the validation run of a full build).
step_checks() {
  local t0=$SECONDS pid rc
  run_pytest &
  pid=$!
  step_test
  wait $pid
  rc=$?
  pytest_summary $rc $((SECONDS - t0))
}

# Library errors inside a torch process (an unbuilt head dim, invalid arguments) must arrive as Python
# exceptions: a library whose C++ runtime does not match torch's can crash on its first throw instead.
step_errors() {
  local rc
  FLASHATTN_LIBRARY="$(lib_path)" PYTHONPATH="$root/python" python3 "$root/tools/check_errors_torch.py" >"$OUT/errors.log" 2>&1
  rc=$?
  cat "$OUT/errors.log"
  add errors "$([ $rc = 0 ] && echo ok || echo FAIL)" "$(grep -c ' ok ' "$OUT/errors.log") of $(grep -c '^errors' "$OUT/errors.log") cases as expected (errors.log)"
}

# bench/bench.py suites through the Python binding; the result JSON lands in $OUT.
# run_suite LIBRARY SUITE OUT_DIR: one suite against one library build.
run_suite() {
  FLASHATTN_LIBRARY="$1" PYTHONPATH="$root/python" PYTHONUNBUFFERED=1 \
    python3 "$root/bench/bench.py" --suite "$2" ${SUITE_ARGS:---quick --dtype bf16} --out "$3"
}

step_suite() {
  local s rc t0 lib
  for s in ${SUITES:-bwd decode}; do
    t0=$SECONDS
    run_suite "$(lib_path)" "$s" "$OUT" >"$OUT/suite-$s.log" 2>&1
    rc=$?
    add "suite-$s" "$([ $rc = 0 ] && echo ok || echo FAIL)" "$((SECONDS - t0)) s, $(grep -ciE 'geomean' "$OUT/suite-$s.log") geomean lines"
    tail -40 "$OUT/suite-$s.log"
    [ -n "${SUITE_BASELINE:-}" ] || continue
    # The same suite against the baseline library, then the A/B table (the peers' rows give the drift).
    t0=$SECONDS
    lib=$(realpath "$SUITE_BASELINE")
    run_suite "$lib" "$s" "$OUT/baseline" >"$OUT/suite-$s-baseline.log" 2>&1 &&
      python3 "$root/bench/compare.py" "$(ls "$OUT"/baseline/*-"$s".json)" "$(ls "$OUT"/*-"$s".json)" \
        ${COMPARE_ARGS:-} >>"$OUT/suite-$s-baseline.log" 2>&1
    rc=$?
    add "ab-$s" "$([ $rc = 0 ] && echo ok || echo FAIL)" "$((SECONDS - t0)) s, baseline $lib"
    grep -A200 '^baseline ' "$OUT/suite-$s-baseline.log" | grep -E 'geomean|^  |^baseline|^candidate'
  done
}

step_sanitize() {
  local exe name filter family rc1=0 rc2=0
  : >"$OUT/sanitizer.log"
  # binary:family:filter; a family left out of FAMILIES has nothing to check (its small test would fail
  # for want of a kernel, not for a sanitizer finding).
  for name in flashattn_gpu_tests:fwd:GpuFwdSmall.* flashattn_gpu_bwd_tests:bwd:GpuBwdSmall.* \
    flashattn_gpu_kvcache_tests:fwd_infer:GpuKvCacheSmall.*; do
    exe=$(find_bin "${name%%:*}")
    filter=${name##*:}
    family=${name#*:}
    family=${family%%:*}
    [ -n "$exe" ] || continue
    [[ ";$FAMILIES;" == *";$family;"* ]] || continue
    {
      echo "== memcheck $filter"
      compute-sanitizer --tool memcheck --error-exitcode 9 "$exe" --gtest_filter="$filter" || rc1=1
      echo "== racecheck $filter"
      compute-sanitizer --tool racecheck --error-exitcode 9 "$exe" --gtest_filter="$filter" || rc2=1
    } >>"$OUT/sanitizer.log" 2>&1
  done
  add memcheck "$([ "$rc1" = 0 ] && echo ok || echo FAIL)" "$(grep -A1 '== memcheck' "$OUT/sanitizer.log" | grep -c .) runs; $(grep 'ERROR SUMMARY' "$OUT/sanitizer.log" | sort | uniq -c | tr '\n' ' ')"
  add racecheck "$([ "$rc2" = 0 ] && echo ok || echo FAIL)" "$(grep 'RACECHECK SUMMARY' "$OUT/sanitizer.log" | sort | uniq -c | tr '\n' ' ')"
}

step_bench() {
  local lib
  lib=$(lib_path)
  PYTHONUNBUFFERED=1 python3 "$root/bench/quick_fwd_vs_fa2.py" --lib "$lib" ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1
  local rc=$?
  add bench "$([ $rc = 0 ] && echo ok || echo FAIL)" "$(grep -E '^geomean' "$OUT/bench.log" | tail -1)"
  cat "$OUT/bench.log"
}

# The built library and GPU test executables, xz-compressed into $OUT, to be carried into a later call
# (BUILD=that folder, no build step) instead of compiling again.
step_pack() {
  local dir exe name
  dir=$(mktemp -d)
  cp -L "$(lib_path)" "$dir/libflashattn.so.1"
  for name in flashattn_gpu_tests flashattn_gpu_bwd_tests flashattn_gpu_kvcache_tests; do
    exe=$(find_bin "$name")
    [ -n "$exe" ] && cp "$exe" "$dir/" && strip "$dir/$name" 2>/dev/null
  done
  tar -C "$dir" -cf - . | xz -T0 -6 >"$OUT/binaries.tar.xz"
  add pack ok "binaries.tar.xz $(du -h "$OUT/binaries.tar.xz" | cut -f1)"
}

# Host overhead of one flash_attn_func forward call against torch SDPA (bench/host_overhead.py), JSON in $OUT.
step_overhead() {
  FLASHATTN_LIBRARY="$(lib_path)" PYTHONPATH="$root/python" PYTHONUNBUFFERED=1 python3 "$root/bench/host_overhead.py" \
    --device cuda --json "$OUT/host-overhead.json" >"$OUT/overhead.log" 2>&1
  local rc=$?
  add overhead "$([ $rc = 0 ] && echo ok || echo FAIL)" "see overhead.log"
  cat "$OUT/overhead.log"
}

# Kernel-level decode profile (grid, block, duration of every kernel of one call; bench/profile_decode.py).
step_profile() {
  FLASHATTN_LIBRARY="$(lib_path)" PYTHONUNBUFFERED=1 python3 "$root/bench/profile_decode.py" ${PROFILE_ARGS:-} >"$OUT/profile.log" 2>&1
  local rc=$?
  add profile "$([ $rc = 0 ] && echo ok || echo FAIL)" "see profile.log"
  cat "$OUT/profile.log"
}

step_splits() {
  FLASHATTN_LIBRARY="$(lib_path)" PYTHONUNBUFFERED=1 python3 "$root/bench/decode_splits.py" ${SPLITS_ARGS:-} >"$OUT/splits.log" 2>&1
  local rc=$?
  add splits "$([ $rc = 0 ] && echo ok || echo FAIL)" "see splits.log"
  cat "$OUT/splits.log"
}

# Cost of the deterministic backward: flashattn-bench --op bwd with and without --deterministic, over the
# standard grid's head dims x causal x seqlen (16k tokens per batch, h * d = 2048) and two shapes with few
# (batch, kv head) pairs, where the deterministic grid has the fewest CTAs. detcost.json: both records of
# every point; the table: ms and the ratio.
step_detcost() {
  local exe tmp d s c det h b args rc=0
  exe=$(find_bin flashattn-bench)
  [ -n "$exe" ] || { add detcost FAIL "no flashattn-bench in $BUILD"; return 1; }
  tmp=$(mktemp -d)
  run_one() {  # name, then flashattn-bench arguments
    local name=$1; shift
    for det in 0 1; do
      "$exe" --device cuda --op bwd --no-math --no-check --iters 20 --warmup 3 $([ $det = 1 ] && echo --deterministic) \
        --json "$tmp/$name-det$det.json" "$@" >>"$OUT/detcost.log" 2>&1 || rc=1
    done
  }
  for d in 64 128 256; do
    h=$((2048 / d))
    for s in 1024 4096 16384; do
      b=$((16384 / s))
      for c in 0 1; do
        args="--dtype bf16 --batch $b --seqlen $s --heads $h --headdim $d $([ $c = 1 ] && echo --causal || echo --no-causal)"
        run_one "d$d-s$s-c$c" $args
      done
    done
  done
  run_one "mqa-b1-h16-hk1-s4096-d128-c1" --dtype bf16 --batch 1 --seqlen 4096 --heads 16 --heads-k 1 --headdim 128 --causal
  run_one "b1-h1-s16384-d128-c1" --dtype bf16 --batch 1 --seqlen 16384 --heads 1 --headdim 128 --causal
  python3 - "$tmp" "$OUT/detcost.json" >"$tmp/table.txt" <<'PY' || rc=1
import glob, json, math, os, sys
tmp, out = sys.argv[1], sys.argv[2]
head, recs, rows = None, [], []
for f in sorted(glob.glob(os.path.join(tmp, "*-det0.json"))):
    pair = []
    for det in (0, 1):
        d = json.load(open(f.replace("-det0.json", f"-det{det}.json")))
        head = head or {k: v for k, v in d.items() if k != "records"}
        r = [x for x in d["records"] if x["impl"] == "flashattn"][0]
        recs.append(r)
        pair.append(r)
    rows.append((os.path.basename(f)[:-10], pair[0]["ms"], pair[1]["ms"]))
json.dump(dict(head, records=recs), open(out, "w"), indent=1)
print(f"{'point':36s} {'bwd ms':>9s} {'determ. ms':>10s} {'ratio':>6s}")
for n, a, b in rows:
    print(f"{n:36s} {a:9.3f} {b:10.3f} {b / a:6.3f}")
g = math.exp(sum(math.log(b / a) for _, a, b in rows) / len(rows))
print(f"geomean deterministic / default: {g:.3f} over {len(rows)} points")
PY
  cat "$tmp/table.txt" | tee -a "$OUT/detcost.log"
  add detcost "$([ $rc = 0 ] && echo ok || echo FAIL)" "$(tail -1 "$tmp/table.txt") (detcost.json)"
  rm -rf "$tmp"
}

# ncu of one backward call, flashattn against torch SDPA FLASH (FA2) on the same inputs, for each shape of
# NCU_SHAPES ("batch seqlen heads headdim causal(0/1)" separated by ';'; default "4 4096 32 64 0"), bf16.
# ncu_bwd.txt: per shape, the metrics that explain a speed gap side by side (time, tensor-pipe use, issued
# instructions per pipe, stall reasons, spills, bank conflicts, atomics), then ncu's details pages for the
# warp states, instruction mix and source hot spots of both kernels.
# Per-kernel GPU time of one call, flashattn's and FA2's (tools/kernel_breakdown.py), for NCU_SHAPES.
step_breakdown() {
  local exe shape rc=0
  exe=$(find_bin flashattn-bench)
  [ -n "$exe" ] || { add breakdown FAIL "no flashattn-bench in $BUILD"; return 1; }
  : >"$OUT/breakdown.txt"
  IFS=';' read -ra shapes <<<"${NCU_SHAPES:-4 4096 32 64 0}"
  for shape in "${shapes[@]}"; do
    python3 "$root/tools/kernel_breakdown.py" "$exe" "${BREAKDOWN_OP:-bwd}" $shape >>"$OUT/breakdown.txt" 2>&1 || rc=1
  done
  add breakdown "$([ $rc = 0 ] && echo ok || echo FAIL)" "${#shapes[@]} shapes: breakdown.txt"
  cat "$OUT/breakdown.txt"
}

step_ncu() {
  local exe b s h d c rc=0 tmp shape
  exe=$(find_bin flashattn-bench)
  [ -n "$exe" ] || { add ncu FAIL "no flashattn-bench in $BUILD"; return 1; }
  tmp=$(mktemp -d)
  : >"$OUT/ncu_bwd.txt"
  IFS=';' read -ra shapes <<<"${NCU_SHAPES:-4 4096 32 64 0}"
  for shape in "${shapes[@]}"; do
    read -r b s h d c <<<"$shape"
    local n="--clock-control none --set full -c 1 -f"
    ncu $n -k regex:bwd_kernel_sm80 -o "$tmp/ours" "$exe" --device cuda --op bwd --no-math --no-check --iters 1 \
      --warmup 1 --dtype bf16 --batch "$b" --seqlen "$s" --heads "$h" --headdim "$d" \
      $([ "$c" = 1 ] && echo --causal || echo --no-causal) >>"$OUT/ncu.log" 2>&1 || rc=1
    ncu $n -k regex:flash_bwd_dq_dk_dv -o "$tmp/fa2" python3 -c "
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
q, k, v = (torch.randn($b, $h, $s, $d, device='cuda', dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
    o = F.scaled_dot_product_attention(q, k, v, is_causal=bool($c))
o.backward(torch.randn_like(o))
torch.cuda.synchronize()" >>"$OUT/ncu.log" 2>&1 || rc=1
    for r in ours fa2; do ncu --import "$tmp/$r.ncu-rep" --page raw --csv >"$tmp/$r.csv" 2>>"$OUT/ncu.log" || rc=1; done
    echo "==== shape b$b s$s h$h d$d causal $c" >>"$OUT/ncu_bwd.txt"
    python3 - "$tmp/ours.csv" "$tmp/fa2.csv" >>"$OUT/ncu_bwd.txt" <<'PY' || rc=1
import csv, re, sys
def load(path):
    rows = list(csv.reader(open(path)))
    return dict(zip(rows[0], rows[2])), dict(zip(rows[0], rows[1]))
(a, units), (b, _) = load(sys.argv[1]), load(sys.argv[2])
keep = [r"^gpu__time_duration\.sum$", r"^launch__(registers|grid_size|block_size|shared_mem)", r"^smsp__inst_executed\.sum$",
        r"^sm__inst_executed_pipe_\w+\.avg\.pct_of_peak_sustained_active$", r"^smsp__issue_active\.avg\.pct",
        r"pipe_tensor.*pct_of_peak", r"issue_stalled_\w+_per_(warp_active\.pct|issue_active\.ratio)$",
        r"bank_conflicts_pipe_lsu_mem_shared_op_(ld|st)\.sum$", r"^l1tex__t_bytes_pipe_lsu_mem_local_op_(ld|st)\.sum$",
        r"^dram__bytes_(read|write)\.sum$", r"op_(red|atom)\.sum$", r"^sm__warps_active\.avg\.pct",
        r"^smsp__sass_inst_executed_op_\w+\.sum$", r"^l1tex__data_pipe_lsu_wavefronts_mem_shared\.sum$"]
def num(x):
    try: return float(x.replace(",", ""))
    except ValueError: return None
print(f"{'metric':78s} {'flashattn':>14s} {'fa2':>14s}")
for k in a:
    if not any(re.search(p, k) for p in keep): continue
    x, y = num(a.get(k, "")), num(b.get(k, ""))
    if not x and not y: continue
    print(f"{k[:78]:78s} {a.get(k, ''):>14s} {b.get(k, ''):>14s} {units.get(k, '')}")
PY
    for r in ours fa2; do
      echo "---- $r details" >>"$OUT/ncu_bwd.txt"
      ncu --import "$tmp/$r.ncu-rep" --page details --section WarpStateStats --section InstructionStats \
        --section SourceCounters --print-details all >>"$OUT/ncu_bwd.txt" 2>&1 || rc=1
    done
  done
  grep -E '^(====|gpu__time|smsp__inst_executed.sum|sm__inst_executed_pipe_tensor)' "$OUT/ncu_bwd.txt"
  add ncu "$([ $rc = 0 ] && echo ok || echo FAIL)" "${#shapes[@]} shapes: ncu_bwd.txt"
  rm -rf "$tmp"
}

# Tile sweep: builds tests/gpu/tile_sweep.cu once per candidate tile (FLASHATTN_SWEEP_TILES) and times each.
step_sweep() {
  local sb="$root/build/sweep" t0=$SECONDS extra=()
  if [ -d "$root/.deps/gtest" ] && [ ! -f /usr/include/gtest/gtest.h ]; then
    extra+=("-DGTest_DIR=$(ls -d "$root"/.deps/gtest/lib/*/cmake/GTest | head -1)")
  fi
  [ -n "${SWEEP_TILES:-}" ] && extra+=("-DFLASHATTN_SWEEP_TILES=$SWEEP_TILES")
  {
    cmake -S "$root" -B "$sb" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHATTN_CUDA=ON -DFLASHATTN_ARCHS="$ARCHS" \
      -DFLASHATTN_HEADDIMS=64 -DFLASHATTN_DTYPES=bf16 -DFLASHATTN_CUDA_JOBS="$JOBS" -DFLASHATTN_GPU_TILE_SWEEP=ON "${extra[@]}"
    ninja -C "$sb" -j "$JOBS" $(ninja -C "$sb" -t targets all | grep -o '^tile_sweep_[0-9a-z_]*' | sort -u)
    for exe in "$sb"/tests/gpu/tile_sweep_*; do "$exe"; done
  } >"$OUT/sweep.log" 2>&1
  grep '^sweep' "$OUT/sweep.log"
  add sweep "$(grep -q '^sweep' "$OUT/sweep.log" && echo ok || echo FAIL)" "$(grep -c '^sweep' "$OUT/sweep.log") timings ($((SECONDS - t0)) s)"
}

# A/B of kernel variants without a commit each: VARIANTS="base name=patch ..." ("base" = this tree; a
# patch, relative to the repository root, e.g. carried under build/variants/, is applied to a copy of the
# tree). Each variant's flashattn-bench is built (head dims / dtypes / families from the environment) in
# parallel, then every shape of CLI_SHAPES (';'-separated flashattn-bench arguments) runs on each variant in
# turn, twice in alternating order, and the table gives each variant's best median ms and TFLOP/s.
# VARIANT_NCU=1 adds ncu metrics of the first variant's forward kernel per shape (variants-ncu.txt).
step_variants() {
  local t0=$SECONDS v name patch dir pids=() rc=0 shape
  local -A vdir
  : >"$OUT/variants.log"
  for v in ${VARIANTS:-base}; do
    name=${v%%=*}
    if [ "$v" = base ]; then
      dir=$root
    else
      patch=$root/${v#*=}
      dir=/tmp/variant-$name
      rm -rf "$dir" && mkdir -p "$dir"
      tar -C "$root" --exclude=./build -cf - . | tar -C "$dir" -xf -
      (cd "$dir" && patch -p1 -s <"$patch") >>"$OUT/variants.log" 2>&1 || { add variants FAIL "patch $patch"; return 1; }
    fi
    vdir[$name]=$dir/build/variant
    (
      cmake -S "$dir" -B "$dir/build/variant" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHATTN_CUDA=ON \
        -DFLASHATTN_ARCHS="$ARCHS" -DFLASHATTN_HEADDIMS="$HEADDIMS" -DFLASHATTN_DTYPES="$DTYPES" \
        -DFLASHATTN_FAMILIES="$FAMILIES" -DFLASHATTN_CUDA_JOBS="$JOBS" -DFLASHATTN_BUILD_TESTS=OFF &&
        cmake --build "$dir/build/variant" -j "$JOBS" --target flashattn-bench
    ) >"$OUT/variant-$name.build" 2>&1 &
    pids+=($!)
  done
  for v in "${pids[@]}"; do wait "$v" || rc=1; done
  cat "$OUT"/variant-*.build >>"$OUT/variants.log"; rm -f "$OUT"/variant-*.build
  [ $rc = 0 ] || { tail -30 "$OUT/variants.log"; add variants FAIL "build ($((SECONDS - t0)) s)"; return 1; }
  local first order round n line
  first=${VARIANTS:-base}; first=${first%% *}; first=${first%%=*}
  IFS=';' read -ra shapes <<<"${CLI_SHAPES:---batch 2 --seqlen 8192 --heads 16 --headdim 128 --causal}"
  {
    printf '%-70s' shape; for n in ${VARIANTS:-base}; do printf ' %18s' "${n%%=*} ms/TFLOPs"; done; echo
  } >"$OUT/variants.txt"
  for shape in "${shapes[@]}"; do
    local -A best=()
    for round in 0 1; do
      order=(${VARIANTS:-base}); [ $round = 1 ] && order=($(printf '%s\n' "${order[@]}" | tac))
      for v in "${order[@]}"; do
        name=${v%%=*}
        line=$("${vdir[$name]}/bench/cli/flashattn-bench" --device cuda --op "${VARIANT_OP:-fwd}" --no-math --no-check --iters 50 \
          --warmup 5 $shape 2>>"$OUT/variants.log" | tee -a "$OUT/variants.log" | awk '$1 == "flashattn" {print $3, $4}')
        [ -n "$line" ] || { rc=1; continue; }
        if [ -z "${best[$name]:-}" ] || awk -v a="${line% *}" -v b="${best[$name]% *}" 'BEGIN {exit !(a < b)}'; then
          best[$name]=$line
        fi
      done
    done
    {
      printf '%-70s' "$shape"
      for v in ${VARIANTS:-base}; do name=${v%%=*}; printf ' %18s' "$(echo "${best[$name]:-- -}" | awk '{printf "%.4f/%.1f", $1, $2}')"; done
      echo
    } >>"$OUT/variants.txt"
    if [ "${VARIANT_NCU:-0}" = 1 ]; then
      echo "==== $first: $shape" >>"$OUT/variants-ncu.txt"
      ncu --clock-control none -k regex:fwd_kernel_sm80 -c 1 -f --metrics \
gpu__time_duration.sum,smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,\
sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,\
sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active,\
smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_dispatch_stall_per_issue_active.ratio,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_tex_throttle_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio,sm__warps_active.avg.pct_of_peak_sustained_active \
        "${vdir[$first]}/bench/cli/flashattn-bench" --device cuda --op fwd --no-math --no-check --iters 1 --warmup 0 $shape \
        2>&1 | grep -E '^\s+(gpu__|smsp__|sm__)' >>"$OUT/variants-ncu.txt"
    fi
  done
  cat "$OUT/variants.txt"
  add variants "$([ $rc = 0 ] && echo ok || echo FAIL)" "${#shapes[@]} shapes x $(echo ${VARIANTS:-base} | wc -w) variants ($((SECONDS - t0)) s): variants.txt"
}

nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader 2>/dev/null | head -1 >"$OUT/summary.txt"
for s in $STEPS; do
  echo "==== $s"
  "step_$s" || { [ "$s" = build ] && break; }
done
{
  echo "==== summary ($(cat "$OUT/summary.txt"))"
  for l in "${SUMMARY[@]}"; do echo "$l"; done
} | tee -a "$OUT/summary.txt"
