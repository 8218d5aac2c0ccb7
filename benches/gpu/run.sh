#!/usr/bin/env bash
# THE device script of setr's CUDA path, for the GPU machine (no network, no cargo): checks
# every kernel against its CPU twin, measures the copy bandwidth, times the fused scan +
# merge on a 1M x 512 fp16 gallery (batch 1..256, k 10..4096, union and intersection) next
# to torch and CuPy, and prints the table last. Full results go to $OUT (or /tmp/setr-gpu).
#
#     benches/gpu/build.sh                 # here first: builds benches/gpu/bin/gpu_bench
#     benches/gpu/run.sh [--dry-run] [gpu_bench arguments...]
#
# From a session: run(command="benches/gpu/run.sh", carry=["benches/gpu/bin"], timeout_s=540).
# --dry-run works on a machine without GPU (CPU twin only, peers skipped).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/setr-gpu}
mkdir -p "$OUT"
DRY=()
if [ "${1:-}" = --dry-run ]; then DRY=(--dry-run); shift; fi
BIN=benches/gpu/bin/gpu_bench
if [ ! -x "$BIN" ]; then
  echo "run.sh: $BIN missing: run benches/gpu/build.sh on a machine with cargo and carry benches/gpu/bin" >&2
  exit 1
fi

# The binary NEEDS libnvrtc.so.13 (with libnvrtc-builtins beside it) and libcuda.so.1: take
# this machine's own (its NVRTC makes PTX its driver loads), from the CUDA toolkit or from
# python's nvidia wheels.
libdir_of() {
  for d in "$@"; do
    [ -n "$d" ] && ls "$d"/"$LIB"* >/dev/null 2>&1 && { echo "$d"; return; }
  done
}
PYLIBS=$(python3 -c 'import site,glob; print(" ".join(sorted(set(p.rsplit("/",1)[0] for s in site.getsitepackages() for p in glob.glob(s+"/nvidia/*/lib/libnvrtc.so*")))))' 2>/dev/null)
LIB=libnvrtc.so.13
NVRTC_DIR=$(libdir_of "${CUDA_HOME:-}/lib64" /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $PYLIBS)
LIB=libcuda.so.1
CUDA_DIR=$(libdir_of /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 "$(ldconfig -p 2>/dev/null | awk '/libcuda.so.1 /{print $NF; exit}' | xargs -r dirname)")
export LD_LIBRARY_PATH="${NVRTC_DIR:+$NVRTC_DIR:}${CUDA_DIR:+$CUDA_DIR:}${LD_LIBRARY_PATH:-}"
if [ ${#DRY[@]} = 1 ] && { [ -z "$CUDA_DIR" ] || [ -z "$NVRTC_DIR" ]; }; then
  # No driver here: the dry run only needs the binary to load, so link-time stand-ins do.
  eval "$(scripts/check-cuda --env)"
  CUDA_DIR=${CUDA_DIR:-stub} NVRTC_DIR=${NVRTC_DIR:-wheel}
fi
echo "libnvrtc from: ${NVRTC_DIR:-not found}; libcuda from: ${CUDA_DIR:-not found}"
if [ ${#DRY[@]} = 0 ]; then
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
  ldd "$BIN" | grep -E 'nvrtc|cuda' | tee "$OUT/ldd.txt"
fi

ROWS=1000000 DIM=512 BATCHES=1,4,16,64,256 KS=10,100,1000,4096
PYTHONUNBUFFERED=1 timeout 240 python3 benches/gpu/peers.py "${DRY[@]}" --rows $ROWS --dim $DIM \
  --batches $BATCHES --ks $KS --out "$OUT/peers.tsv" 2>&1 | tee "$OUT/peers.log"
[ "${PIPESTATUS[0]}" = 0 ] || echo "peers failed or timed out (see peers.log); the table has no peer columns"

"$BIN" "${DRY[@]}" --rows $ROWS --dim $DIM --batches $BATCHES --ks $KS --reps 20 \
  --peers "$OUT/peers.tsv" --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log"
status=${PIPESTATUS[0]}
echo "run.sh: gpu_bench exit status $status; results in $OUT"
exit "$status"
