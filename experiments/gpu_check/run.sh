#!/usr/bin/env bash
# One-go CUDA check for a session that has a GPU (nothing here runs without one).
#
#   bash experiments/gpu_check/run.sh            # JSON + logs into $OUT (the device tool's folder) or docs/results/
#
# 1. pytest -m cuda tests/test_cuda.py (bf16 autocast, CUDA-graph replays vs eager tokens, torch.compile, bench)
# 2. soundstorm-bench, paper preset, 30 s, batch 1, bf16: eager, then compile=true cuda_graphs=true
# 3. soundstorm-bench mode=train at the CUDA recipe's shapes (EnCodec 75 Hz, Q = 8, 30 s windows)
# Every file name carries the card (e.g. NVIDIA_H100_80GB_HBM3). Each step has its own timeout so a
# hang cannot eat the device budget; a failing step is reported and the next one still runs.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-docs/results}
mkdir -p "$OUT"
CARD=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tr -c 'A-Za-z0-9\n' '_')
if [ -z "$CARD" ]; then
  echo "run.sh: error: no CUDA device visible to torch" >&2
  exit 2
fi
echo "card: $CARD"
nvidia-smi > "$OUT/gpu_check_${CARD}_nvidia_smi.txt" 2>&1 || true
status=0

step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name"
  if ! timeout "$limit" "$@" > "$OUT/gpu_check_${CARD}_${name}.log" 2>&1; then
    echo "   FAILED (see $OUT/gpu_check_${CARD}_${name}.log)"
    status=1
  fi
  tail -n 15 "$OUT/gpu_check_${CARD}_${name}.log"
}

BENCH=("$PY" -m soundstorm.cli.bench backend=cuda dtype=bfloat16 duration_s=30 runs=5 overwrite=true "hydra.run.dir=/tmp/gpu_check_hydra")
step pytest_cuda 300 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
step bench_eager 150 "${BENCH[@]}" "output_json=$OUT/cuda_${CARD}_paper_30s_bf16_eager.json"
step bench_compile_graphs 300 "${BENCH[@]}" compile=true cuda_graphs=true \
  "output_json=$OUT/cuda_${CARD}_paper_30s_bf16_compile_graphs.json"
step bench_train 150 "$PY" -m soundstorm.cli.bench mode=train backend=cuda dtype=bfloat16 duration_s=30 \
  frame_rate_hz=75 model.num_levels=8 model.semantic_upsample=3 batch_size=4 runs=5 warmup=2 overwrite=true \
  "hydra.run.dir=/tmp/gpu_check_hydra" "output_json=$OUT/cuda_${CARD}_recipe_30s_bf16_train_b4.json"
exit $status
