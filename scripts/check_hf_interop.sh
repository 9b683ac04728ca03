#!/usr/bin/env bash
# Developer-run interop check: exports the tiny-a fixture model with siqvl, loads the export in
# PyTorch with the Hugging Face modeling code (AutoModelForCausalLM + trust_remote_code, and the
# vision/ and text/ folders as SiglipVisionModel / Qwen2ForCausalLM), and compares logits and
# greedy tokens with the project's own.
#
# Needs: Python with torch (Debian: apt-get install python3-torch python3-packaging python3-regex
# python3-tqdm python3-filelock python3-yaml python3-requests python3-numpy) and the HF modeling
# code: a `transformers` importable by that Python, or a directory made by
# /work/shared/tools/setup_hf.sh given in SIQVL_HF_ENV (its src/ and stubs/ go on PYTHONPATH).
# Skips (exit 0, with a message) when either is missing.
#
# Usage: scripts/check_hf_interop.sh [FIXTURE_DIR]   (default /work/shared/fixtures/tiny-a)
#        env: PYTHON (default /usr/bin/python3 if present, else python3), SIQVL_HF_ENV,
#             KEEP=1 keeps the work directory.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIXTURE=${1:-/work/shared/fixtures/tiny-a}
if [ "$FIXTURE" = "-h" ] || [ "$FIXTURE" = "--help" ]; then
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 0
fi
PY=${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || command -v python3 || true )}
skip() { echo "check_hf_interop: SKIPPED — $*"; exit 0; }
[ -n "$PY" ] || skip "no python3 found (set PYTHON)"
"$PY" -c "import torch" 2>/dev/null ||
  skip "$PY cannot import torch (Debian: apt-get install python3-torch)"
if [ -n "${SIQVL_HF_ENV:-}" ]; then
  [ -d "$SIQVL_HF_ENV/src/transformers" ] ||
    skip "SIQVL_HF_ENV=$SIQVL_HF_ENV has no src/transformers (make it with setup_hf.sh)"
  export PYTHONPATH="$SIQVL_HF_ENV/src:$SIQVL_HF_ENV/stubs${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import transformers.models.qwen2.modeling_qwen2, transformers.models.siglip.modeling_siglip" \
  2>/dev/null ||
  skip "the HF modeling code is not importable by $PY (set SIQVL_HF_ENV to a setup_hf.sh directory)"
[ -f "$FIXTURE/siqvl_config.json" ] || skip "no fixture at $FIXTURE"

WORK=$(mktemp -d -t siqvl_hf_interop.XXXXXX)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
export HF_MODULES_CACHE="$WORK/hf_modules" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cd "$ROOT"
# One model.safetensors; sharded (index + shards, as large models are exported); and a stage-2
# style LoRA export (base weights + adapter beside them, merged by the modeling code on load).
k=0
for variant in "" "--shard_bytes 40000" "--lora"; do
  k=$((k + 1))
  OUT="$WORK/run$k"
  echo "== export${variant:+ ($variant)}"
  # shellcheck disable=SC2086
  XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} deno run -A --unstable-webgpu \
    scripts/hf_interop_export.ts "$FIXTURE" "$OUT" $variant
  "$PY" python/siqvl_hf/check/check_interop.py "$OUT" "$FIXTURE"
done
