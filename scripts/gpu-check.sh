#!/usr/bin/env bash
# On a machine with a real GPU: prints the adapter, runs the kernel tests and the benchmark.
# Usage: scripts/gpu-check.sh [--json]   (set WGPU_BACKEND to pin an API; default vulkan)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
command -v vulkaninfo >/dev/null 2>&1 && vulkaninfo --summary 2>/dev/null | grep -E "deviceName|driverName|apiVersion" || true
cargo build "${DI_CARGO_SELECTION[@]}"
# Kernel correctness on this adapter (the backend assertion follows WGPU_BACKEND).
EXPECT_WGPU_BACKEND="$WGPU_BACKEND" cargo test "${DI_CARGO_SELECTION[@]}" -p kernels
"$CARGO_TARGET_DIR/debug/inspector" bench --iters 50 "$@"
