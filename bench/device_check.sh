#!/usr/bin/env bash
# One-command device check for a machine with a GPU, Deno and a Vulkan loader but no network
# (bring what it needs with ../shared/device/pack.sh, then `source .gpu/env.sh` there):
#
#   bash bench/device_check.sh [--quick | --full] [--out DIR]
#
#   1. adapter: name, backend, limits, verified features (timestamp queries, shader-f16)
#   2. correctness: every kernel family's tests against their float64 references, with the GPU
#      kernel variants forced (SIQVL_KERNELS=gpu: the workgroup-tiled GEMM and attention forward,
#      tests/gpu_variants_test.ts) — on lavapipe this checks the GPU paths; on a GPU it checks
#      what the GPU would run anyway
#   3. benchmarks: matmul GFLOP/s per variant at the real shapes (texture kernel with its two tile
#      shapes vs the tiled storage-buffer kernel), attention (both forwards), linear-CE, AdamW
#      (bench/kernels.ts), a real-shape LoRA training step under the profiler
#      (bench/train_step.ts), prefill and decode tokens/s (bench/model_real.ts)
#
# --quick (the default on a CPU/fallback adapter such as lavapipe, where real shapes take many
# minutes): small shapes for the kernel table and the CI-scale training step, no model_real.
# --full (the default on a GPU): real shapes everywhere. Results go to DIR (default
# /tmp/siqvl-device-check): the logs, the training-step profile JSON and a summary.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=auto out=/tmp/siqvl-device-check
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) mode=quick ;;
    --full) mode=full ;;
    --out) out=$2; shift ;;
    *) echo "usage: bash bench/device_check.sh [--quick|--full] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} NO_COLOR=1
run() { deno run -A --unstable-webgpu "$@"; }
status=0
start=$(date +%s)

echo "== 1. adapter"
fallback=$(run - <<'EOF' 2>&1 | tee "$out/adapter.txt" | tail -1
import { Gpu } from "./src/gpu/device.ts";
const g = await Gpu.get();
const info = g.adapter.info;
console.log(g.describe());
console.log(`vendor ${info.vendor}, architecture ${info.architecture}, device ${info.device}`);
console.log(`features: ${[...g.device.features].sort().join(", ")}`);
console.log(`timestamp queries ${g.features.timestampQuery ? "yes" : "no"}`);
console.log(g.isFallbackAdapter ? "fallback" : "gpu");
EOF
)
cat "$out/adapter.txt"
if [ "$mode" = auto ]; then [ "$fallback" = gpu ] && mode=full || mode=quick; fi
echo "mode: $mode"

echo "== 2. correctness (GPU kernel variants forced: SIQVL_KERNELS=gpu)"
tests="gpu_variants matmul attention linear_ce elementwise embedding nn optim rope_softmax tape kernel profile"
files=$(for t in $tests; do echo "tests/${t}_test.ts"; done)
if SIQVL_KERNELS=gpu deno test -A --unstable-webgpu $files >"$out/tests.log" 2>&1; then
  echo "all kernel tests passed: $(grep -E '^ok \|' "$out/tests.log" | tail -1)"
else
  status=1
  echo "KERNEL TESTS FAILED (see $out/tests.log):"
  grep -E 'FAILED|^error' "$out/tests.log" | head -20
fi

echo "== 3. benchmarks"
if [ "$mode" = quick ]; then
  run bench/kernels.ts --quick --variants 2>&1 | tee "$out/kernels.log" || status=1
  run bench/train_step.ts --scale ci --only lora --steps 1 --profile \
    --profile_json "$out/profile" 2>&1 | tee "$out/train_step.log" || status=1
else
  run bench/kernels.ts --variants 2>&1 | tee "$out/kernels.log" || status=1
  run bench/train_step.ts --scale real --only lora --steps 1 --profile \
    --profile_json "$out/profile" 2>&1 | tee "$out/train_step.log" || status=1
  run bench/model_real.ts --tokens 100 --new 32 --json "$out/model_real.json" 2>&1 |
    tee "$out/model_real.log" || status=1
fi

echo "== summary ($(($(date +%s) - start)) s, mode $mode, results in $out)"
head -1 "$out/adapter.txt"
grep -E '^ok \||FAILED' "$out/tests.log" | tail -1
grep -E '^\| (matmul|attention)' "$out/kernels.log" | head -40
grep -E '^(ci|real) lora' "$out/train_step.log"
[ -f "$out/model_real.log" ] && grep -E '^generate' "$out/model_real.log"
exit $status
