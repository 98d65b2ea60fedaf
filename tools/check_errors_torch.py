"""Errors raised inside libflashattn must reach the caller as Python exceptions, never a crash.

Run on a GPU host by tools/device_check.sh (step errors) against the library it built. Each case runs in
its own subprocess (a crash is reported as that case's exit status instead of ending the run), with
faulthandler on; a crashed case is re-run under gdb when the host has it, for a native backtrace. The
numpy cases raise through the same C API without torch in the process, which separates a fault of the
library's error path from one of the torch integration (the package imports torch when it is
installed, so torch's runtime libraries are loaded either way).
"""
import shutil
import subprocess
import sys

TORCH = "import torch, flashattn as fa\n"
NUMPY = "import numpy as np, flashattn as fa\n"
# name: (prelude, code, expected outcome: "raised", "returned", or "either")
CASES = {
    # a head dim left out of the build (device_check builds it with FLASHATTN_HEADDIMS not naming 32)
    "torch_unbuilt_head_dim_32": (TORCH, "q = torch.randn(1, 64, 2, 32, device='cuda', dtype=torch.bfloat16)\n"
                                         "r = fa.flash_attn_func(q, q, q)", "either"),
    # head_dim % 8 != 0 runs padded to 64 by the package (as flash_attn does), not an error
    "torch_head_dim_59_padded": (TORCH, "q = torch.randn(1, 64, 2, 59, device='cuda', dtype=torch.bfloat16)\n"
                                        "r = fa.flash_attn_func(q, q, q)", "either"),
    # invalid: k's head dim differs from q's (rejected by the library's validation)
    "torch_mismatched_k": (TORCH, "q = torch.randn(1, 64, 2, 64, device='cuda', dtype=torch.bfloat16)\n"
                                  "k = torch.randn(1, 64, 2, 128, device='cuda', dtype=torch.bfloat16)\n"
                                  "r = fa.flash_attn_func(q, k, k)", "raised"),
    "numpy_mismatched_k": (NUMPY, "q = np.zeros((1, 64, 2, 64), np.float32); k = np.zeros((1, 64, 2, 128), np.float32)\n"
                                  "r = fa.flash_attn_func(q, k, k)", "raised"),
}
BODY = """
try:
{code}
    print('returned', tuple(r.shape))
except Exception as e:
    print('raised', type(e).__name__, str(e).splitlines()[0][:160])
"""


def script(case):
    prelude, code, _ = CASES[case]
    return prelude + BODY.format(code="\n".join("    " + line for line in code.splitlines()))


def main():
    bad = []
    for name in CASES:
        r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", script(name)], capture_output=True,
                           text=True, timeout=180)
        out = (r.stdout.strip().splitlines() or [""])[-1]
        expected = CASES[name][2]
        ok = r.returncode == 0 and out.split(" ")[0] in (("raised", "returned") if expected == "either" else (expected,))
        print(f"errors {name:32s} {'ok' if ok else 'FAIL'}  exit={r.returncode}  {out}")
        if not ok:
            bad.append(name)
            print("  stderr: " + "\n  stderr: ".join(r.stderr.strip().splitlines()[-25:]))
    gdb = shutil.which("gdb")
    for name in bad[:1] if gdb else []:
        r = subprocess.run([gdb, "-batch", "-ex", "run", "-ex", "bt 30", "--args", sys.executable, "-c", script(name)],
                           capture_output=True, text=True, timeout=300)
        print(f"gdb backtrace of {name}:\n" + "\n".join(r.stdout.strip().splitlines()[-45:]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
