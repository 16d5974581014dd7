#!/usr/bin/env bash
# Quickstart on a CPU, end to end (what `make demo` runs):
#   1. synthesise an espeak-ng corpus (400 utterances, fixed seed and voices)
#   2. prepare tokens: fit the offline MelRVQ codec (Q=4, 64 codes) and MFCC k-means (1024) on it
#   3. train a small model for about 10 minutes (configs/experiment/quickstart_cpu.yaml)
#   4. evaluate on the held-out utterances: metrics.json, a 30 s generated wav, spectrograms
# Everything lands in outputs/quickstart/ (OUT=... to change); re-running resumes or skips done steps.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python}"
OUT="${OUT:-outputs/quickstart}"
export WANDB_MODE="${WANDB_MODE:-offline}" PYTHONUNBUFFERED=1
CODEC=(codec=melrvq codec.num_levels=4 codec.codebook_size=64 semantic=mfcc_kmeans semantic.vocab_size=1024)

if [ ! -f "$OUT/corpus/manifest.jsonl" ]; then
  "$PY" -m soundstorm.cli.synth_corpus --out "$OUT/corpus" --num-utterances 400 --seed 0
fi
if [ ! -f "$OUT/tokens/manifest.json" ]; then
  "$PY" -m soundstorm.cli.prepare input="$OUT/corpus/manifest.jsonl" output="$OUT/tokens" "${CODEC[@]}" progress=false
fi

start=$(date +%s)
"$PY" -m soundstorm.cli.train experiment=quickstart_cpu data.root="$OUT/tokens" out_dir="$OUT/train" \
  logger.dir="$OUT" trainer.progress=false "$@"
train_seconds=$(( $(date +%s) - start ))

checkpoint=$(ls -d "$OUT"/train/checkpoints/step_* | tail -n 1)
"$PY" -m soundstorm.cli.eval checkpoint="$checkpoint" data.root="$OUT/tokens" out_dir="$OUT" \
  backend=cpu data.min_seconds=2.0 data.max_seconds=4.0 sampler=greedy evaluation.window_seconds=4.0 \
  evaluation.max_utterances=20 evaluation.long_seconds=30 evaluation.num_examples=2

"$PY" - "$OUT" "$train_seconds" "$checkpoint" <<'PYEOF'
import json, os, platform, sys
out, seconds, checkpoint = sys.argv[1], int(sys.argv[2]), sys.argv[3]
path = os.path.join(out, "metrics.json")
metrics = json.load(open(path))
metrics["train_wall_seconds"] = seconds
metrics["machine"] = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                      "platform": platform.platform()}
with open(path + ".tmp", "w") as f:
    json.dump(metrics, f, indent=2)
os.replace(path + ".tmp", path)
keys = ("heldout_level1_accuracy", "unigram_level1_accuracy", "mel_distance_generated", "mel_distance_random")
print("quickstart:", {k: round(metrics[k], 4) for k in keys}, f"training {seconds / 60:.1f} min,", checkpoint)
ok = metrics[keys[0]] >= 2 * metrics[keys[1]] and metrics[keys[2]] < metrics[keys[3]]
print("targets (level-1 accuracy >= 2x unigram, mel distance < random):", "met" if ok else "NOT met")
PYEOF
