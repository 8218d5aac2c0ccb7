#!/usr/bin/env bash
# Runs kernels/*.cu on the CPU (one std::thread per CUDA thread, see shim.h) against a plain
# reference: a check of the kernels' logic for machines without a GPU. About 1.5 minutes on
# 2 cores; --long adds mid-scan and merge compactions (about 2 more minutes).
#     benches/gpu/emulate/run.sh [--long]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$here/../../../kernels" "$work" <<'PY'
import sys
root, out = sys.argv[1], sys.argv[2]
common = open(f"{root}/topk_common.cuh").read()
for f in ["scan_topk.cu", "merge_topk.cu", "l2_normalize_f16.cu"]:
    s = open(f"{root}/{f}").read().replace('#include "topk_common.cuh"', common)
    s = s.replace("extern __shared__ __align__(16) unsigned char smem[];", "unsigned char* smem = g_dyn_smem;")
    s = s.replace('asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));', "f = emu_h2f(h);")
    s = s.replace('asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));', "h = emu_f2h(f);")
    s = s.replace('extern "C" ', "")
    if "asm(" in s:
        sys.exit(f"{f}: inline PTX the emulator does not know; extend run.sh")
    open(f"{out}/{f.replace('.cu', '.inc')}", "w").write(s)
PY
cp "$here/shim.h" "$here/main.cpp" "$work/"
g++ -std=c++20 -O1 -ffp-contract=off -pthread -o "$work/emu" "$work/main.cpp"
"$work/emu" "$@"
