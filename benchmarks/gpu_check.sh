#!/usr/bin/env bash
# The prepared GPU check (issue 8): trainer tokens/s for SFT and PSFT in bf16, log-prob head memory (chunked vs
# full logits), a short generation eval (HF, and vLLM when installed). One GPU, well under 8 minutes.
#   benchmarks/gpu_check.sh [extra args for gpu_check.py]     JSON summary on stdout and in $OUT (or results/)
# Uses .venv (or .venv-gpu) if present; otherwise python3 on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
for venv in .venv-gpu .venv; do
  if [ -x "$venv/bin/python" ]; then PY="$venv/bin/python"; break; fi
done
OUT_DIR="${OUT:-results/benchmarks}"
mkdir -p "$OUT_DIR"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONHASHSEED=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
timeout 470 "$PY" benchmarks/gpu_check.py --out "$OUT_DIR/gpu_check.json" "$@"
