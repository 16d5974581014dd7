#!/usr/bin/env bash
# The dialogue on top of the CPU quickstart (what `make dialogue` runs, after `make demo`):
#   1. train the text-to-semantic stage on the quickstart's token folder (~12 min, t2s_experiment=quickstart_cpu)
#   2. pick the two training voices least alike (speaker verifier) and six held-out sentences (pick_script.py)
#   3. speak them with soundstorm-dialogue, scored per turn (WER, speaker attribution, pause boundaries)
#      against SoundStorm on the same sentences' true semantic tokens (evaluation.reference=true)
#   4. the first stage in the speech table: soundstorm-eval with evaluation.speech.t2s_checkpoint adds the
#      text_to_semantic row (held-out text → semantic tokens → SoundStorm) beside the prompted row
# Outputs in $OUT/dialogue/: dialogue.{wav,json,png}, reference.{wav,json,png}, script.txt, voices.json;
# $OUT/t2s_eval/: metrics.json (speech), speech_table.{md,png}.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python}"
# The cores Python may run on: one recognizer worker each. Asked of Python, not `nproc`, so that
# PYTHON="taskset -c 0 python" counts one (and macOS, which has no nproc, counts its cores).
cores() { "$PY" -c 'import os; f = getattr(os, "sched_getaffinity", None); print(len(f(0)) if f else os.cpu_count())'; }
OUT="${OUT:-outputs/quickstart}"
export WANDB_MODE="${WANDB_MODE:-offline}" PYTHONUNBUFFERED=1
ASR="${ASR:-pocketsphinx}" VERIFIER="${VERIFIER:-resemblyzer}"

soundstorm_ckpt=$(ls -d "$OUT"/train/checkpoints/step_* 2>/dev/null | tail -n 1 || true)
if [ -z "$soundstorm_ckpt" ]; then
  echo "no SoundStorm checkpoint under $OUT/train/checkpoints: run experiments/quickstart_cpu/run.sh first" >&2
  exit 2
fi
"$PY" -m soundstorm.cli.train_t2s t2s_experiment=quickstart_cpu data.root="$OUT/tokens" out_dir="$OUT/t2s" \
  logger.dir="$OUT" trainer.progress=false "$@"
t2s_ckpt=$(ls -d "$OUT"/t2s/checkpoints/step_* | tail -n 1)

"$PY" experiments/dialogue_cpu/pick_script.py "$OUT/tokens" "$OUT/dialogue" "${NUM_TURNS:-6}" "$VERIFIER"
voice() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$OUT/dialogue/voices.json" "$1"; }
"$PY" -m soundstorm.cli.dialogue t2s_checkpoint="$t2s_ckpt" soundstorm_checkpoint="$soundstorm_ckpt" \
  assets="$OUT/tokens" script="@$OUT/dialogue/script.txt" voices.A="$(voice A)" voices.B="$(voice B)" \
  backend=cpu sampler=greedy out_dir="$OUT/dialogue" evaluation.asr="$ASR" evaluation.verifier="$VERIFIER" \
  evaluation.reference=true overwrite=true

"$PY" - "$OUT/dialogue/dialogue.json" <<'PYEOF'
import json, sys
result = json.load(open(sys.argv[1]))
ev, ref = result["evaluation"], result.get("reference", {})
lat = result["latency"]
print(f"stage latency (s): text->semantic {lat['text_to_semantic_s']:.2f}, SoundStorm {lat['soundstorm_s']:.2f}, "
      f"codec decode {lat['codec_decode_s']:.2f}, total {lat['total_s']:.2f} for {lat['audio_s']:.1f} s of audio")
checks = {"pause boundaries within 0.3 s": ev["boundary_error_max_s"] <= 0.3}
if "wer" in ev and "wer" in ref:
    print(f"WER: dialogue {ev['wer']:.3f}, SoundStorm on the true semantic tokens {ref['wer']:.3f}")
    checks["WER <= reference + 0.15"] = ev["wer"] <= ref["wer"] + 0.15
if "attribution_accuracy" in ev:
    print(f"speaker attribution: {ev['attribution_accuracy']:.2f} of the turns")
    checks["every turn attributed to its speaker"] = ev["attribution_accuracy"] == 1.0
for name, ok in checks.items():
    print(f"  {name}: {'met' if ok else 'NOT met'}")
print("dialogue:", result["files"]["wav"])
PYEOF

# one torch thread and a recognizer process per core, as in the quickstart's speech table (its run.sh says why)
"$PY" -m soundstorm.cli.eval overwrite=true checkpoint="$soundstorm_ckpt" data.root="$OUT/tokens" out_dir="$OUT/t2s_eval" \
  backend=cpu backend.options.num_threads=1 evaluation.speech.asr_workers="${ASR_WORKERS:-$(cores)}" \
  data.min_seconds=2.0 data.max_seconds=7.0 sampler=greedy evaluation.max_utterances=2 \
  evaluation.max_batches=1 evaluation.mask_ratios=[1.0] evaluation.num_examples=2 evaluation.speech.enabled=true \
  evaluation.long_seconds=0 evaluation.speech.max_utterances=20 evaluation.speech.t2s_checkpoint="$t2s_ckpt" logger.dir="$OUT/t2s_eval"

