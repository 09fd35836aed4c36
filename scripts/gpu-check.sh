#!/usr/bin/env bash
# One-shot GPU check for a lent device machine (issues 2, 3 and 8), run from the repo root there:
#   carry: target/release/negimg (built here against the venv's torch 2.11) and a copy of
#   ../shared/tools/diffusers_baseline.py (../shared does not travel), e.g. in .device/.
#   usage: scripts/gpu-check.sh PEER_SCRIPT [OUT_DIR]
# Prints doctor (CUDA + fp16 matmul), negimg bench at batch 1/8/16/32 and the peer at its
# best batch sizes, all on the same machine in one sitting, as JSON lines.
set -u
peer=${1:?usage: scripts/gpu-check.sh PEER_SCRIPT [OUT_DIR]}
out=${2:-${OUT:-/tmp}}
export LD_LIBRARY_PATH="$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib"
bin=target/release/negimg
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  "$bin" doctor --device cuda --dtype fp16 --matmul
  for b in 1 8 16 32; do "$bin" bench --device cuda --dtype fp16 --batch "$b" --reps 3; done
  for b in 1 16 32; do python3 "$peer" --device cuda --dtype fp16 --batch "$b" --reps 3 2>/dev/null | tail -1; done
} 2>&1 | tee "$out/gpu-check.txt"
