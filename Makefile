# Set-up and entry points. `make test` and `make demo` work on a fresh machine: they create
# .venv, install the pinned stack (constraints.txt) and espeak-ng (apt, when running as root).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export WANDB_MODE ?= offline
export PYTHONUNBUFFERED := 1

.PHONY: setup test test-fast demo bench clean

setup: $(STAMP)

$(STAMP): setup.cfg constraints.txt pyproject.toml
	@if ! command -v espeak-ng >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    (apt-get update -q && apt-get install -y -q espeak-ng) || echo "warning: could not install espeak-ng"; \
	  else echo "note: espeak-ng missing; install it with: sudo apt-get install espeak-ng"; fi; \
	fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -c constraints.txt -e '.[dev,xla,eval]'
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -q

# Everything but the end-to-end and learning runs (marked `slow`); the golden-loss test still covers training.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The CPU quickstart end to end (experiments/quickstart_cpu/run.sh): espeak corpus → tokens → ~10 min
# of training → held-out evaluation. Leaves outputs/quickstart/{metrics.json, generated_30s.wav,
# spectrogram_30s.png, wandb/}. Then the dialogue (experiments/dialogue_cpu/run.sh): ~12 min of
# text-to-semantic training and a six-turn, two-voice dialogue in outputs/quickstart/dialogue/.
demo: $(STAMP)
	PYTHON=$(abspath $(PY)) bash experiments/quickstart_cpu/run.sh
	PYTHON=$(abspath $(PY)) bash experiments/dialogue_cpu/run.sh

bench: $(STAMP)
	$(VENV)/bin/soundstorm-bench duration_s=10

clean:
	rm -rf $(VENV) build dist *.egg-info outputs multirun
