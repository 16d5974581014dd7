#!/usr/bin/env bash
# Int8 against float32 on the trained quickstart model: the same held-out utterances, greedy decoding.
# Writes $OUT/int8_eval/metrics.json: the int8 model's evaluation, plus "int8_vs_float32" (token
# agreement with fp32 per level, accuracy and mel distance of each, their difference).
# Needs a finished quickstart (bash experiments/quickstart_cpu/run.sh, or make demo) in $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python}"
OUT="${OUT:-outputs/quickstart}"
checkpoint=$(ls -d "$OUT"/train/checkpoints/step_* | tail -n 1)
"$PY" -m soundstorm.cli.eval overwrite=true checkpoint="$checkpoint" data.root="$OUT/tokens" out_dir="$OUT/int8_eval" \
  codec=melrvq codec.num_levels=4 codec.codebook_size=64 semantic=mfcc_kmeans semantic.vocab_size=1024 \
  backend=cpu backend.options.num_threads=1 backend.options.dtype=int8 evaluation.compare_int8=true \
  data.min_seconds=2.0 data.max_seconds=4.0 sampler=greedy evaluation.window_seconds=4.0 \
  evaluation.max_utterances=20 evaluation.long_seconds=30 evaluation.num_examples=2 "$@"
