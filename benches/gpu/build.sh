#!/usr/bin/env bash
# Builds benches/gpu/bin/gpu_bench HERE (a machine with cargo but maybe no GPU), for
# benches/gpu/run.sh on the GPU machine, which has no cargo and no network.
#
# The binary is linked dynamically (cudarc's `dynamic-linking`, the one configuration of the
# build) against libcuda.so.1 and libnvrtc.so.13; the GPU machine's own libraries are used at
# run time (run.sh finds them). CUDARC_CUDA_VERSION=13000 makes cudarc use CUDA 13.0's API,
# the driver there (580) being 13.0: every symbol the binary imports then exists in that
# driver and NVRTC, and PTX comes from that machine's NVRTC, so its driver can load it.
set -euo pipefail
cd "$(dirname "$0")/../.."
# nvcc (for cudarc's version probe), libnvrtc and a libcuda stub to link against.
eval "$(scripts/check-cuda --env)"
export CUDARC_CUDA_VERSION=13000
# The workspace's release profile uses fat LTO (minutes on 2 cores); thin is enough here.
export CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
target=${CARGO_TARGET_DIR:-target}
cargo build --locked --release -p setr-cuda --features cuda --example gpu_bench
mkdir -p benches/gpu/bin
cp "$target/release/examples/gpu_bench" benches/gpu/bin/gpu_bench
ls -la benches/gpu/bin/gpu_bench
echo "built; on the GPU machine: benches/gpu/run.sh (carry benches/gpu/bin)"
