#!/usr/bin/env bash
# The prepared GPU check (issues 8 and 18), one call of a few minutes on one H100/H200: issue 18's table (our SFT,
# 8 steps per train batch, PSFT, PSFT with refresh_batch_size 16, full logits, padding-free on fixed lengths and on
# a length mix, TRL SFTTrainer, a plain loop; steady-state tokens/s, peak memory, MFU), the log-prob head's memory,
# and a short HF generation check. The Qwen2.5-1.5B shape by default; --quick for the small shape.
#   benchmarks/gpu_check.sh [--quick] [extra args for gpu_check.py]
# JSON summary: benchmarks/results/<date>_<device>.json (or --out FILE), rewritten after every row.
# GPU_CHECK_TIMEOUT (s, default 540) bounds the run; GPU_CHECK_VLLM=1 adds vLLM to the generation check.
# Uses .venv-gpu or .venv if present (the GPU lock: transformers 5.17; the CPU lock's 5.24 works too).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
for venv in .venv-gpu .venv; do
  if [ -x "$venv/bin/python" ]; then PY="$venv/bin/python"; break; fi
done
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONHASHSEED=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
VLLM=(--no-vllm)
if [ "${GPU_CHECK_VLLM:-0}" = 1 ]; then VLLM=(); fi
timeout "${GPU_CHECK_TIMEOUT:-540}" "$PY" benchmarks/gpu_check.py "${VLLM[@]}" "$@"
