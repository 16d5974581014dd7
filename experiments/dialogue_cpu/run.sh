#!/usr/bin/env bash
# The dialogue on top of the CPU quickstart (what `make demo` runs after experiments/quickstart_cpu/run.sh):
#   1. train the text-to-semantic stage on the quickstart's token folder (~12 min, t2s_experiment=quickstart_cpu)
#   2. pick two training voices and six held-out sentences (pick_script.py)
#   3. speak them with soundstorm-dialogue, scored per turn (WER, speaker attribution, pause boundaries)
#      against SoundStorm on the same sentences' true semantic tokens (evaluation.reference=true)
# Outputs in $OUT/dialogue/: dialogue.{wav,json,png}, reference.{wav,json,png}, script.txt, voices.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python}"
OUT="${OUT:-outputs/quickstart}"
export WANDB_MODE="${WANDB_MODE:-offline}" PYTHONUNBUFFERED=1
ASR="${ASR:-null}" VERIFIER="${VERIFIER:-null}"

soundstorm_ckpt=$(ls -d "$OUT"/train/checkpoints/step_* 2>/dev/null | tail -n 1 || true)
if [ -z "$soundstorm_ckpt" ]; then
  echo "no SoundStorm checkpoint under $OUT/train/checkpoints: run experiments/quickstart_cpu/run.sh first" >&2
  exit 2
fi
"$PY" -m soundstorm.cli.train_t2s t2s_experiment=quickstart_cpu data.root="$OUT/tokens" out_dir="$OUT/t2s" \
  logger.dir="$OUT" trainer.progress=false "$@"
t2s_ckpt=$(ls -d "$OUT"/t2s/checkpoints/step_* | tail -n 1)

"$PY" experiments/dialogue_cpu/pick_script.py "$OUT/tokens" "$OUT/dialogue"
voice() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$OUT/dialogue/voices.json" "$1"; }
"$PY" -m soundstorm.cli.dialogue t2s_checkpoint="$t2s_ckpt" soundstorm_checkpoint="$soundstorm_ckpt" \
  assets="$OUT/tokens" script="@$OUT/dialogue/script.txt" voices.A="$(voice A)" voices.B="$(voice B)" \
  backend=cpu sampler=greedy out_dir="$OUT/dialogue" evaluation.asr="$ASR" evaluation.verifier="$VERIFIER" \
  evaluation.reference=true
