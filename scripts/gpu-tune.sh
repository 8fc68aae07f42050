#!/usr/bin/env bash
# On a machine with a real GPU, after a build (or after ../shared/gpu/on-gpu.sh unpacked the
# binaries): times the lite0-256 engine and the anomaly model under each kernel variant of
# the adapter table (kernels/src/ops/tuning.rs), to fill or check its GPU row.
# Usage: scripts/gpu-tune.sh [INSPECTOR_BINARY] [OUT_DIR]
set -u
I="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/defect-inspector-target}/debug/inspector}"
OUT="${2:-gpu-tune}"; mkdir -p "$OUT"
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
run() {  # name, env assignments...
  local name=$1; shift
  env "$@" timeout 120 "$I" bench --json --no-cpu --no-burn --own-device --batches 1,32,128 \
    --banks 65536 --iters 40 > "$OUT/tune-$name.json" 2> "$OUT/tune-$name.err"
  python3 - "$OUT/tune-$name.json" "$name" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"{sys.argv[2]:28s} failed: {e}"); sys.exit()
m = d["models"]; lite = next(v for k, v in m.items() if k.startswith("lite0"))
e = lite["engine"]; a = m.get("anomaly-256", {}).get("bank_65536", {})
p1 = lite.get("profile_batch_1", {})
print(f"{sys.argv[2]:28s} b1 {e['batch_1']['p50_ms']:.3f} ms  b32 {e['batch_32']['images_per_s']:.0f}/s"
      f"  b128 {e['batch_128']['images_per_s']:.0f}/s  gpu-sum b1 {p1.get('dispatch_sum_ms', 0):.3f} ms"
      f"  bank64k {a.get('memory_bank_ms_alone', 0):.3f} ms  frame {a.get('batch_1', {}).get('p50_ms', 0):.3f} ms"
      f"  [{lite.get('kernel_config')}]")
PY
}
run table                                   # the adapter table's choice
run direct-cpu-bank KERNELS_POINTWISE=direct KERNELS_BANK=cpu   # the CPU row (today's lavapipe path)
for t in 8x8x4x4x8 16x8x4x2x8 8x16x2x2x8 16x16x4x2x4 8x8x4x2x4; do
  run "gemm-$t" KERNELS_POINTWISE=gemm:$t
done
# Split-K for the GEMM dispatches that fill few workgroups (batch 1's long-K projections):
# MIN_WORKGROUPSxMAX_SLICESxMIN_K_STEPS; off in the table until these rows show that it pays.
for k in 128x8x4 256x8x2 64x4x4 512x16x2; do
  run "split-$k" KERNELS_SPLIT_K=$k
done
# The tile of single-frame calls (the table's GPU row: 8x8x2x2x8; it must be as wide as the
# batch tile, TN·RN = 16): the batch tile everywhere, then other candidates.
run latency-off KERNELS_LATENCY_TILE=off
for t in 8x8x1x2x8 8x8x2x2x4 16x4x1x4x8; do
  run "latency-$t" KERNELS_LATENCY_TILE=$t
done
